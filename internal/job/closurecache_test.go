package job_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/closure/sqlitefile"
	"github.com/closet-sandbox/closet/internal/job"
	"github.com/closet-sandbox/closet/internal/storepath"
)

// A job prepared from the closure cache has the store's own closure in its
// view, and once a root is garbage-collected the next job with the same
// roots is refused (bad input, the path named), not prepared from what the
// cache remembers. The store is a chroot store with two paths, made here,
// whose database has Nix's schema.
func TestClosureCacheCollectedRoot(t *testing.T) {
	root := t.TempDir()
	dbDir := filepath.Join(root, "nix/var/nix/db")
	if err := os.MkdirAll(dbDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dbDir, "schema"), []byte("10"), 0o644); err != nil {
		t.Fatal(err)
	}
	dbFile := filepath.Join(dbDir, "db.sqlite")
	rw, err := sql.Open("sqlite", dbFile)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	if _, err := rw.Exec(sqlitefile.Schema); err != nil {
		t.Fatal(err)
	}
	// Two paths: app refers to itself and to lib.
	lib := storepath.Dir + "/" + strings.Repeat("1", 32) + "-cache-lib"
	app := storepath.Dir + "/" + strings.Repeat("2", 32) + "-cache-app"
	ids := map[string]int64{}
	for _, p := range []string{lib, app} {
		if err := os.MkdirAll(filepath.Join(root, p, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		res, err := rw.Exec("INSERT INTO ValidPaths (path, hash, registrationTime, narSize) VALUES (?, ?, ?, ?)",
			p, "sha256:"+strings.Repeat("0", 64), 1700000000, 100)
		if err != nil {
			t.Fatal(err)
		}
		ids[p], _ = res.LastInsertId()
	}
	for _, ref := range []string{app, lib} {
		if _, err := rw.Exec("INSERT INTO Refs (referrer, reference) VALUES (?, ?)", ids[app], ids[ref]); err != nil {
			t.Fatal(err)
		}
	}

	cache := closure.NewCache(8)
	prepare := func() (*job.Job, error) {
		req := baseRequest([]string{app}, app+"/bin/true")
		req.Store, req.Closures = root, cache
		return job.Prepare(context.Background(), req)
	}
	want := []string{lib, app}
	slices.Sort(want)
	for i := 0; i < 2; i++ {
		j, err := prepare()
		if err != nil {
			t.Fatal(err)
		}
		got := slices.Clone(j.Spec().Store)
		slices.Sort(got)
		j.Close()
		if !slices.Equal(got, want) {
			t.Fatalf("job %d: view %v, want %v", i, got, want)
		}
	}
	if hits, misses := cache.Stats(); hits != 1 || misses != 1 {
		t.Fatalf("cache hits %d, misses %d: want 1 of each", hits, misses)
	}

	// The collector deletes app: its registration, then its files.
	for _, q := range []string{"DELETE FROM Refs WHERE referrer = ?", "DELETE FROM ValidPaths WHERE id = ?"} {
		if _, err := rw.Exec(q, ids[app]); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(filepath.Join(root, app)); err != nil {
		t.Fatal(err)
	}
	j, err := prepare()
	if err == nil {
		j.Close()
		t.Fatal("a job whose root was garbage-collected was prepared from the cache")
	}
	if !errors.Is(err, job.ErrBadRequest) || !strings.Contains(err.Error(), app) {
		t.Fatalf("error %v: want bad input naming %s", err, app)
	}
}
