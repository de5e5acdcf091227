package closure_test

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"net/url"
	"os"
	"path/filepath"
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

// readMeasured opens db with the direct reader and computes root's closure,
// returning the reader, the time and the bytes allocated.
func readMeasured(t *testing.T, db, root string, want int) (*sqlitefile.DB, time.Duration, uint64) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t0 := time.Now()
	fast, err := sqlitefile.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fast.Close() })
	rows, err := fast.Closure([]string{root})
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(t0)
	runtime.ReadMemStats(&after)
	if len(rows) != want {
		t.Fatalf("closure of %d paths, want %d", len(rows), want)
	}
	return fast, elapsed, after.TotalAlloc - before.TotalAlloc
}

// The direct reader reads only the WAL frames a closure needs: with a WAL
// of more than 64 MiB it allocates a few MiB at most (it used to read the
// whole WAL into memory: 160 MiB), and its answer is SQLite's. With the
// writer's wal-index (-shm) it reads the index instead of scanning the WAL;
// without one it scans the WAL's frames in bounded chunks; either way,
// after more commits it indexes only the new frames.
func TestFastClosureLargeWALBoundedMemory(t *testing.T) {
	db, rw, root := largeWAL(t, 64<<20)
	t.Logf("WAL: %.1f MiB", float64(walSize(t, db))/(1<<20))
	s, err := closure.Open(closure.Options{DB: db, NixStore: "-", SQLOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// A copy of the database and its WAL, without the wal-index (no
	// writer has it open): the reader must scan the WAL.
	dir := t.TempDir()
	cp := filepath.Join(dir, "db.sqlite")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(db + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cp+suffix, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	for _, c := range []struct {
		name, db string
	}{{"wal-index", db}, {"scan", cp}} {
		fast, elapsed, alloc := readMeasured(t, c.db, root, 200)
		t.Logf("%s: open + closure of 200 paths: %v, %.2f MiB allocated", c.name, elapsed, float64(alloc)/(1<<20))
		if alloc > 16<<20 {
			t.Errorf("%s: allocated %.1f MiB for a closure over a %d MiB WAL; want at most 16", c.name, float64(alloc)/(1<<20), walSize(t, db)>>20)
		}
		if n := sameClosure(t, s, fast, root); n != 200 {
			t.Fatalf("%s: closure of %d paths, want 200", c.name, n)
		}
	}

	// A wal-index that does not match its WAL is not used: a header
	// changed (the copies differ, or the checksum fails) means a scan; a
	// page number changed in the index means an error (the caller asks
	// SQLite), never a wrong answer.
	shm, err := os.ReadFile(db + "-shm")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		off  int
		ok   bool
	}{{"header copy", 20, true}, {"both headers", -1, true}, {"index entry", 136 + 4*7, false}} {
		bad := bytes.Clone(shm)
		if c.off >= 0 {
			bad[c.off] ^= 0x55
		} else {
			bad[16] ^= 0x55
			bad[48+16] ^= 0x55
		}
		dir := t.TempDir()
		f := filepath.Join(dir, "db.sqlite")
		os.WriteFile(f+"-shm", bad, 0o644)
		for _, suffix := range []string{"", "-wal"} {
			b, _ := os.ReadFile(cp + suffix)
			os.WriteFile(f+suffix, b, 0o644)
		}
		fast, err := sqlitefile.Open(f)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		rows, err := fast.Closure([]string{root})
		fast.Close()
		switch {
		case err == nil && len(rows) != 200:
			t.Errorf("corrupt %s: a wrong answer: %d paths", c.name, len(rows))
		case err != nil && c.ok:
			t.Errorf("corrupt %s: %v, want the scan's answer", c.name, err)
		}
		t.Logf("corrupt %s: %d paths, %v", c.name, len(rows), err)
	}

	// More commits on the original: the next read sees them.
	more := addChain(t, rw, "walappended", 20, root)
	fast, _, _ := readMeasured(t, db, root, 200)
	if n := sameClosure(t, s, fast, more); n != 220 {
		t.Fatalf("closure of %d paths, want 220", n)
	}

	// More commits on the copy, after a full scan: the next read indexes
	// only the new frames (a rescan would take as long as the first read).
	fastCp, first, _ := readMeasured(t, cp, root, 200)
	checked0, size0 := fastCp.WALFramesChecked(), walSize(t, cp)
	q := url.Values{"_pragma": {"wal_autocheckpoint(0)"}}
	rw2, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Path: cp, RawQuery: q.Encode()}).String())
	if err != nil {
		t.Fatal(err)
	}
	defer rw2.Close()
	rw2.SetMaxOpenConns(1)
	moreCp := addChain(t, rw2, "walappended", 20, root)
	os.Remove(cp + "-shm") // the writer's index would spare the scan; test the scan
	t0 := time.Now()
	rows, err := fastCp.Closure([]string{moreCp})
	again := time.Since(t0)
	if err != nil || len(rows) != 220 {
		t.Fatalf("after appended commits: %d paths, %v", len(rows), err)
	}
	// Counted, not timed: the read checks the frames appended since the
	// first read and no others (a rescan would check the whole WAL again).
	checked := fastCp.WALFramesChecked() - checked0
	frame := walFrameSize(t, cp)
	appended := (walSize(t, cp) - size0) / frame
	t.Logf("scan: first read %v, after 20 more commits %v; %d frames checked then, %d appended, %d in the WAL",
		first, again, checked, appended, walSize(t, cp)/frame)
	if checked <= 0 || checked > appended {
		t.Errorf("the read after %d appended frames checked %d frames: the WAL was scanned again", appended, checked)
	}
	if n := sameClosure(t, s, fastCp, more); n != 220 {
		t.Fatalf("copy: closure of %d paths, want 220", n)
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

// walFrameSize is the size of one frame of db's WAL: a 24-byte header and
// a page, whose size the WAL's header gives.
func walFrameSize(t testing.TB, db string) int64 {
	f, err := os.Open(db + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var h [12]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		t.Fatal(err)
	}
	return 24 + int64(binary.BigEndian.Uint32(h[8:]))
}
