package viewcache_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/mountview"
	"github.com/closet-sandbox/closet/internal/sandbox"
	"github.com/closet-sandbox/closet/internal/storepath"
	"github.com/closet-sandbox/closet/internal/testutil"
	"github.com/closet-sandbox/closet/internal/viewcache"
)

// envHelper makes this test binary the two-copies helper (see
// TestCopiesAreIndependent) instead of running tests.
const envHelper = "CLOSET_VIEWCACHE_HELPER"

// TestMain: this binary is also the holder (when started as one) and the
// helper, and runs its tests as nobody when started as root.
func TestMain(m *testing.M) {
	sandbox.RunStageIfAny()
	if extra := os.Getenv(envHelper); extra != "" {
		if err := twoCopies(extra); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	stageBinary = testutil.StagesUnprivileged()
	os.Exit(m.Run())
}

var stageBinary string

// twoCopies runs in a user and mount namespace of its own, with two copies
// of one cached view as fds 3 and 4: it attaches both, grows the first by
// the store path extra (as a live view grows), and prints what each shows.
func twoCopies(extra string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "viewcache-helper-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
		return err
	}
	for i, fd := range []int{3, 4} {
		target := filepath.Join(dir, fmt.Sprint(i))
		if err := os.Mkdir(target, 0o755); err != nil {
			return err
		}
		if err := mountview.Attach(target, fd); err != nil {
			return err
		}
	}
	// Try to grow copy 0 as the init's live view does: a writable mount
	// of the view's tmpfs, a mount point, a bind. The tmpfs is shared by
	// every copy, so the mount point must be refused (read-only at the
	// superblock, beyond the reach of this namespace's root).
	a := filepath.Join(dir, "0")
	w, err := unix.OpenTree(unix.AT_FDCWD, a, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return err
	}
	unix.MountSetattr(w, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY})
	base := filepath.Base(extra)
	if err := unix.Mkdirat(w, base, 0o555); err == nil {
		if tree, err := unix.OpenTree(unix.AT_FDCWD, extra, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC); err == nil {
			unix.MoveMount(tree, "", unix.AT_FDCWD, filepath.Join(a, base), unix.MOVE_MOUNT_F_EMPTY_PATH)
		}
	} else {
		fmt.Printf("grow %v\n", err)
	}
	for i := range 2 {
		ents, err := os.ReadDir(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			return err
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		fmt.Printf("%d %s\n", i, strings.Join(names, " "))
	}
	return nil
}

// fixtureClosure is root's closure, from the store's database (nix-store
// itself does not run for nobody without the daemon).
func fixtureClosure(t *testing.T, root string) []string {
	t.Helper()
	st, err := closure.Open(closure.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := st.Closure(context.Background(), []storepath.Path{storepath.Path(root)}, false)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range c.Paths {
		out = append(out, string(p.Path))
	}
	return out
}

func bases(paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, filepath.Base(p))
	}
	slices.Sort(out)
	return out
}

// TestCopiesAreIndependent: two jobs' copies of one cached view share the
// view's tmpfs, so no copy may change it: a mount point for growing one
// (as a live view's AddPaths makes) is refused even by root of the copy's
// namespace with the mount made writable, each copy still shows exactly
// the closure, and so does the next copy from the cache.
func TestCopiesAreIndependent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	views, err := viewcache.New(viewcache.Options{Exe: stageBinary})
	if err != nil {
		t.Fatal(err)
	}
	defer views.Close()
	dag := fixture.Path(t, "dag-10")
	extra := fixture.Path(t, "lib")
	paths := fixtureClosure(t, dag)
	want := bases(paths)
	var copies []*os.File
	for range 2 {
		f, err := views.Take(ctx, "", paths)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		copies = append(copies, f)
	}
	out := helper(t, extra, copies)
	if out.Grow != "read-only file system" {
		t.Errorf("making a mount point in a copy: %q, want it refused (read-only file system)", out.Grow)
	}
	for i, got := range out.Names {
		if !slices.Equal(got, want) {
			t.Errorf("copy %d shows %v, want exactly the closure %v", i, got, want)
		}
	}
	// The cache's view is untouched: a third copy is exactly the closure.
	third, err := views.Take(ctx, "", paths)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if got := helper(t, extra, []*os.File{third, third}).Names[1]; !slices.Equal(got, want) {
		t.Errorf("a later copy shows %v, want exactly the closure %v", got, want)
	}
	if st := views.Stats(); st.Misses != 1 || st.Hits != 2 {
		t.Errorf("stats %+v: want 1 miss, 2 hits", st)
	}
}

// copiesShown is what the helper saw: each copy's names, and why growing
// copy 0 failed ("" if it did not).
type copiesShown struct {
	Names [2][]string
	Grow  string
}

// helper runs twoCopies in a user and mount namespace of its own (as the
// init is) and returns what each copy showed, as store path names.
func helper(t *testing.T, extra string, copies []*os.File) copiesShown {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = []string{envHelper + "=" + extra}
	cmd.ExtraFiles = copies
	out := testutil.OutputInUserMountNS(t, cmd)
	var res copiesShown
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "grow" {
			res.Grow = strings.Join(f[1:], " ")
			continue
		}
		if len(f) == 0 || (f[0] != "0" && f[0] != "1") {
			t.Fatalf("helper said %q", line)
		}
		i := f[0][0] - '0'
		res.Names[i] = f[1:]
		slices.Sort(res.Names[i])
	}
	return res
}

// TestStoreRootUnderTmp: a chroot store below /tmp, which the holder
// covers with its own tmpfs, is still the store its views are built from.
func TestStoreRootUnderTmp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := t.TempDir()
	if !strings.HasPrefix(root, "/tmp/") {
		t.Skipf("the temporary directory %s is not below /tmp", root)
	}
	names := []string{"0123456789abcdfghijklmnpqrsvwxyz-only-in-chroot", "zyxwvsrqpnmlkjihgfdcba9876543210-also"}
	var paths []string
	for _, n := range names {
		if err := os.MkdirAll(filepath.Join(root, "nix/store", n), 0o755); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, "/nix/store/"+n)
	}
	views, err := viewcache.New(viewcache.Options{Exe: stageBinary})
	if err != nil {
		t.Fatal(err)
	}
	defer views.Close()
	f, err := views.Take(ctx, root, paths)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := helper(t, fixture.Path(t, "lib"), []*os.File{f, f}).Names[1]
	if want := bases(paths); !slices.Equal(got, want) {
		t.Errorf("the view of the chroot store shows %v, want %v", got, want)
	}
}
