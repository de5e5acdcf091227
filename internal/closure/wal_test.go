package closure_test

import (
	"bytes"
	"database/sql"
	"runtime"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/closure/sqlitefile"
	"github.com/closet-sandbox/closet/internal/fixture"
)

// largeWAL fills a copy of the host database's WAL with more than minWAL
// bytes of committed frames (blobs in a table of its own, as a build's
// registrations and NARs' metadata would be), with ValidPaths and Refs
// changes before and after them, and returns the copy and a root whose
// closure needs pages from both ends of the WAL.
func largeWAL(t testing.TB, minWAL int64) (db string, rw *sql.DB, root string) {
	t.Helper()
	target := fixture.Path(t, "dag-100")
	db, rw = copyDB(t)
	first := addChain(t, rw, "walearly", 50, target)
	if _, err := rw.Exec("CREATE TABLE Filler (b BLOB)"); err != nil {
		t.Fatal(err)
	}
	blob := bytes.Repeat([]byte("closet-wal-filler-"), 1<<16) // ~1.1 MiB per commit
	for walSize(t, db) < minWAL {
		if _, err := rw.Exec("INSERT INTO Filler VALUES (?)", blob); err != nil {
			t.Fatal(err)
		}
	}
	root = addChain(t, rw, "wallate", 50, first)
	return db, rw, root
}

// The direct reader reads only the WAL frames a closure needs: with a WAL
// of more than 64 MiB it allocates a few MiB at most (it used to read the
// whole WAL into memory), and its answer is SQLite's.
func TestFastClosureLargeWALBoundedMemory(t *testing.T) {
	db, rw, root := largeWAL(t, 64<<20)
	t.Logf("WAL: %.1f MiB", float64(walSize(t, db))/(1<<20))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t0 := time.Now()
	fast, err := sqlitefile.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	rows, err := fast.Closure([]string{root})
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(t0)
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("open + closure of %d paths: %v, %.2f MiB allocated", len(rows), elapsed, float64(alloc)/(1<<20))
	if alloc > 16<<20 {
		t.Errorf("allocated %.1f MiB for a closure over a %d MiB WAL; want at most 16", float64(alloc)/(1<<20), walSize(t, db)>>20)
	}
	s, err := closure.Open(closure.Options{DB: db, NixStore: "-", SQLOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := sameClosure(t, s, fast, root); n != 50+50+100 {
		t.Fatalf("closure of %d paths, want %d", n, 200)
	}

	// A build commits more: the next read indexes only the new frames
	// (a rescan of the 64 MiB would take as long as the first read).
	more := addChain(t, rw, "walappended", 20, root)
	t0 = time.Now()
	rows, err = fast.Closure([]string{more})
	again := time.Since(t0)
	if err != nil || len(rows) != 220 {
		t.Fatalf("after appended commits: %d paths, %v", len(rows), err)
	}
	t.Logf("after 20 more commits: %v", again)
	if again > elapsed/3 {
		t.Errorf("the read after appended commits took %v, the first %v: the WAL was scanned again", again, elapsed)
	}
	if n := sameClosure(t, s, fast, more); n != 220 {
		t.Fatalf("closure of %d paths, want 220", n)
	}
}

// BenchmarkFastClosureLargeWAL: open and closure with a WAL of 64 MiB
// (what a build leaves behind), against the same without a WAL.
func BenchmarkFastClosureLargeWAL(b *testing.B) {
	db, _, root := largeWAL(b, 64<<20)
	b.ResetTimer()
	for b.Loop() {
		fast, err := sqlitefile.Open(db)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := fast.Closure([]string{root}); err != nil {
			b.Fatal(err)
		}
		fast.Close()
	}
}
