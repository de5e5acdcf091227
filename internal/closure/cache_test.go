package closure_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/storepath"
)

// A closure answered from the cache is Nix's own closure, from both
// database readers, and a Store opened later (the next job) shares it.
func TestCacheHitEqualsNixStore(t *testing.T) {
	for _, sqlOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("sqlOnly=%v", sqlOnly), func(t *testing.T) {
			cache := closure.NewCache(16)
			for round := 0; round < 2; round++ {
				s := open(t, closure.Options{SQLOnly: sqlOnly, Cache: cache})
				for _, name := range fixtureRoots {
					root := fixture.Path(t, name)
					c, err := s.Closure(context.Background(), []storepath.Path{storepath.Path(root)}, false)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if got, want := paths(c), nixStoreQR(t, root); !slices.Equal(got, want) {
						t.Errorf("round %d, %s: closure has %d paths, nix-store -qR %d", round, name, len(got), len(want))
					}
				}
			}
			hits, misses := cache.Stats()
			if n := uint64(len(fixtureRoots)); hits != n || misses != n {
				t.Errorf("hits %d, misses %d: want %d of each (the second round all from the cache)", hits, misses, n)
			}
		})
	}
}

// A collected root fails the closure as it does without a cache, and a
// root registered again (with other references) is read again, not
// answered from what the cache remembers of the old one.
func TestCacheRootCollectedAndReregistered(t *testing.T) {
	db, rw := copyDB(t)
	for _, sqlOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("sqlOnly=%v", sqlOnly), func(t *testing.T) {
			root := addChain(t, rw, fmt.Sprintf("cached%v", sqlOnly), 3, fixture.Path(t, "dag-10"))
			cache := closure.NewCache(4)
			closureOf := func() (*closure.Closure, error) {
				s := open(t, closure.Options{DB: db, SQLOnly: sqlOnly, Cache: cache})
				return s.Closure(context.Background(), []storepath.Path{storepath.Path(root)}, false)
			}
			first, err := closureOf()
			if err != nil {
				t.Fatal(err)
			}
			again, err := closureOf()
			if err != nil {
				t.Fatal(err)
			}
			if hits, _ := cache.Stats(); hits != 1 || !slices.Equal(paths(first), paths(again)) {
				t.Fatalf("second closure: hits %d (want 1), paths equal %v", hits, slices.Equal(paths(first), paths(again)))
			}
			if len(first.Paths) != 3+10 {
				t.Fatalf("closure of the chain has %d paths, want 13", len(first.Paths))
			}

			// The collector deletes the root.
			if _, err := rw.Exec("DELETE FROM Refs WHERE referrer = (SELECT id FROM ValidPaths WHERE path = ?)", root); err != nil {
				t.Fatal(err)
			}
			if _, err := rw.Exec("DELETE FROM ValidPaths WHERE path = ?", root); err != nil {
				t.Fatal(err)
			}
			if _, err := closureOf(); !errors.Is(err, closure.ErrInvalidPath) {
				t.Fatalf("closure of a collected root: %v, want ErrInvalidPath", err)
			}

			// Registered again, now referring to nothing but itself.
			res, err := rw.Exec("INSERT INTO ValidPaths (path, hash, registrationTime, narSize) VALUES (?, ?, ?, ?)",
				root, "sha256:"+fmt.Sprintf("%064x", 7), 1700000100, 10)
			if err != nil {
				t.Fatal(err)
			}
			id, _ := res.LastInsertId()
			if _, err := rw.Exec("INSERT INTO Refs (referrer, reference) VALUES (?, ?)", id, id); err != nil {
				t.Fatal(err)
			}
			c, err := closureOf()
			if err != nil {
				t.Fatal(err)
			}
			if got := paths(c); !slices.Equal(got, []string{root}) {
				t.Fatalf("closure of the root registered again: %v, want only the root (a stale answer has 13 paths)", got)
			}
		})
	}
}

// The cache keeps only its n most recently used closures.
func TestCacheBounded(t *testing.T) {
	cache := closure.NewCache(2)
	s := open(t, closure.Options{Cache: cache})
	get := func(name string) {
		t.Helper()
		if _, err := s.Closure(context.Background(), []storepath.Path{storepath.Path(fixture.Path(t, name))}, false); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"dag-10", "lib", "dag-10", "app", "lib", "dag-10"} {
		get(name)
	}
	// dag-10 (miss), lib (miss), dag-10 (hit), app (miss: lib goes),
	// lib (miss: dag-10 goes), dag-10 (miss).
	if hits, misses := cache.Stats(); hits != 1 || misses != 5 {
		t.Fatalf("hits %d, misses %d; want 1 and 5", hits, misses)
	}
}
