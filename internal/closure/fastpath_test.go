package closure_test

// Differential tests and benchmarks for the experimental fast path
// (internal/closure/sqlitefile), which reads the SQLite file directly: its
// closures must equal the SQL path's, column by column, on the real
// database and on copies with an active WAL.

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/closure/sqlitefile"
	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/storepath"
)

const hostDB = "/nix/var/nix/db/db.sqlite"

// fastInfos converts the fast path's rows to the SQL path's Infos.
func fastInfos(t testing.TB, rows []sqlitefile.Row) []closure.Info {
	t.Helper()
	byID := make(map[int64]string, len(rows))
	for _, r := range rows {
		byID[r.ID] = r.Path
	}
	out := make([]closure.Info, len(rows))
	for i, r := range rows {
		in := closure.Info{Path: storepath.Path(r.Path), NarHash: r.Hash, NarSize: r.NarSize,
			RegistrationTime: r.RegistrationTime, Deriver: r.Deriver, References: []storepath.Path{}}
		for _, ref := range r.References {
			p, ok := byID[ref]
			if !ok {
				t.Fatalf("%s: reference %d outside the closure", r.Path, ref)
			}
			in.References = append(in.References, storepath.Path(p))
		}
		slices.Sort(in.References)
		out[i] = in
	}
	slices.SortFunc(out, func(a, b closure.Info) int { return strings.Compare(string(a.Path), string(b.Path)) })
	return out
}

// sameClosure compares the fast path's closure of roots with the SQL
// path's.
func sameClosure(t *testing.T, s *closure.Store, fast *sqlitefile.DB, roots ...string) int {
	t.Helper()
	var sp []storepath.Path
	for _, r := range roots {
		sp = append(sp, storepath.Path(r))
	}
	want, err := s.Closure(context.Background(), sp, true)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := fast.Closure(roots)
	if err != nil {
		t.Fatalf("fast path: %v", err)
	}
	got := fastInfos(t, rows)
	if len(got) != len(want.Paths) {
		t.Fatalf("fast path: %d paths, SQL path %d", len(got), len(want.Paths))
	}
	for i := range got {
		if fmt.Sprintf("%+v", got[i]) != fmt.Sprintf("%+v", want.Paths[i]) {
			t.Fatalf("path %d differs:\nfast %+v\nSQL  %+v", i, got[i], want.Paths[i])
		}
	}
	for _, r := range roots {
		id, ok, err := fast.Lookup(r)
		if err != nil || !ok || id <= 0 {
			t.Fatalf("Lookup(%s) = %d, %v, %v", r, id, ok, err)
		}
	}
	return len(got)
}

func TestFastClosureEqualsSQL(t *testing.T) {
	s, err := closure.Open(closure.Options{SQLOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fast, err := sqlitefile.Open(hostDB)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	var all []string
	for _, name := range []string{"busybox", "lib", "app", "snoop", "python3", "dag-10", "dag-100", "dag-1000", "dag-3000", "dag-10000"} {
		var root string
		if slices.Contains(fixture.LargeNames, name) {
			p, ok := fixture.Optional(name)
			if !ok {
				t.Logf("%s not built: skipped", name)
				continue
			}
			root = p
		} else {
			root = fixture.Path(t, name)
		}
		n := sameClosure(t, s, fast, root)
		t.Logf("%s: %d paths agree", name, n)
		all = append(all, root)
	}
	sameClosure(t, s, fast, all...)
	if _, ok, err := fast.Lookup(storepath.Dir + "/00000000000000000000000000000000-closet-probe"); ok || err != nil {
		t.Fatalf("Lookup of a made-up path: %v, %v", ok, err)
	}
	if _, err := fast.Closure([]string{storepath.Dir + "/00000000000000000000000000000000-closet-probe"}); err == nil {
		t.Fatal("closure of a made-up path: no error")
	}
}

// copyDB writes a consistent copy of the host database to dir (VACUUM INTO
// on a read-only connection: the host database is never opened for
// writing) and opens the copy read-write in WAL mode without automatic
// checkpoints. The connection stays open, so the WAL stays.
func copyDB(t testing.TB) (string, *sql.DB) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "db.sqlite")
	// Other Nix processes may be writing the host database: wait for them.
	ro, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Path: hostDB, RawQuery: "mode=ro&_pragma=busy_timeout(30000)"}).String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Exec("VACUUM INTO ?", dst); err != nil {
		ro.Close()
		t.Fatal(err)
	}
	ro.Close()
	q := url.Values{"_pragma": {"journal_mode(WAL)", "wal_autocheckpoint(0)", "foreign_keys(1)"}}
	rw, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Path: dst, RawQuery: q.Encode()}).String())
	if err != nil {
		t.Fatal(err)
	}
	rw.SetMaxOpenConns(1)
	t.Cleanup(func() { rw.Close() })
	var mode string
	if err := rw.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
	return dst, rw
}

func walSize(t testing.TB, db string) int64 {
	st, err := os.Stat(db + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// addChain registers n new paths name-0 … name-(n-1), each referring to
// the next and to itself, the last to target; returns the first.
func addChain(t testing.TB, rw *sql.DB, name string, n int, target string) string {
	t.Helper()
	tx, err := rw.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var tid int64
	if err := tx.QueryRow("SELECT id FROM ValidPaths WHERE path = ?", target).Scan(&tid); err != nil {
		t.Fatal(err)
	}
	prev := tid
	var first string
	for i := n - 1; i >= 0; i-- {
		p := fmt.Sprintf("%s/%032d-%s-%d", storepath.Dir, i, name, i)
		var deriver any
		if i%2 == 0 {
			deriver = p + ".drv"
		}
		res, err := tx.Exec("INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize) VALUES (?, ?, ?, ?, ?)",
			p, fmt.Sprintf("sha256:%064x", i), 1700000000+i, deriver, 1000+i)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := res.LastInsertId()
		for _, ref := range []int64{id, prev} {
			if _, err := tx.Exec("INSERT INTO Refs (referrer, reference) VALUES (?, ?)", id, ref); err != nil {
				t.Fatal(err)
			}
		}
		prev, first = id, p
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return first
}

func TestFastClosureReadsWAL(t *testing.T) {
	target := fixture.Path(t, "dag-100")
	db, rw := copyDB(t)
	s, err := closure.Open(closure.Options{DB: db, NixStore: "-", SQLOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	head := addChain(t, rw, "walone", 3, target)
	// A change to a page that is in the main file too.
	if _, err := rw.Exec("UPDATE ValidPaths SET narSize = narSize + 7 WHERE path = ?", target); err != nil {
		t.Fatal(err)
	}
	if walSize(t, db) == 0 {
		t.Fatal("the WAL is empty")
	}
	fast, err := sqlitefile.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	if n := sameClosure(t, s, fast, head); n != 3+100 {
		t.Fatalf("closure of %d paths, want %d", n, 3+100)
	}

	// More commits, enough to split b-tree pages, while the fast path's
	// DB is open: the next Closure must see them.
	head2 := addChain(t, rw, "waltwo", 2000, head)
	if n := sameClosure(t, s, fast, head2); n != 2000+3+100 {
		t.Fatalf("closure of %d paths, want %d", n, 2000+3+100)
	}
	sameClosure(t, s, fast, head2, fixture.Path(t, "python3"))

	// A transaction larger than the page cache spills uncommitted frames
	// into the WAL: the fast path must not see them.
	before := walSize(t, db)
	if _, err := rw.Exec("PRAGMA cache_size = 10"); err != nil {
		t.Fatal(err)
	}
	tx, err := rw.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		if _, err := tx.Exec("INSERT INTO ValidPaths (path, hash, registrationTime) VALUES (?, 'h', 1)",
			fmt.Sprintf("%s/%032d-uncommitted", storepath.Dir, i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Exec("DELETE FROM Refs WHERE referrer = (SELECT id FROM ValidPaths WHERE path = ?)", head2); err != nil {
		t.Fatal(err)
	}
	if walSize(t, db) == before {
		t.Log("no uncommitted frames were spilled; that case is not exercised")
	}
	rows, err := fast.Closure([]string{head2})
	if err != nil || len(rows) != 2000+3+100 {
		t.Fatalf("with uncommitted frames in the WAL: %d paths, %v", len(rows), err)
	}
	if _, ok, err := fast.Lookup(fmt.Sprintf("%s/%032d-uncommitted", storepath.Dir, 1)); ok || err != nil {
		t.Fatalf("an uncommitted path is visible: %v, %v", ok, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	rows, err = fast.Closure([]string{head2})
	if err != nil || len(rows) != 1 {
		t.Fatalf("after the commit: %d paths, %v; want only the root", len(rows), err)
	}
	sameClosure(t, s, fast, head)
}

// TestFastClosureDuringWrites: while another connection commits and
// checkpoints the copy (rows added around the closure's pages split and
// move them), every closure read is the right one or an error, never a
// torn one.
func TestFastClosureDuringWrites(t *testing.T) {
	// The larger closure spans more pages; the default fixture set has
	// dag-100 only.
	target, large := fixture.Optional("dag-1000")
	if !large {
		target = fixture.Path(t, "dag-100")
	}
	db, rw := copyDB(t)
	head := addChain(t, rw, "base", 50, target)
	fast, err := sqlitefile.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	want, err := fast.Closure([]string{head})
	if err != nil {
		t.Fatal(err)
	}
	wantInfos := fmt.Sprintf("%+v", fastInfos(t, want))
	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			tx, err := rw.Begin()
			if err != nil {
				done <- err
				return
			}
			for j := range 50 {
				if _, err := tx.Exec("INSERT INTO ValidPaths (path, hash, registrationTime) VALUES (?, 'h', 1)",
					fmt.Sprintf("%s/%032d-w%d-%d", storepath.Dir, j, i, j)); err != nil {
					tx.Rollback()
					done <- err
					return
				}
			}
			if err := tx.Commit(); err != nil {
				done <- err
				return
			}
			time.Sleep(time.Duration(i%3) * time.Millisecond)
			if i%5 == 4 {
				if _, err := rw.Exec([]string{"PRAGMA wal_checkpoint(PASSIVE)", "PRAGMA wal_checkpoint(RESTART)", "PRAGMA wal_checkpoint(TRUNCATE)"}[i/5%3]); err != nil {
					done <- err
					return
				}
			}
		}
	}()
	ok, failed := 0, map[string]int{}
	for range 300 {
		rows, err := fast.Closure([]string{head})
		if err != nil {
			failed[err.Error()]++
			continue
		}
		if got := fmt.Sprintf("%+v", fastInfos(t, rows)); got != wantInfos {
			close(stop)
			<-done
			t.Fatalf("a torn read: %d paths, want %d", len(rows), len(want))
		}
		ok++
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d reads right; errors: %v", ok, failed)
	if ok == 0 {
		t.Fatal("no read succeeded")
	}
}

func TestFastClosureCorruptPage(t *testing.T) {
	target := fixture.Path(t, "dag-100")
	db, rw := copyDB(t)
	var roots [3]int64
	for i, name := range []string{"ValidPaths", "sqlite_autoindex_ValidPaths_1", "sqlite_autoindex_Refs_1"} {
		if err := rw.QueryRow("SELECT rootpage FROM sqlite_schema WHERE name = ?", name).Scan(&roots[i]); err != nil {
			t.Fatal(err)
		}
	}
	var pageSize int64
	rw.QueryRow("PRAGMA page_size").Scan(&pageSize)
	rw.Close() // checkpoints: everything is in the main file
	f, err := os.OpenFile(db, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, root := range roots {
		for _, bad := range []struct {
			name string
			off  int64
			b    []byte
		}{{"page type", 0, []byte{7}}, {"cell count", 3, []byte{0xff, 0xff}}, {"cell pointers", 12, []byte{0xff, 0xf0, 0xff, 0xf0, 0, 1}}} {
			off := (root - 1) * pageSize
			orig := make([]byte, len(bad.b))
			f.ReadAt(orig, off+bad.off)
			f.WriteAt(bad.b, off+bad.off)
			fast, err := sqlitefile.Open(db)
			if err == nil {
				var rows []sqlitefile.Row
				rows, err = fast.Closure([]string{target})
				fast.Close()
				if err == nil {
					t.Errorf("page %d, %s corrupted: %d paths and no error", root, bad.name, len(rows))
				}
			}
			t.Logf("page %d, %s corrupted: %v", root, bad.name, err)
			f.WriteAt(orig, off+bad.off)
		}
	}
	fast, err := sqlitefile.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	if rows, err := fast.Closure([]string{target}); err != nil || len(rows) != 100 {
		t.Fatalf("restored: %d paths, %v", len(rows), err)
	}
}

// TestFastClosureOverflowAndPageSizes: long paths and derivers spill into
// overflow pages (in the index and the table, in the WAL and then in the
// main file), and other page sizes change every b-tree's shape.
func TestFastClosureOverflowAndPageSizes(t *testing.T) {
	target := fixture.Path(t, "dag-100")
	db, rw := copyDB(t)
	s, err := closure.Open(closure.Options{DB: db, NixStore: "-", SQLOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	fast, err := sqlitefile.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	long := addChain(t, rw, strings.Repeat("x", 9000), 30, target)
	if _, err := rw.Exec("UPDATE ValidPaths SET deriver = ? || deriver WHERE path = ?", strings.Repeat("d", 70000), long); err != nil {
		t.Fatal(err)
	}
	mixed := addChain(t, rw, strings.Repeat("y", 700), 300, long)
	if n := sameClosure(t, s, fast, mixed); n != 300+30+100 {
		t.Fatalf("closure of %d paths", n)
	}
	for _, size := range []int{512, 1024, 65536} {
		s.Close() // its read connection would keep the journal mode
		for _, q := range []string{"PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA journal_mode = DELETE",
			fmt.Sprintf("PRAGMA page_size = %d", size), "VACUUM", "PRAGMA journal_mode = WAL"} {
			if _, err := rw.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		var got int
		rw.QueryRow("PRAGMA page_size").Scan(&got)
		if got != size {
			t.Fatalf("page size %d, want %d", got, size)
		}
		if s, err = closure.Open(closure.Options{DB: db, NixStore: "-", SQLOnly: true}); err != nil {
			t.Fatal(err)
		}
		if n := sameClosure(t, s, fast, mixed); n != 300+30+100 {
			t.Fatalf("page size %d: closure of %d paths", size, n)
		}
		if p, ok := fixture.Optional("dag-1000"); ok {
			sameClosure(t, s, fast, p, mixed)
		}
		// And with the WAL holding part of the tree.
		more := addChain(t, rw, fmt.Sprintf("more%d", size), 200, mixed)
		if n := sameClosure(t, s, fast, more); n != 200+300+30+100 {
			t.Fatalf("page size %d, WAL: closure of %d paths", size, n)
		}
	}
}

func BenchmarkFastClosure(b *testing.B) {
	s, err := closure.Open(closure.Options{SQLOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{"dag-100", "dag-3000", "dag-10000"} {
		p, ok := fixture.Optional(name)
		if !ok {
			continue
		}
		b.Run(name+"/fast", func(b *testing.B) {
			fast, err := sqlitefile.Open(hostDB)
			if err != nil {
				b.Fatal(err)
			}
			defer fast.Close()
			for b.Loop() {
				if _, err := fast.Closure([]string{p}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/fast+open", func(b *testing.B) {
			for b.Loop() {
				fast, err := sqlitefile.Open(hostDB)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := fast.Closure([]string{p}); err != nil {
					b.Fatal(err)
				}
				fast.Close()
			}
		})
		b.Run(name+"/sql+refs", func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Closure(context.Background(), []storepath.Path{storepath.Path(p)}, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
