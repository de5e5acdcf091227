package gcroot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/storepath"
)

const root1 = storepath.Path("/nix/store/93hswik0brc6ppfajxk7zb4h1hkh5cb6-busybox")

// A chroot store's gcroots directory stands in for the host's; the
// caller owns it, as the store's owner does on a single-user install.
func TestAcquireReleaseAndSweep(t *testing.T) {
	store := t.TempDir()
	dir := filepath.Join(store, "nix/var/nix/gcroots")
	os.MkdirAll(dir, 0o755)
	// A root left by a closet that died (pid 2^22+1 exceeds pid_max's
	// ceiling, so no process has it), and one that is not closet's.
	stale := filepath.Join(dir, "closet-4194305-0")
	os.Symlink(string(root1), stale)
	other := filepath.Join(dir, "auto-root")
	os.Symlink(string(root1), other)

	h, err := Acquire(Options{StoreRoot: store, User: "closet-test-nobody"}, []storepath.Path{root1, root1 + "x"})
	if err != nil {
		t.Fatal(err)
	}
	if h.Dir != dir {
		t.Errorf("Dir = %s, want %s", h.Dir, dir)
	}
	if len(h.links) != 2 {
		t.Fatalf("%d links, want one per root", len(h.links))
	}
	for _, l := range h.links {
		if target, err := os.Readlink(filepath.Join(dir, l)); err != nil || (target != string(root1) && target != string(root1)+"x") {
			t.Errorf("%s -> %q, %v", l, target, err)
		}
	}
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Error("a dead closet's root was not swept")
	}
	if _, err := os.Lstat(other); err != nil {
		t.Error("a root that is not closet's was removed")
	}
	h.Release()
	h.Release() // idempotent
	for _, l := range h.links {
		if _, err := os.Lstat(filepath.Join(dir, l)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived Release", l)
		}
	}
	if left := closetLinks(t, dir); len(left) != 0 {
		t.Errorf("left after Release: %v", left)
	}
}

// closetLinks lists closet's links in dir.
func closetLinks(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// A store without a GC root directory the caller may write refuses, and
// the error names the directory to create and the flag to do without.
func TestNoPlaceSaysWhatToDo(t *testing.T) {
	_, err := Acquire(Options{StoreRoot: filepath.Join(t.TempDir(), "none"), User: "someone"}, []storepath.Path{root1})
	if !errors.Is(err, ErrNoPlace) || !strings.Contains(err.Error(), "per-user") || !strings.Contains(err.Error(), "--no-gc-root") {
		t.Fatalf("err = %v, want ErrNoPlace naming the directory and --no-gc-root", err)
	}
}
