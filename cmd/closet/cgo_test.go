package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// TestCgoBuildRunsJobs builds closet as a plain `go build` does on a host
// with a C compiler (CGO_ENABLED=1: dynamically linked against the host's
// libc), and runs a job with it as an unprivileged user: the init starts,
// and loads its libraries, before pivot_root; the target is its fork, so
// nothing of closet is loaded after the host's tree is gone. closet check, whose
// attacker runs inside a finished sandbox, refuses it in one line.
func TestCgoBuildRunsJobs(t *testing.T) {
	cc, err := exec.Command("go", "env", "CC").Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath(strings.TrimSpace(string(cc))); err != nil {
		t.Skipf("no C compiler (%s), so go build makes a cgo-free binary here anyway", strings.TrimSpace(string(cc)))
	}
	dir := testutil.TempDir(t)
	bin := filepath.Join(dir, "closet")
	build := exec.Command("go", "build", "-o", bin, "./cmd/closet")
	build.Dir = testutil.ModuleRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=1 go build: %v\n%s", err, out)
	}
	os.Chmod(bin, 0o755)
	info, _ := exec.Command("go", "version", "-m", bin).Output()
	if !strings.Contains(string(info), "CGO_ENABLED=1") {
		t.Fatalf("not a cgo build:\n%s", info)
	}
	bb := fixture.Path(t, "busybox")
	mk := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
		testutil.Unprivileged(cmd)
		return cmd
	}
	testutil.EnsureGCRootDir(t)
	r := testutil.Run(t, mk("run", "--cwd", "none", bb, "--", "sh", "-c", "echo job-ran; id -u"))
	if r.Code != 0 || !strings.Contains(r.Stdout, "job-ran") {
		t.Fatalf("a cgo build's job: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	r = testutil.Run(t, mk("check", "--only", "fanotify", bb))
	if r.Code != 125 || !strings.Contains(r.Stderr, "CGO_ENABLED=0") || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
		t.Errorf("check with a cgo build: exit %d, stderr %q; want 125 and one line saying how to rebuild", r.Code, r.Stderr)
	}
}
