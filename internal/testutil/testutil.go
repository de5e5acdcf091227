// Package testutil owns what end-to-end tests share: building the closet
// binary once (static, as it must be to start inside a sandbox), and running
// it as an unprivileged user, because rootless is the product.
package testutil

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	buildOnce.Do(func() {
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
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

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
