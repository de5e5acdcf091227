package closure_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/storepath"
	"github.com/closet-sandbox/closet/internal/testutil"
)

var fixtureRoots = []string{"busybox", "lib", "app", "snoop", "tenant-alice-src", "dag-10", "dag-100", "python3"}

// nixStoreQR is the reference answer: Nix's own closure.
func nixStoreQR(t *testing.T, root string) []string {
	t.Helper()
	out, err := exec.Command("nix-store", "--query", "--requisites", root).Output()
	if err != nil {
		t.Fatalf("nix-store -qR %s: %v", root, err)
	}
	paths := strings.Fields(string(out))
	slices.Sort(paths)
	return paths
}

func open(t *testing.T, opts closure.Options) *closure.Store {
	t.Helper()
	s, err := closure.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func paths(c *closure.Closure) []string {
	var out []string
	for _, p := range c.StorePaths() {
		out = append(out, string(p))
	}
	return out
}

// Both readers of the database, the direct one and SQLite, give Nix's
// own answer.
func TestClosureEqualsNixStore(t *testing.T) {
	for _, sqlOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("sqlOnly=%v", sqlOnly), func(t *testing.T) { closureEqualsNixStore(t, sqlOnly) })
	}
}

func closureEqualsNixStore(t *testing.T, sqlOnly bool) {
	s := open(t, closure.Options{SQLOnly: sqlOnly})
	if s.Source() != "database" {
		t.Fatalf("source = %s, want the database", s.Source())
	}
	for _, name := range append(fixtureRoots, "busybox-link") {
		root := fixture.Path(t, name)
		c, err := s.Closure(context.Background(), []storepath.Path{storepath.Path(root)}, true)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, want := paths(c), nixStoreQR(t, root); !slices.Equal(got, want) {
			t.Errorf("%s: closure has %d paths, nix-store -qR %d\n got %v\nwant %v", name, len(got), len(want), got, want)
		}
	}
}

func TestClosureReferencesAndSizes(t *testing.T) {
	s := open(t, closure.Options{})
	app := fixture.Path(t, "app")
	c, err := s.Closure(context.Background(), []storepath.Path{storepath.Path(app)}, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range c.Paths {
		if in.NarSize == 0 || !strings.HasPrefix(in.NarHash, "sha256:") || in.RegistrationTime == 0 {
			t.Errorf("%s: incomplete info %+v", in.Path, in)
		}
		out, err := exec.Command("nix-store", "--query", "--references", string(in.Path)).Output()
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Fields(string(out))
		slices.Sort(want)
		var got []string
		for _, r := range in.References {
			got = append(got, string(r))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: references %v, nix-store says %v", in.Path, got, want)
		}
	}
}

func TestTenantsNotInAppClosure(t *testing.T) {
	s := open(t, closure.Options{})
	for _, name := range []string{"app", "snoop", "python3"} {
		c, err := s.Closure(context.Background(), []storepath.Path{storepath.Path(fixture.Path(t, name))}, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range c.Paths {
			if strings.Contains(string(p.Path), "tenant-") {
				t.Errorf("%s's closure holds %s", name, p.Path)
			}
		}
	}
}

func TestInvalidPath(t *testing.T) {
	s := open(t, closure.Options{})
	bogus := storepath.Path("/nix/store/00000000000000000000000000000000-bogus")
	_, err := s.Closure(context.Background(), []storepath.Path{bogus}, false)
	if !errors.Is(err, closure.ErrInvalidPath) || !strings.Contains(err.Error(), string(bogus)) {
		t.Fatalf("err = %v, want ErrInvalidPath naming the path", err)
	}
}

// The fallback gives the same answers as the database.
func TestFallbackToNixStore(t *testing.T) {
	if _, err := exec.LookPath("nix-store"); err != nil {
		t.Skip("nix-store not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("nix-store on a single-user store needs its owner")
	}
	s := open(t, closure.Options{DB: filepath.Join(t.TempDir(), "missing.sqlite"), Env: os.Environ()})
	if s.Source() != "nix-store" {
		t.Fatalf("source = %s, want nix-store", s.Source())
	}
	app := fixture.Path(t, "app")
	c, err := s.Closure(context.Background(), []storepath.Path{storepath.Path(app)}, true)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := paths(c), nixStoreQR(t, app); !slices.Equal(got, want) {
		t.Errorf("fallback closure %v, want %v", got, want)
	}
	for _, in := range c.Paths {
		if in.NarSize == 0 || in.References == nil {
			t.Errorf("%s: fallback lost info: %+v", in.Path, in)
		}
	}
	_, err = s.Closure(context.Background(), []storepath.Path{"/nix/store/00000000000000000000000000000000-bogus"}, false)
	if !errors.Is(err, closure.ErrInvalidPath) {
		t.Errorf("fallback: invalid path err = %v", err)
	}
}

func TestNeitherWorks(t *testing.T) {
	_, err := closure.Open(closure.Options{DB: filepath.Join(t.TempDir(), "missing.sqlite"), NixStore: "-"})
	if !errors.Is(err, closure.ErrStoreUnreadable) || !strings.Contains(err.Error(), "missing.sqlite") {
		t.Fatalf("err = %v, want ErrStoreUnreadable naming the database", err)
	}
}

// The database is read as an unprivileged user, with no Nix process
// holding it open (so no -shm file exists that the user could map).
func TestDatabaseAsUnprivilegedUser(t *testing.T) {
	app := fixture.Path(t, "app")
	for _, reader := range []string{"", "sqlite"} {
		cmd := testutil.Command(t, "", "closure", app)
		cmd.Env = append(cmd.Env, "CLOSET_DB_READER="+reader)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("reader %q: closet closure as an unprivileged user: %v", reader, err)
		}
		if got, want := strings.Fields(string(out)), nixStoreQR(t, app); !slices.Equal(got, want) {
			t.Errorf("reader %q: unprivileged closure %v, want %v", reader, got, want)
		}
	}
}

func BenchmarkClosure(b *testing.B) {
	for _, name := range []string{"dag-100", "dag-1000", "dag-3000", "dag-10000"} {
		root, ok := fixture.Optional(name)
		if !ok {
			continue
		}
		b.Run(name, func(b *testing.B) {
			s, err := closure.Open(closure.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			for b.Loop() {
				if _, err := s.Closure(context.Background(), []storepath.Path{storepath.Path(root)}, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// While Nix writes the database (a build holds it open, so its -wal and
// -shm files exist), an unprivileged reader still gets the right closure.
func TestDatabaseWhileNixWrites(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a nix-build on the single-user test store needs its owner")
	}
	bb := fixture.Path(t, "busybox")
	expr := fmt.Sprintf(`derivation { name = "closet-slow-%d"; system = builtins.currentSystem;
		builder = "${builtins.storePath %s}/bin/sh"; args = [ "-c" "sleep 4; echo done > $out" ]; }`, time.Now().UnixNano(), bb)
	build := exec.Command("nix-build", "--no-out-link", "--option", "substituters", "", "-E", expr)
	if err := build.Start(); err != nil {
		t.Fatal(err)
	}
	defer build.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for !exists("/nix/var/nix/db/db.sqlite-wal") {
		if time.Now().After(deadline) {
			t.Fatal("nix-build never opened the database")
		}
		time.Sleep(20 * time.Millisecond)
	}
	app := fixture.Path(t, "app")
	r := testutil.Closet(t, "", "closure", app)
	if r.Code != 0 {
		t.Fatalf("closure during a build: exit %d: %s", r.Code, r.Stderr)
	}
	if got, want := strings.Fields(r.Stdout), nixStoreQR(t, app); !slices.Equal(got, want) {
		t.Errorf("closure during a build %v, want %v", got, want)
	}
	if !exists("/nix/var/nix/db/db.sqlite-wal") {
		t.Log("the build finished before the read: the check above ran without a writer")
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
