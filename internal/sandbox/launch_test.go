package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/spec"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// ownCgroups lists the cgroups of this process's jobs, in every hierarchy.
func ownCgroups() []string {
	left, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/*/closet-%d-*", os.Getpid()))
	v2, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/closet-%d-*", os.Getpid()))
	return append(left, v2...)
}

// launchedLimits ask for cgroups (accounting, a memory limit) where the
// host gives them, and the rlimit stand-in where not.
var launchedLimits = spec.Limits{Memory: 64 << 20, Measure: true, Capture: true, Fallback: "rlimit"}

// launchForTest launches an init for uid 1000:100 with launchedLimits and
// checks it is what Launch says: a child of this process, pid 1 of a pid
// namespace of its own, placed in this job's cgroups where there are any.
func launchForTest(t *testing.T) (*Init, []string) {
	t.Helper()
	in, err := Launch(LaunchOptions{UID: 1000, GID: 100, Limits: launchedLimits})
	if err != nil {
		t.Fatal(err)
	}
	pid := in.Pid()
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatalf("the launched init %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "NSpid:" && (len(f) != 3 || f[2] != "1") {
			t.Errorf("the launched init's %s: want pid 1 of a namespace of its own", l)
		}
	}
	cgs := ownCgroups()
	cg, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if len(cgs) > 0 && !strings.Contains(string(cg), fmt.Sprintf("/closet-%d-", os.Getpid())) {
		t.Errorf("the launched init is not in its job's cgroups %v:\n%s", cgs, cg)
	}
	t.Logf("init %d, cgroups %v", pid, cgs)
	return in, cgs
}

// TestLaunchClosed: an init launched and never given a spec is killed and
// reaped by Close (its host pid is gone: no zombie), and its cgroups are
// removed; it can no longer be run.
func TestLaunchClosed(t *testing.T) {
	in, _ := launchForTest(t)
	pid := in.Pid()
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if testutil.ProcessExists(pid) {
		t.Errorf("the init %d is still there (alive or a zombie) after Close", pid)
	}
	if left := ownCgroups(); len(left) > 0 {
		t.Errorf("cgroups left behind: %v", left)
	}
	bb := fixture.Path(t, "busybox")
	if _, err := in.Run(context.Background(), confineSpec(bb, "true"), Hooks{}); !errors.Is(err, ErrSetup) {
		t.Errorf("Run after Close: %v, want a setup error", err)
	}
	in.Close() // a second Close does nothing
}

// TestRunRefusesSpecThatDisagrees: a spec that does not match what the
// init was launched for (another uid, the host's network, another limit)
// is refused, nothing runs, and the init is gone with its cgroups. The
// control: the spec that agrees runs.
func TestRunRefusesSpecThatDisagrees(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	marker := filepath.Join(t.TempDir(), "ran")
	if err := os.Chmod(filepath.Dir(marker), 0o777); err != nil {
		t.Fatal(err)
	}
	base := func() *spec.Spec {
		s := confineSpec(bb, "echo ran > /w/ran")
		s.Mounts = []spec.Mount{{Source: filepath.Dir(marker), Target: "/w", Writable: true}}
		s.Limits = launchedLimits
		return s
	}
	for name, change := range map[string]func(*spec.Spec){
		"uid":     func(s *spec.Spec) { s.UID = 0 },
		"network": func(s *spec.Spec) { s.Network = true },
		"tty":     func(s *spec.Spec) { s.TTY = true },
		"limits":  func(s *spec.Spec) { s.Limits.Memory *= 2 },
		"rlimits": func(s *spec.Spec) { s.Limits.Rlimits = map[string]uint64{"NOFILE": 64} },
	} {
		t.Run(name, func(t *testing.T) {
			in, _ := launchForTest(t)
			pid := in.Pid()
			s := base()
			change(s)
			_, err := in.Run(context.Background(), s, Hooks{})
			t.Logf("refused: %v", err)
			if !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), "the init was launched for") {
				t.Errorf("a spec that disagrees (%s): %v, want it refused", name, err)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Errorf("the job ran")
			}
			if testutil.ProcessExists(pid) {
				t.Errorf("the init %d is still there after the refusal", pid)
			}
			if left := ownCgroups(); len(left) > 0 {
				t.Errorf("cgroups left behind: %v", left)
			}
		})
	}
	in, _ := launchForTest(t)
	out, err := in.Run(context.Background(), base(), Hooks{})
	if err != nil {
		t.Fatalf("control: %v", err)
	}
	<-out.Gone
	if _, err := os.Stat(marker); err != nil || out.Result.Code != 0 {
		t.Errorf("control: exit %d, marker %v", out.Result.Code, err)
	}
	if left := ownCgroups(); len(left) > 0 {
		t.Errorf("cgroups left behind: %v", left)
	}
}
