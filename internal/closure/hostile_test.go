package closure_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/storepath"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// hostileDB writes a database whose ValidPaths is a view over an infinite
// recursive query (Refs is a real table): any query of ValidPaths never
// returns.
func hostileDB(t *testing.T, dir string) string {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	file := filepath.Join(dir, "db.sqlite")
	db, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Path: file}).String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`CREATE TABLE Refs (referrer integer not null, reference integer not null, primary key (referrer, reference))`,
		`CREATE VIEW ValidPaths (id, path, hash, registrationTime, deriver, narSize) AS
			WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
			SELECT i, '/nix/store/' || i, 'h', 0, NULL, 0 FROM n`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return file
}

// A --store database built to hang SQLite is refused at once, with a
// message that says why.
func TestHostileViewDatabaseRefused(t *testing.T) {
	root := t.TempDir()
	hostileDB(t, filepath.Join(root, "nix/var/nix/db"))
	done := make(chan error, 1)
	go func() {
		_, err := closure.Open(closure.Options{Root: root, Timeout: 30 * time.Second})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, closure.ErrStoreUnreadable) || !strings.Contains(err.Error(), "ValidPaths is a view") {
			t.Fatalf("err = %v, want ErrStoreUnreadable saying ValidPaths is a view", err)
		}
		t.Log(err)
	case <-time.After(10 * time.Second):
		t.Fatal("Open of a database whose ValidPaths is an infinite view did not return within 10 s")
	}
}

// Reading a chroot store never writes to it: with a database SQLite cannot
// read (missing, or not a database), closet refuses instead of letting
// nix-store create a database, big-lock and reserved file there.
func TestChrootStoreUnreadableWritesNothing(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(root string)
	}{
		{"missing", func(root string) { os.MkdirAll(filepath.Join(root, "nix/store"), 0o755) }},
		{"garbage", func(root string) {
			os.MkdirAll(filepath.Join(root, "nix/var/nix/db"), 0o755)
			os.WriteFile(filepath.Join(root, "nix/var/nix/db/db.sqlite"), []byte("not a database, 512 bytes or more "+strings.Repeat("x", 600)), 0o644)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			c.make(root)
			before := testutil.Tree(t, root)
			_, err := closure.Open(closure.Options{Root: root, Env: os.Environ()})
			if !errors.Is(err, closure.ErrStoreUnreadable) || !strings.Contains(err.Error(), "fallback refused for the chroot store") {
				t.Errorf("err = %v, want ErrStoreUnreadable refusing the nix-store fallback", err)
			}
			if after := testutil.Tree(t, root); !slices.Equal(before, after) {
				t.Errorf("the chroot store changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// One Store answers many goroutines at once, each its own closure, through
// each reader (run with -race).
func TestConcurrentClosures(t *testing.T) {
	names := []string{"busybox", "lib", "app", "snoop", "dag-10", "dag-100", "python3"}
	for _, n := range []string{"dag-1000", "dag-3000"} {
		if _, ok := fixture.Optional(n); ok {
			names = append(names, n)
		}
	}
	want := map[string][]string{}
	for _, n := range names {
		p, ok := fixture.Optional(n)
		if !ok {
			p = fixture.Path(t, n)
		}
		want[p] = nixStoreQR(t, p)
	}
	for _, sqlOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("sqlOnly=%v", sqlOnly), func(t *testing.T) {
			s := open(t, closure.Options{SQLOnly: sqlOnly})
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for i := range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for root, w := range want {
						if (len(root)+i)%3 == 0 {
							continue // goroutines differ in what they ask
						}
						c, err := s.Closure(context.Background(), []storepath.Path{storepath.Path(root)}, i%2 == 0)
						if err != nil {
							errs <- err
							return
						}
						if got := paths(c); !slices.Equal(got, w) {
							errs <- fmt.Errorf("%s: %d paths, want %d", root, len(got), len(w))
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// nix-store is looked up in the PATH the caller passes, never the
// process's: with a PATH that has no nix-store, the fallback is refused and
// says where it looked; without Env there is no fallback at all.
func TestFallbackUsesCallersPath(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.sqlite")
	_, err := closure.Open(closure.Options{DB: missing, Env: []string{"PATH=/nonexistent-closet-bin"}})
	if !errors.Is(err, closure.ErrStoreUnreadable) || !strings.Contains(err.Error(), "nix-store is not on PATH (/nonexistent-closet-bin)") {
		t.Errorf("err = %v, want the caller's PATH searched", err)
	}
	_, err = closure.Open(closure.Options{DB: missing})
	if !errors.Is(err, closure.ErrStoreUnreadable) || !strings.Contains(err.Error(), "Options.Env is nil") {
		t.Errorf("err = %v, want no fallback without Env", err)
	}
}
