package sqlitefile

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// graph is a synthetic store: rows by id, and the expected closures are
// computed from it in Go, independently of SQLite.
type graph map[int64]Row

func (g graph) closure(roots ...int64) []Row {
	seen := map[int64]bool{}
	var out []Row
	var walk func(int64)
	walk = func(id int64) {
		if seen[id] {
			return
		}
		seen[id] = true
		out = append(out, g[id])
		for _, r := range g[id].References {
			walk(r)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	sortRows(out)
	return out
}

func sortRows(rows []Row) {
	slices.SortFunc(rows, func(a, b Row) int { return strings.Compare(a.Path, b.Path) })
}

// buildDB writes a synthetic Nix database of n paths with the given page
// size and returns its file and graph. Some rows have NULL derivers and
// narSizes, long paths or signatures (overflow pages), self-references and
// negative or large integers.
func buildDB(t testing.TB, pageSize, n int, seed uint64) (string, graph) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "db.sqlite")
	q := url.Values{"_pragma": {fmt.Sprintf("page_size(%d)", pageSize), "journal_mode(DELETE)"}}
	db, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Path: file, RawQuery: q.Encode()}).String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(Schema); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	g := graph{}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for i := range n {
		name := fmt.Sprintf("pkg-%d", i)
		if rng.IntN(50) == 0 {
			name += "-" + strings.Repeat("long", rng.IntN(3000))
		}
		p := fmt.Sprintf("/nix/store/%032x-%s", rng.Uint64(), name)
		row := Row{Path: p, Hash: fmt.Sprintf("sha256:%064x", rng.Uint64()),
			RegistrationTime: int64(rng.Uint64() >> uint(rng.IntN(64)))}
		if rng.IntN(2) == 0 {
			row.RegistrationTime = -row.RegistrationTime
		}
		var deriver, narSize, sigs any
		if rng.IntN(3) > 0 {
			row.Deriver = p + ".drv"
			deriver = row.Deriver
		}
		if rng.IntN(4) > 0 {
			row.NarSize = rng.Uint64() >> uint(rng.IntN(63)+1)
			narSize = int64(row.NarSize)
		}
		if rng.IntN(20) == 0 {
			sigs = strings.Repeat("cache.nixos.org-1:sig ", rng.IntN(2000))
		}
		res, err := tx.Exec("INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize, sigs) VALUES (?, ?, ?, ?, ?, ?)",
			p, row.Hash, row.RegistrationTime, deriver, narSize, sigs)
		if err != nil {
			t.Fatal(err)
		}
		row.ID, _ = res.LastInsertId()
		refs := map[int64]bool{}
		if rng.IntN(3) == 0 {
			refs[row.ID] = true
		}
		for k := rng.IntN(6); k > 0 && len(ids) > 0; k-- {
			refs[ids[rng.IntN(len(ids))]] = true
		}
		row.References = []int64{}
		for r := range refs {
			row.References = append(row.References, r)
		}
		slices.Sort(row.References)
		for _, r := range row.References {
			if _, err := tx.Exec("INSERT INTO Refs (referrer, reference) VALUES (?, ?)", row.ID, r); err != nil {
				t.Fatal(err)
			}
		}
		g[row.ID] = row
		ids = append(ids, row.ID)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return file, g
}

func checkClosure(t *testing.T, d *DB, g graph, ids ...int64) {
	t.Helper()
	want := g.closure(ids...)
	var roots []string
	for _, id := range ids {
		roots = append(roots, g[id].Path)
	}
	got, err := d.Closure(roots)
	if err != nil {
		t.Fatal(err)
	}
	sortRows(got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("closure of %v: %d rows, want %d", ids, len(got), len(want))
	}
}

func TestSynthetic(t *testing.T) {
	for _, ps := range []int{512, 4096, 65536} {
		t.Run(fmt.Sprint(ps), func(t *testing.T) {
			file, g := buildDB(t, ps, 3000, uint64(ps))
			d, err := Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			for id, row := range g {
				got, ok, err := d.Lookup(row.Path)
				if err != nil || !ok || got != id {
					t.Fatalf("Lookup(%s) = %d, %v, %v; want %d", row.Path, got, ok, err, id)
				}
			}
			for _, p := range []string{"", "/nix/store/", "/nix/store/zzzz", "\xff"} {
				if _, ok, err := d.Lookup(p); ok || err != nil {
					t.Fatalf("Lookup(%q) = %v, %v", p, ok, err)
				}
			}
			if _, err := d.Closure([]string{"/nix/store/zzzz"}); !errors.Is(err, ErrNotFound) {
				t.Fatalf("closure of a missing path: %v", err)
			}
			for _, id := range []int64{1, 2, 100, 1500, 2999, 3000} {
				checkClosure(t, d, g, id)
			}
			checkClosure(t, d, g, 3000, 2999, 1234, 7)
		})
	}
}

// TestCorruptPages corrupts, one at a time, every page a closure reads, in
// ways that break the structure, and requires an error or the right answer.
func TestCorruptPages(t *testing.T) {
	const ps = 1024
	file, g := buildDB(t, ps, 1500, 42)
	roots := []int64{1500, 1499, 700}
	want := g.closure(roots...)
	var paths []string
	for _, id := range roots {
		paths = append(paths, g[id].Path)
	}
	d, err := Open(file)
	if err != nil {
		t.Fatal(err)
	}
	touched := map[uint32]bool{1: false} // page → an overflow page
	d.snap.touch = func(n uint32, overflow bool) { touched[n] = overflow }
	if _, err := d.Closure(paths); err != nil {
		t.Fatal(err)
	}
	d.Close()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(7, 7))
	type mutation struct {
		name   string
		strict bool // structural: must be caught
		apply  func(pg []byte, hdr int)
	}
	mutations := []mutation{
		{"random page", true, func(pg []byte, hdr int) {
			for i := hdr; i < len(pg); i++ {
				pg[i] = byte(rng.Uint32())
			}
		}},
		{"zero page", true, func(pg []byte, hdr int) { clear(pg[hdr:]) }},
		{"type 0", true, func(pg []byte, hdr int) { pg[hdr] = 0 }},
		{"leaf/interior swapped", true, func(pg []byte, hdr int) {
			pg[hdr] = map[byte]byte{2: 10, 10: 2, 5: 13, 13: 5}[pg[hdr]]
		}},
		{"table/index swapped", true, func(pg []byte, hdr int) {
			pg[hdr] = map[byte]byte{2: 5, 5: 2, 10: 13, 13: 10}[pg[hdr]]
		}},
		{"cell count doubled", true, func(pg []byte, hdr int) {
			pg[hdr+4] *= 2
		}},
		{"right child to itself", true, func(pg []byte, hdr int) {
			if pg[hdr] == 2 || pg[hdr] == 5 {
				copy(pg[hdr+8:hdr+12], pg[len(pg):]) // set below
			}
		}},
		{"cell pointers shuffled", true, func(pg []byte, hdr int) {
			n := int(pg[hdr+3])<<8 | int(pg[hdr+4])
			start := hdr + 8
			if pg[hdr] == 2 || pg[hdr] == 5 {
				start += 4
			}
			for i := n - 1; i > 0; i-- {
				j := rng.IntN(i + 1)
				a, b := start+2*i, start+2*j
				if b+2 <= len(pg) && a+2 <= len(pg) {
					pg[a], pg[a+1], pg[b], pg[b+1] = pg[b], pg[b+1], pg[a], pg[a+1]
				}
			}
		}},
		{"random bytes in the content", false, func(pg []byte, hdr int) {
			for k := 0; k < 8; k++ {
				pg[len(pg)/2+rng.IntN(len(pg)/2)] = byte(rng.Uint32())
			}
		}},
	}
	var pages []uint32
	for p := range touched {
		pages = append(pages, p)
	}
	slices.Sort(pages)
	caught, same, silent := 0, 0, map[string]int{}
	for _, pn := range pages {
		off := int64(pn-1) * ps
		orig := make([]byte, ps)
		if _, err := f.ReadAt(orig, off); err != nil {
			t.Fatal(err)
		}
		hdr := 0
		if pn == 1 {
			hdr = 100
		}
		for _, m := range mutations {
			if touched[pn] {
				// An overflow page: its content is payload, any
				// change of it undetectable; its chain pointer is
				// structure.
				m = mutation{"overflow chain", true, func(pg []byte, _ int) {
					v := [...]uint32{pn, 0, 1 << 30, pn - 1}[rng.IntN(4)]
					pg[0], pg[1], pg[2], pg[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
				}}
			}
			pg := slices.Clone(orig)
			m.apply(pg, hdr)
			if m.name == "right child to itself" && (pg[hdr] == 2 || pg[hdr] == 5) {
				pg[hdr+8], pg[hdr+9], pg[hdr+10], pg[hdr+11] = byte(pn>>24), byte(pn>>16), byte(pn>>8), byte(pn)
			}
			if slices.Equal(pg, orig) {
				continue
			}
			f.WriteAt(pg, off)
			got, err := func() ([]Row, error) {
				d, err := Open(file)
				if err != nil {
					return nil, err
				}
				defer d.Close()
				return d.Closure(paths)
			}()
			f.WriteAt(orig, off)
			sortRows(got)
			switch {
			case err != nil:
				caught++
			case reflect.DeepEqual(got, want):
				same++
			case m.strict:
				t.Errorf("page %d, %s: a wrong answer (%d rows, want %d) and no error", pn, m.name, len(got), len(want))
			default:
				silent[m.name]++
			}
		}
	}
	t.Logf("%d pages: %d corruptions caught, %d harmless; non-structural changes that gave another answer: %v",
		len(pages), caught, same, silent)
}

// FuzzPage: the page, cell and record decoders bound every index.
func FuzzPage(f *testing.F) {
	f.Add([]byte{13, 0, 0, 0, 1, 1, 0, 0, 1, 0}, 512)
	f.Add([]byte{10, 0, 0, 0, 2, 0, 0, 0, 0, 12, 0, 14, 4, 4, 1, 1, 1, 5, 6, 7}, 512)
	f.Fuzz(func(t *testing.T, data []byte, usable int) {
		usable = 480 + (usable&0xffff)%(65536-480)
		buf := make([]byte, max(len(data), usable))
		copy(buf, data)
		for _, hdr := range []int{0, 100} {
			p, err := parsePage(buf, usable, hdr)
			if err != nil {
				continue
			}
			for i := 0; i <= p.ncell; i++ {
				p.child(i)
				p.tableInteriorKey(i)
				p.tableLeafKey(i)
				p.intPair(i)
				_, l, err := p.cellPayload(i)
				if err != nil {
					continue
				}
				var r record
				if decodeRecord(l.head, &r) == nil {
					for c := 0; c < r.n+1; c++ {
						r.int(c)
						r.text(c)
						r.isNull(c)
					}
				}
			}
		}
		var r record
		if decodeRecord(data, &r) == nil {
			for c := 0; c < r.n+1; c++ {
				r.int(c)
				r.compareText(c, data)
			}
		}
		varint(data)
		parseWAL(bytes.NewReader(data), int64(len(data)), 512)
	})
}

// FuzzFile: a whole (small) database file of arbitrary bytes, seeded with
// a real one, yields rows or an error, never a panic or a hang.
func FuzzFile(f *testing.F) {
	file, g := buildDB(f, 512, 40, 1)
	b, err := os.ReadFile(file)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, g[40].Path)
	f.Fuzz(func(t *testing.T, data []byte, root string) {
		s := &snapshot{mm: data}
		err := guardPanics(t, func() error {
			if err := s.initHeader(); err != nil {
				return err
			}
			if err := s.initWAL(nil); err != nil {
				return err
			}
			s.lookupText(s.validPathsIndex, []byte(root))
			_, err := s.closure([]string{root})
			return err
		})
		_ = err
	})
}

// guardPanics runs f, failing the test on any panic (the production code's
// guard would turn a bounds-check panic into an error; the fuzzer must see
// it).
func guardPanics(t *testing.T, f func() error) error {
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("panic: %v", r)
		}
	}()
	return f()
}
