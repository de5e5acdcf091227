package serve

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/closet-sandbox/closet/internal/testutil"
)

// The binaries as they are installed: closet, closet-serve and closet-stage
// side by side, built once per test process. The tests start the service
// as users do, `closet serve ...`, which runs closet-serve beside closet.
var bins struct {
	once sync.Once
	dir  string
	err  error
}

func binDir(t testing.TB) string {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "closet-serve-test-bin-")
		if bins.err != nil {
			return
		}
		os.Chmod(bins.dir, 0o755)
		cmd := exec.Command("go", "build", "-o", bins.dir+"/", "./cmd/closet", "./cmd/closet-serve", "./cmd/closet-stage")
		cmd.Dir = testutil.ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			bins.err = &buildError{err, out}
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.dir
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + string(e.out) }

// closetBin is the installed closet, with closet-serve beside it.
func closetBin(t testing.TB) string { return filepath.Join(binDir(t), "closet") }

// TestServeDispatch: `closet serve` is closet-serve beside closet (its help,
// its flags), else closet-serve on PATH; without either, closet says where
// it looked and what to install, and --help still teaches.
func TestServeDispatch(t *testing.T) {
	path := "/usr/bin:/bin"
	run := func(bin string, args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=" + path, "LANG=C.UTF-8"}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	dir := binDir(t)
	for _, bin := range []string{filepath.Join(dir, "closet"), filepath.Join(dir, "closet-serve")} {
		args := []string{"--help"}
		if filepath.Base(bin) == "closet" {
			args = []string{"serve", "--help"}
		}
		out, code := run(bin, args...)
		if code != 0 || !strings.Contains(out, "closet serve --data DIR") || !strings.Contains(out, "--workers") || !strings.Contains(out, "token") {
			t.Errorf("%s %v: %d\n%s", bin, args, code, out)
		}
	}
	if out, code := run(filepath.Join(dir, "closet"), "serve", "token", "list"); code == 0 || !strings.Contains(out, "--data DIR") {
		t.Errorf("closet serve token list without --data: %d %s", code, out)
	}
	// closet alone, and no closet-serve on PATH.
	alone := testutil.TempDir(t)
	path = alone
	raw, err := os.ReadFile(filepath.Join(dir, "closet"))
	if err != nil {
		t.Fatal(err)
	}
	lone := filepath.Join(alone, "closet")
	if err := os.WriteFile(lone, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	want := []string{"closet-serve", filepath.Join(alone, "closet-serve"), "PATH", "go build", "./cmd/closet-serve"}
	for _, args := range [][]string{{"serve", "--data", alone}, {"serve", "token", "list", "--data", alone}, {"serve", "--help"}} {
		out, code := run(lone, args...)
		if code != 1 {
			t.Errorf("closet %v without closet-serve: exit %d, want 1\n%s", args, code, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("closet %v without closet-serve does not say %q:\n%s", args, w, out)
			}
		}
		if args[1] == "--help" && !strings.Contains(out, "closet serve token add|list|revoke") {
			t.Errorf("closet serve --help without closet-serve does not teach:\n%s", out)
		}
	}
	if _, err := os.Stat(filepath.Join(alone, "closet.db")); err == nil {
		t.Error("closet serve without closet-serve made a database")
	}
	// Not beside closet, but on PATH: found there.
	path = dir
	if out, code := run(lone, "serve", "--help"); code != 0 || !strings.Contains(out, "--workers") {
		t.Errorf("closet serve --help with closet-serve on PATH: %d\n%s", code, out)
	}
}
