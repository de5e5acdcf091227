package mountview_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/mountview"
	"github.com/closet-sandbox/closet/internal/storepath"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// envHelper makes this test binary the helper that builds a view in a
// user and mount namespace of its own (see build) instead of running
// tests.
const envHelper = "CLOSET_MOUNTVIEW_HELPER"

// TestMain: this binary is also the helper, and runs its tests as nobody
// when started as root.
func TestMain(m *testing.M) {
	if paths := os.Getenv(envHelper); paths != "" {
		var r any
		if p, ok := strings.CutPrefix(paths, "swapped:"); ok {
			r = swapped(p)
		} else if ps, ok := strings.CutPrefix(paths, "swap-in-build:"); ok {
			// The first path is swapped while the rest are bound.
			all := strings.Split(ps, " ")
			mountview.SwapBefore(filepath.Base(all[0]))
			r = build(all[1:])
		} else {
			r = build(strings.Split(paths, " "))
		}
		if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	if code, ok := testutil.RerunUnprivileged(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// shown is what the helper saw of the view it built.
type shown struct {
	Err     string
	Entries map[string]string // base name -> "dir", "file" or "link:TARGET"
	// Write is the error of creating a file in the view, and Flags the
	// view's statfs flags.
	Write string
	Flags int64
}

// build runs in the helper: it builds a view of paths on a fresh
// directory and reports what it holds.
func build(paths []string) (r shown) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return shown{Err: err.Error()}
	}
	dir, err := os.MkdirTemp("", "mountview-")
	if err != nil {
		return shown{Err: err.Error()}
	}
	v, err := mountview.Build(dir, "", paths)
	if err != nil {
		return shown{Err: err.Error()}
	}
	v.Close()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return shown{Err: err.Error()}
	}
	r.Entries = map[string]string{}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		switch fi, err := os.Lstat(p); {
		case err != nil:
			r.Entries[e.Name()] = err.Error()
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			r.Entries[e.Name()] = "link:" + l
		case fi.IsDir():
			r.Entries[e.Name()] = "dir"
		default:
			r.Entries[e.Name()] = "file"
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o644); err != nil {
		r.Write = err.Error()
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil {
		r.Flags = st.Flags
	}
	return r
}

// inNamespaces builds a view of paths in the helper.
func inNamespaces(t *testing.T, paths []string) shown {
	t.Helper()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{envHelper + "=" + strings.Join(paths, " ")}
	out := testutil.OutputInUserMountNS(t, cmd)
	var r shown
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("helper said %q: %v", out, err)
	}
	return r
}

func closureOf(t *testing.T, roots ...string) []string {
	var out []string
	for _, p := range testutil.Closure(t, roots...).Paths {
		out = append(out, string(p.Path))
	}
	return out
}

// The view holds exactly the paths, each as what it is in the store (a
// directory, a file, a symlink copied as the same symlink), read-only,
// nosuid and nodev. dag-100's nodes are files, busybox a directory,
// busybox-link a symlink: every kind of mount point, over more than one
// batch of the thread that makes them.
func TestBuildShowsExactlyThePaths(t *testing.T) {
	link, bb := fixture.Path(t, "busybox-link"), fixture.Path(t, "busybox")
	paths := closureOf(t, fixture.Path(t, "dag-100"), link, bb)
	r := inNamespaces(t, paths)
	if r.Err != "" {
		t.Fatal(r.Err)
	}
	var got, want []string
	for base := range r.Entries {
		got = append(got, base)
	}
	for _, p := range paths {
		want = append(want, filepath.Base(p))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("view holds %d entries, want the %d paths:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	files := 0
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := "file"
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			want = "link:" + l
		case fi.IsDir():
			want = "dir"
		default:
			files++
		}
		if e := r.Entries[filepath.Base(p)]; e != want {
			t.Errorf("%s shows as %q, want %q", p, e, want)
		}
	}
	if files == 0 || r.Entries[filepath.Base(bb)] != "dir" || !strings.HasPrefix(r.Entries[filepath.Base(link)], "link:") {
		t.Errorf("the fixture should hold files, a directory and a link: %v", r.Entries)
	}
	if !strings.Contains(r.Write, "read-only") {
		t.Errorf("creating a file in the view: %q, want a read-only file system", r.Write)
	}
	if want := int64(unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV); r.Flags&want != want {
		t.Errorf("view flags %#x, want ro, nosuid and nodev", r.Flags)
	}
}

// A path that is not in the store fails the whole build, naming it, and
// so does a path named twice: Build returns (it does not wait forever on
// the thread that makes mount points), wherever in the list the bad path
// is.
func TestBuildFailsOnABadPath(t *testing.T) {
	paths := closureOf(t, fixture.Path(t, "dag-100"))
	missing := storepath.Dir + "/00000000000000000000000000000000-not-there"
	for _, tc := range []struct {
		name  string
		paths []string
		want  string
	}{
		{"missing first", append([]string{missing}, paths...), missing},
		{"missing in the middle", slices.Insert(slices.Clone(paths), 50, missing), missing},
		{"missing last", append(slices.Clone(paths), missing), missing},
		{"twice", append(slices.Clone(paths), paths[70]), paths[70]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := inNamespaces(t, tc.paths)
			if !strings.Contains(r.Err, tc.want) {
				t.Errorf("Build: %q, want an error naming %s", r.Err, tc.want)
			}
			if r.Entries != nil {
				t.Errorf("a failed build showed a view: %v", r.Entries)
			}
		})
	}
}

// swapped runs in the helper: it binds the store path p (a directory)
// twice, each onto its mount point in a directory of a fresh tmpfs, first
// saying the maker saw p's own inode, then another one (as if p had been
// swapped between the look and the bind), and reports both results.
func swapped(p string) (r [2]string) {
	fail := func(err error) [2]string { return [2]string{err.Error(), err.Error()} }
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail(err)
	}
	dir, err := os.MkdirTemp("", "mountview-")
	if err != nil {
		return fail(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
		return fail(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fail(err)
	}
	for i, ino := range []uint64{st.Ino, st.Ino + 1} {
		views := filepath.Join(dir, fmt.Sprint(i))
		if err := os.MkdirAll(filepath.Join(views, filepath.Base(p)), 0o755); err != nil {
			return fail(err)
		}
		view, err := unix.Open(views, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return fail(err)
		}
		r[i] = "ok"
		if err := mountview.CheckedBind(filepath.Dir(p), view, views, filepath.Base(p), true, st.Dev, ino); err != nil {
			r[i] = err.Error()
		}
	}
	return r
}

// A bind that shows another inode than the one seen at the store path
// (the path swapped in between, for a link or another file) fails; the
// same bind of the inode seen succeeds.
func TestBindChecksTheInode(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{envHelper + "=swapped:" + bb}
	var r [2]string
	if err := json.Unmarshal(testutil.OutputInUserMountNS(t, cmd), &r); err != nil {
		t.Fatal(err)
	}
	if r[0] != "ok" {
		t.Errorf("bind of the inode seen: %s", r[0])
	}
	if !strings.Contains(r[1], "changed") {
		t.Errorf("bind of another inode than the one seen: %q, want an error", r[1])
	}
}

// Build checks every bind it makes: a path swapped between the look at it
// and its bind fails the build, wherever it is in the list (each batch of
// binds is checked by the thread that made the points).
func TestBuildChecksEveryBind(t *testing.T) {
	paths := closureOf(t, fixture.Path(t, "dag-100"), fixture.Path(t, "busybox"))
	for _, i := range []int{0, 40, len(paths) - 1} {
		cmd := exec.Command("/proc/self/exe")
		cmd.Env = []string{envHelper + "=swap-in-build:" + paths[i] + " " + strings.Join(paths, " ")}
		var r shown
		if err := json.Unmarshal(testutil.OutputInUserMountNS(t, cmd), &r); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(r.Err, "changed") || !strings.Contains(r.Err, paths[i]) {
			t.Errorf("path %d swapped: Build said %q, want it to fail naming %s", i, r.Err, paths[i])
		}
	}
}
