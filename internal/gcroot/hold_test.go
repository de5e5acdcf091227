package gcroot

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/storepath"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// Fifty Holds in one process, made and released concurrently, each with its
// own roots: every link is unique, points where its Hold asked, and no
// Hold's Release removes another's links. Run with -race.
func TestConcurrentHolds(t *testing.T) {
	store := t.TempDir()
	dir := filepath.Join(store, "nix/var/nix/gcroots")
	os.MkdirAll(dir, 0o755)
	const n = 50
	holds := make([]*Hold, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			roots := []storepath.Path{storepath.Path(fmt.Sprintf("%s-%d-a", root1, i)), storepath.Path(fmt.Sprintf("%s-%d-b", root1, i))}
			h, err := Acquire(Options{StoreRoot: store}, roots)
			if err != nil {
				errs <- err
				return
			}
			if err := h.Add([]storepath.Path{storepath.Path(fmt.Sprintf("%s-%d-c", root1, i))}); err != nil {
				errs <- err
			}
			holds[i] = h
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := len(closetLinks(t, dir)); got != 3*n {
		t.Fatalf("%d links, want %d (3 per hold)", got, 3*n)
	}
	// Release the even holds concurrently while the odd ones stay.
	for i := 0; i < n; i += 2 {
		wg.Add(1)
		go func() { defer wg.Done(); holds[i].Release() }()
	}
	wg.Wait()
	for i, h := range holds {
		for j, l := range h.links {
			target, err := os.Readlink(filepath.Join(dir, l))
			want := fmt.Sprintf("%s-%d-%c", root1, i, 'a'+j)
			if err != nil || target != want {
				t.Errorf("hold %d: %s -> %q (%v), want %s", i, l, target, err, want)
			}
		}
	}
	if got := len(closetLinks(t, dir)); got != 3*n/2 {
		t.Errorf("%d links after releasing half, want %d", got, 3*n/2)
	}
	for _, h := range holds {
		h.Release()
	}
	if left := closetLinks(t, dir); len(left) != 0 {
		t.Errorf("left: %v", left)
	}
}

// A chroot store whose per-user directory, or gcroots itself, is a symlink
// to a directory elsewhere: nothing is created or deleted at the target,
// even a dead closet's root there stays.
func TestSymlinkedRootDirNotFollowed(t *testing.T) {
	for _, link := range []string{"nix/var/nix/gcroots/per-user/mallory", "nix/var/nix/gcroots"} {
		t.Run(filepath.Base(link), func(t *testing.T) {
			store := t.TempDir()
			elsewhere := t.TempDir()
			os.Symlink(string(root1), filepath.Join(elsewhere, "closet-4194305-0"))
			os.MkdirAll(filepath.Dir(filepath.Join(store, link)), 0o755)
			if err := os.Symlink(elsewhere, filepath.Join(store, link)); err != nil {
				t.Fatal(err)
			}
			before := testutil.Tree(t, elsewhere)
			h, err := Acquire(Options{StoreRoot: store, User: "mallory", DaemonSocket: "-"}, []storepath.Path{root1})
			if err == nil {
				if strings.HasPrefix(h.Dir, elsewhere) || h.Dir == filepath.Join(store, link) {
					t.Errorf("held in %s, through the symlink", h.Dir)
				}
				h.Release()
			} else if !errors.Is(err, ErrNoPlace) || !strings.Contains(err.Error(), "symlink") {
				t.Errorf("err = %v, want ErrNoPlace saying a symlink was not followed", err)
			}
			if after := testutil.Tree(t, elsewhere); !slices.Equal(before, after) {
				t.Errorf("the link's target changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// A per-user directory owned by someone else is not used, even by root:
// its owner could swap its contents under the sweep.
func TestForeignOwnedDirRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making a directory owned by another user needs root")
	}
	store := t.TempDir()
	d := filepath.Join(store, "nix/var/nix/gcroots/per-user/victim")
	os.MkdirAll(d, 0o755)
	os.Chown(d, 65534, 65534)
	stale := filepath.Join(d, "closet-4194305-0")
	os.Symlink(string(root1), stale)
	os.Lchown(stale, 65534, 65534)
	os.Chmod(filepath.Join(store, "nix/var/nix/gcroots"), 0o755)
	os.Chown(filepath.Join(store, "nix/var/nix/gcroots"), 65534, 65534)
	_, err := Acquire(Options{StoreRoot: store, User: "victim", DaemonSocket: "-"}, []storepath.Path{root1})
	if !errors.Is(err, ErrNoPlace) || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("err = %v, want ErrNoPlace naming the owner", err)
	}
	if _, err := os.Lstat(stale); err != nil {
		t.Error("the sweep ran in a directory it refused")
	}
}

// TestHelperHold is not a test: run as another user by the daemon tests, it
// acquires a hold on the path read from its stdin's first line, prints
// where, and keeps it until its stdin closes. (The path does not come
// through the environment or argv: Nix's collector treats store paths in a
// live process's environ and cmdline as roots, which would hold it without
// this package.)
func TestHelperHold(t *testing.T) {
	if os.Getenv("GCROOT_HELPER") == "" {
		t.Skip("a helper for the daemon tests")
	}
	in := bufio.NewReader(os.Stdin)
	path, _ := in.ReadString('\n')
	path = strings.TrimSpace(path)
	o := Options{User: os.Getenv("GCROOT_HELPER_USER"), DaemonSocket: os.Getenv("GCROOT_HELPER_SOCKET"),
		TempRoots: os.Getenv("GCROOT_HELPER_TEMPROOTS") == "1"}
	h, err := Acquire(o, []storepath.Path{storepath.Path(path)})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(3)
	}
	fmt.Printf("held dir=%q\n", h.Dir)
	io.Copy(io.Discard, in)
	h.Release()
	fmt.Println("released")
	os.Exit(0)
}

// freshUser creates a user that has never used Nix, in nix-users when the
// group exists, and removes it (and what Nix made for it) at cleanup.
func freshUser(t *testing.T) (name string, uid, gid int) {
	t.Helper()
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd not installed")
	}
	name = fmt.Sprintf("closetgc%d", time.Now().UnixNano()%1e8)
	args := []string{"-M", "-N", "-s", "/usr/sbin/nologin", "-g", "nogroup"}
	if _, err := user.LookupGroup("nix-users"); err == nil {
		args = append(args, "-G", "nix-users")
	}
	if out, err := exec.Command("useradd", append(args, name)...).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("userdel", name).Run()
		os.RemoveAll("/nix/var/nix/gcroots/per-user/" + name)
		os.RemoveAll("/nix/var/nix/profiles/per-user/" + name)
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return name, uid, gid
}

// startDaemon runs a nix-daemon of this test on a socket of its own and
// stops it (by pid) at cleanup.
func startDaemon(t *testing.T, dir string) string {
	t.Helper()
	bin, err := exec.LookPath("nix-daemon")
	if err != nil {
		t.Skip("nix-daemon not installed")
	}
	sock := filepath.Join(dir, "socket")
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "NIX_DAEMON_SOCKET_PATH="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The daemon forks a process per connection, in its group.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatal("nix-daemon did not create its socket")
		}
	}
}

// unrootedPath builds a fresh trivial path with the fixture's busybox and
// no GC root.
func unrootedPath(t *testing.T) string {
	t.Helper()
	bb := fixture.Path(t, "busybox")
	expr := fmt.Sprintf(`derivation { name = "closet-gc-held-%d"; system = builtins.currentSystem;
		builder = "${builtins.storePath %s}/bin/sh"; args = [ "-c" "echo held > $out" ]; }`, time.Now().UnixNano(), bb)
	out, err := exec.Command("nix-build", "--no-out-link", "--option", "substituters", "", "-E", expr).Output()
	if err != nil {
		t.Fatalf("nix-build: %v", err)
	}
	p := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("nix-store", "--delete", p).Run() })
	return p
}

// A user who never ran Nix, with no per-user GC-root directory, holds a
// closure through the daemon: by the directory the handshake makes it
// create, or by the daemon's temporary roots. Root's collector cannot
// delete the path while the hold lives, and can after.
func TestFreshUserHoldsThroughDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating a user and starting a nix-daemon need root")
	}
	if _, err := exec.LookPath("nix-build"); err != nil {
		t.Skip("nix-build not installed")
	}
	tmp := t.TempDir()
	for p := tmp; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	sock := startDaemon(t, tmp)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(tmp, "gcroot.test")
	if b, err := os.ReadFile(self); err != nil || os.WriteFile(helper, b, 0o755) != nil {
		t.Fatalf("copy the test binary: %v", err)
	}
	for _, temp := range []bool{false, true} {
		t.Run(fmt.Sprintf("tempRoots=%v", temp), func(t *testing.T) {
			name, uid, gid := freshUser(t)
			perUser := "/nix/var/nix/gcroots/per-user/" + name
			if _, err := os.Lstat(perUser); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s exists before the user ran anything", perUser)
			}
			path := unrootedPath(t)
			cmd := exec.Command(helper, "-test.run=^TestHelperHold$")
			cmd.Dir = tmp
			cmd.Env = []string{"GCROOT_HELPER=1", "GCROOT_HELPER_USER=" + name, "GCROOT_HELPER_SOCKET=" + sock,
				"GCROOT_HELPER_TEMPROOTS=" + map[bool]string{true: "1"}[temp], "PATH=/usr/bin:/bin"}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			fmt.Fprintln(stdin, path)
			sc := bufio.NewScanner(stdout)
			if !sc.Scan() || !strings.HasPrefix(sc.Text(), "held") {
				t.Fatalf("helper: %q %v; stderr: %s", sc.Text(), sc.Err(), stderr.String())
			}
			t.Logf("helper as %s (uid %d): %s", name, uid, sc.Text())
			if !temp {
				var st syscall.Stat_t
				if err := syscall.Lstat(perUser, &st); err != nil || st.Uid != uint32(uid) {
					t.Errorf("per-user dir after the handshake: %v, owner %d, want the user's %d", err, st.Uid, uid)
				}
				if want := fmt.Sprintf("held dir=%q", perUser); sc.Text() != want {
					t.Errorf("helper said %s, want %s", sc.Text(), want)
				}
			} else if sc.Text() != `held dir=""` {
				t.Errorf("helper said %s, want the daemon's temporary roots", sc.Text())
			}
			if out, err := exec.Command("nix-store", "--delete", path).CombinedOutput(); err == nil {
				t.Fatalf("root's collector deleted the held %s: %s", path, out)
			} else if !strings.Contains(string(out), "alive") {
				t.Errorf("nix-store --delete failed, but not because the path is alive: %s", out)
			}
			stdin.Close()
			if !sc.Scan() || sc.Text() != "released" {
				t.Fatalf("helper did not release: %q; stderr: %s", sc.Text(), stderr.String())
			}
			cmd.Wait()
			// The daemon's process for the connection ends just after
			// it closes; its temporary roots go with it.
			for try := 0; ; try++ {
				out, err := exec.Command("nix-store", "--delete", path).CombinedOutput()
				if err == nil {
					break
				}
				if try == 50 {
					t.Fatalf("after release the path is still held: %v: %s", err, out)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}
