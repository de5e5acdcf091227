package closure

import (
	"context"
	"testing"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/storepath"
)

// inMemoryClosure is the strategy the recursive query was measured against:
// read the whole Refs table and the path names into memory, then walk the
// graph in Go. Its cost grows with the store, the query's with the closure;
// BenchmarkStrategies keeps the comparison reproducible.
func (b *dbBackend) inMemoryClosure(ctx context.Context, roots []storepath.Path) (int, error) {
	ids := map[string]int64{}
	rows, err := b.db.QueryContext(ctx, "SELECT id, path FROM ValidPaths")
	if err != nil {
		return 0, err
	}
	for rows.Next() {
		var id int64
		var p string
		rows.Scan(&id, &p)
		ids[p] = id
	}
	rows.Close()
	refs := map[int64][]int64{}
	rows, err = b.db.QueryContext(ctx, "SELECT referrer, reference FROM Refs")
	if err != nil {
		return 0, err
	}
	for rows.Next() {
		var a, c int64
		rows.Scan(&a, &c)
		refs[a] = append(refs[a], c)
	}
	rows.Close()
	seen := map[int64]bool{}
	var stack []int64
	for _, r := range roots {
		stack = append(stack, ids[string(r)])
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		stack = append(stack, refs[id]...)
	}
	return len(seen), nil
}

func TestStrategiesAgree(t *testing.T) {
	b, err := openDB("/nix/var/nix/db/db.sqlite", Options{}.sql())
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	root := storepath.Path(fixture.Path(t, "dag-100"))
	infos, err := b.closure(context.Background(), []storepath.Path{root}, false)
	if err != nil {
		t.Fatal(err)
	}
	n, err := b.inMemoryClosure(context.Background(), []storepath.Path{root})
	if err != nil || n != len(infos) {
		t.Fatalf("in-memory walk found %d paths (%v), the query %d", n, err, len(infos))
	}
	n, err = b.refsScanClosure(context.Background(), []storepath.Path{root})
	if err != nil || n != len(infos) {
		t.Fatalf("refs scan found %d paths (%v), the query %d", n, err, len(infos))
	}
}

func BenchmarkStrategies(b *testing.B) {
	db, err := openDB("/nix/var/nix/db/db.sqlite", Options{}.sql())
	if err != nil {
		b.Fatal(err)
	}
	defer db.close()
	for _, name := range []string{"dag-100", "dag-3000", "dag-10000"} {
		p, ok := fixture.Optional(name)
		if !ok {
			continue
		}
		roots := []storepath.Path{storepath.Path(p)}
		b.Run(name+"/recursive-query", func(b *testing.B) {
			for b.Loop() {
				db.closure(context.Background(), roots, false)
			}
		})
		b.Run(name+"/recursive-query+refs", func(b *testing.B) {
			for b.Loop() {
				db.closure(context.Background(), roots, true)
			}
		})
		b.Run(name+"/whole-table-in-memory", func(b *testing.B) {
			for b.Loop() {
				db.inMemoryClosure(context.Background(), roots)
			}
		})
		b.Run(name+"/refs-scan", func(b *testing.B) {
			for b.Loop() {
				db.refsScanClosure(context.Background(), roots)
			}
		})
	}
}

// refsScanClosure: scan only the Refs table (two integers a row, in
// referrer order), walk it in Go, then fetch the closure's rows by id.
func (b *dbBackend) refsScanClosure(ctx context.Context, roots []storepath.Path) (int, error) {
	rows, err := b.db.QueryContext(ctx, "SELECT referrer, reference FROM Refs")
	if err != nil {
		return 0, err
	}
	var from, to []int64
	var maxID int64
	for rows.Next() {
		var a, c int64
		rows.Scan(&a, &c)
		from = append(from, a)
		to = append(to, c)
		maxID = max(maxID, a, c)
	}
	rows.Close()
	start := make([]int32, maxID+2)
	for _, a := range from {
		start[a+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	adj := make([]int64, len(to))
	fill := append([]int32(nil), start...)
	for i, a := range from {
		adj[fill[a]] = to[i]
		fill[a]++
	}
	var stack []int64
	for _, r := range roots {
		var id int64
		b.db.QueryRowContext(ctx, "SELECT id FROM ValidPaths WHERE path = ?", string(r)).Scan(&id)
		stack = append(stack, id)
	}
	seen := make([]bool, maxID+1)
	var ids []any
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if id > maxID || seen[id] {
			if id > maxID {
				ids = append(ids, id)
			}
			continue
		}
		seen[id] = true
		ids = append(ids, id)
		stack = append(stack, adj[start[id]:start[id+1]]...)
	}
	rows, err = b.db.QueryContext(ctx, "SELECT id, path, hash, narSize FROM ValidPaths WHERE id IN ("+placeholders(len(ids))+")", ids...)
	if err != nil {
		return 0, err
	}
	n := 0
	for rows.Next() {
		n++
	}
	rows.Close()
	return n, nil
}
