package sqlitefile

import (
	"database/sql"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// overflowDB writes a database of 512-byte pages holding one path whose
// deriver is n bytes: an overflow chain of about n/508 pages.
func overflowDB(t *testing.T, n int) (string, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "db.sqlite")
	q := url.Values{"_pragma": {"page_size(512)", "journal_mode(DELETE)"}}
	db, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Path: file, RawQuery: q.Encode()}).String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(Schema); err != nil {
		t.Fatal(err)
	}
	p := "/nix/store/00000000000000000000000000000000-long"
	if _, err := db.Exec("INSERT INTO ValidPaths (path, hash, registrationTime, deriver) VALUES (?, 'h', 1, ?)",
		p, strings.Repeat("d", n)); err != nil {
		t.Fatal(err)
	}
	return file, p
}

// Following an overflow chain is linear in its length (it was quadratic:
// every page was looked for in a list of the pages before it; a 256 MiB
// database took 45 s). A chain four times as long takes less than eight
// times as long (quadratic: sixteen), and every chain page is read once.
func TestLongOverflowChainLinear(t *testing.T) {
	const n = 4 << 20 // 8,250 pages; 33,000 at four times
	files := map[int]string{}
	var p string
	for _, size := range []int{n, 4 * n} {
		files[size], p = overflowDB(t, size)
	}
	// Linear, counted rather than timed (a timing ratio of 4 and 16 MiB
	// also measures the caches: 9-11x on a loaded machine): every
	// overflow page is read once, and the bytes allocated to assemble the
	// value grow with its size. A walk that copied the value assembled so
	// far at every page would allocate on the order of size^2/page: some
	// 500 times the value at 16 MiB.
	for _, size := range []int{n, 4 * n} {
		d, err := Open(files[size])
		if err != nil {
			t.Fatal(err)
		}
		pages := 0
		d.snap.touch = func(_ uint32, overflow bool) {
			if overflow {
				pages++
			}
		}
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		t0 := time.Now()
		rows, err := d.Closure([]string{p})
		el := time.Since(t0)
		runtime.ReadMemStats(&m1)
		d.Close()
		if err != nil || len(rows) != 1 || len(rows[0].Deriver) != size {
			t.Fatalf("closure: %d rows, %v", len(rows), err)
		}
		if want := (size-(512-35))/(512-4) + 1; pages < want || pages > want+1 {
			t.Errorf("%d bytes: %d overflow pages read, want about %d (each once)", size, pages, want)
		}
		alloc := m1.TotalAlloc - m0.TotalAlloc
		t.Logf("%d MiB deriver, %d overflow pages, %.1f MiB allocated, %v", size>>20, pages, float64(alloc)/(1<<20), el)
		if alloc > uint64(4*size+(1<<20)) {
			t.Errorf("%d MiB deriver: %.1f MiB allocated to read it: not linear", size>>20, float64(alloc)/(1<<20))
		}
	}
}
