// Package testutil owns what end-to-end tests share: building the closet
// binary once (static, as it must be to start inside a sandbox), and running
// it as an unprivileged user, because rootless is the product.
package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Nobody is the unprivileged uid and gid tests run closet as when they
// run as root.
const Nobody = 65534

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds closet once per test process with CGO_ENABLED=0 into a
// world-readable directory and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	if _, err := BuildBinary(); err != nil {
		t.Fatal(err)
	}
	return binPath
}

// BuildBinary is Binary for TestMain, which has no testing.TB.
func BuildBinary() (string, error) {
	buildOnce.Do(func() {
		if p := os.Getenv(EnvBinary); p != "" {
			binPath = p // built by the root parent of a rerun test
			return
		}
		dir, err := os.MkdirTemp("", "closet-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755)
		binPath = filepath.Join(dir, "closet")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/closet")
		cmd.Dir = ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	return binPath, buildErr
}

// EnvBinary passes the static closet binary from a root test process to
// its unprivileged rerun, which cannot build it (no Go cache of its own).
const EnvBinary = "CLOSET_TEST_BINARY"

// ModuleRoot is the directory holding go.mod.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Unprivileged makes cmd run as nobody when the test runs as root; an
// unprivileged test process runs it as itself.
func Unprivileged(cmd *exec.Cmd) {
	if os.Geteuid() != 0 {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: Nobody, Gid: Nobody}
	cmd.Env = append(cmd.Env, "USER=nobody", "HOME=/nonexistent")
}

// OutputInUserMountNS runs cmd as root of a user and mount namespace of
// its own (as the sandbox's init is: the caller's ids mapped to 0) and
// returns its stdout; the test fails with its stderr when it fails.
func OutputInUserMountNS(t testing.TB, cmd *exec.Cmd) []byte {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s: %v: %s", cmd.Path, err, stderr)
	}
	return out
}

// Result is a finished closet process.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Closet runs the binary with args as an unprivileged user in dir ("" = a
// fresh world-writable temp dir) and returns what it printed and its exit
// code.
func Closet(t testing.TB, dir string, args ...string) Result {
	t.Helper()
	return Run(t, Command(t, dir, args...))
}

// Run runs a prepared closet command, bounded by a minute so that a hung
// sandbox fails its test instead of the whole suite, and returns what it
// printed and its exit code.
func Run(t testing.TB, cmd *exec.Cmd) Result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	if !timer.Stop() {
		t.Fatalf("%v did not end within a minute", cmd.Args)
	}
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return r
}

// Command prepares an unprivileged closet process without starting it.
func Command(t testing.TB, dir string, args ...string) *exec.Cmd {
	t.Helper()
	bin := Binary(t)
	if dir == "" {
		dir = TempDir(t)
	}
	EnsureGCRootDir(t)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	Unprivileged(cmd)
	return cmd
}

// TempDir is a temp directory the unprivileged user can write.
func TempDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	os.Chmod(d, 0o777)
	// t.TempDir's parents are 0700 for root; open the path to others.
	for p := filepath.Dir(d); p != os.TempDir() && p != "/" && p != "."; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

// EnsureGCRootDir creates the per-user GC root directory of the test user,
// as multi-user Nix does for every user, when the test can.
func EnsureGCRootDir(t testing.TB) {
	_ = t // any test may ask; nil from TestMain
	if os.Geteuid() != 0 {
		return
	}
	d := "/nix/var/nix/gcroots/per-user/nobody"
	if _, err := os.Stat(d); err == nil {
		return
	}
	if err := os.MkdirAll(d, 0o755); err == nil {
		os.Chown(d, Nobody, Nobody)
	}
}

// envRerun marks a test binary re-executed as the unprivileged user.
const envRerun = "CLOSET_TEST_UNPRIVILEGED"

// RerunUnprivileged re-executes the running test binary as nobody when it
// runs as root, and returns the child's exit code; ok is false when the
// test process should run its tests itself (it is unprivileged already, or
// is the re-executed child). Tests that start sandboxes in process call
// it from TestMain, because rootless is the product:
//
//	if code, ok := testutil.RerunUnprivileged(); ok { os.Exit(code) }
//
// The binary is copied to a directory nobody can read, and the flags that
// name files only root could write (go test's log and profiles) are
// dropped.
func RerunUnprivileged() (code int, ok bool) {
	if os.Geteuid() != 0 || os.Getenv(envRerun) != "" {
		return 0, false
	}
	fail := func(err error) (int, bool) {
		os.Stderr.WriteString("testutil: rerun as nobody: " + err.Error() + "\n")
		return 2, true
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	dir, err := os.MkdirTemp("", "closet-test-rerun-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	bin := filepath.Join(dir, filepath.Base(self))
	if err := copyFile(self, bin); err != nil {
		return fail(err)
	}
	var args []string
	for _, a := range os.Args[1:] {
		switch {
		case hasAnyPrefix(a, "-test.testlogfile", "-test.coverprofile", "-test.cpuprofile", "-test.memprofile",
			"-test.blockprofile", "-test.mutexprofile", "-test.trace", "-test.outputdir", "-test.gocoverdir"):
			continue
		}
		args = append(args, a)
	}
	EnsureGCRootDir(nil)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envRerun+"=1")
	if bin, err := BuildBinary(); err == nil {
		cmd.Env = append(cmd.Env, EnvBinary+"="+bin)
	}
	if os.Getenv("CLOSET_FIXTURE") == "" {
		// The child runs elsewhere: tell it where the fixture links are.
		cmd.Env = append(cmd.Env, "CLOSET_FIXTURE="+filepath.Join(ModuleRoot(), ".fixture"))
	}
	Unprivileged(cmd)
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), true
	case err != nil:
		return fail(err)
	}
	return 0, true
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if len(s) >= len(p) && s[:len(p)] == p {
			return true
		}
	}
	return false
}

// ExecutableCopy copies the test binary into a directory of its own that
// any user can reach, for tests that start it as another user or in
// another cgroup; the copy goes when the test ends.
func ExecutableCopy(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "closet-test-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, filepath.Base(self))
	if err := copyFile(self, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// StagesUnprivileged is TestMain's set-up for a package that starts
// sandboxes in process: as root it reruns the test binary as nobody and
// exits with the child's code (RerunUnprivileged); otherwise it builds the
// static closet binary the sandboxes' stages start from and returns its
// path, so that the stages run the same static code a user's install does
// whatever flags (-race, cgo) built the test binary. It exits when the
// build fails.
func StagesUnprivileged() string {
	if code, ok := RerunUnprivileged(); ok {
		os.Exit(code)
	}
	bin, err := BuildBinary()
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(2)
	}
	return bin
}

// Children lists this process's child processes (of every thread),
// zombies included, as /proc's children files give them.
func Children(t testing.TB) []string {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/children")
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		kids = append(kids, strings.Fields(string(b))...)
	}
	return kids
}

// ProcessExists says whether pid is still a process, alive or a zombie.
func ProcessExists(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// Tree lists every entry under dir with its mode, size, modification time
// and link target: two listings are equal only if nothing under dir was
// created, removed, written or retargeted in between.
func Tree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		l, _ := os.Readlink(p)
		out = append(out, fmt.Sprintf("%s %v %d %d %s", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano(), l))
		return nil
	})
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	return out
}
