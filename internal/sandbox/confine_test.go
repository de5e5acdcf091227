package sandbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/signal"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/spec"
)

// confineSpec is a job of busybox running script, with Landlock and the
// default seccomp policy on.
func confineSpec(bb, script string) *spec.Spec {
	return &spec.Spec{
		Version: spec.Version, Path: bb + "/bin/sh", Args: []string{"sh", "-c", script},
		Env: []string{"PATH=" + bb + "/bin"}, Cwd: "/", UID: 1000, GID: 100, User: "u", Home: "/home/u",
		Hostname: "confine", Store: []string{bb}, Mounts: []spec.Mount{}, Etc: map[string]string{},
		Seccomp: "default", Landlock: "best-effort",
	}
}

// runSpec runs s to its end and returns the job's stdout and stderr.
func runSpec(t *testing.T, s *spec.Spec) (string, string, *Outcome, error) {
	t.Helper()
	outF, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	errF, err := os.CreateTemp(t.TempDir(), "err")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	out, err := Run(ctx, s, LaunchOptions{Stdio: Stdio{Stdout: outF, Stderr: errF}}, Hooks{})
	stdout, _ := os.ReadFile(outF.Name())
	stderr, _ := os.ReadFile(errF.Name())
	return string(stdout), string(stderr), out, err
}

// statusField is the value of key in a /proc/PID/status text, spaces
// collapsed.
func statusField(status, key string) string {
	for _, line := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

// limitLine is the soft and hard value of a /proc/PID/limits row.
func limitLine(limits, name string) string {
	for _, line := range strings.Split(limits, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			if len(f) >= 2 {
				return f[0] + " " + f[1]
			}
		}
	}
	return ""
}

// TestTargetIsConfined: the target, forked by the init with no Go runtime
// of its own, holds every confinement the spec asks for (seccomp filter,
// no_new_privs, no capability in any set, its uid and gid, its rlimits as
// both soft and hard limit), while the init that forked it holds none of
// it: it still has its capabilities, no filter and no_new_privs unset.
func TestTargetIsConfined(t *testing.T) {
	if !asNobody(t) {
		return
	}
	bb := fixture.Path(t, "busybox")
	s := confineSpec(bb, `cat /proc/self/status; echo "--limits"; cat /proc/self/limits; echo "--init"; cat /proc/1/status; echo "--initlimits"; cat /proc/1/limits; echo "--cwd"; pwd`)
	s.Cwd = "/tmp"
	s.Limits.Rlimits = map[string]uint64{"NOFILE": 77, "FSIZE": 1 << 20, "CORE": 0, "AS": 4 << 30, "STACK": 4 << 20}
	// Started with signals ignored (nohup: SIGHUP; a shell without job
	// control: the stop signals), which the Go runtime of closet and of
	// its init leave ignored unless they catch them, and which outlive
	// every execve down to the job.
	signal.Ignore(unix.SIGHUP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU)
	defer signal.Reset(unix.SIGHUP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU)
	stdout, stderr, out, err := runSpec(t, s)
	if err != nil || out.Result.Code != 0 {
		t.Fatalf("run: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	sec := sections(stdout)
	self, limits, init := sec[""], sec["limits"], sec["init"]
	for key, want := range map[string]string{
		"Seccomp":    "2",
		"NoNewPrivs": "1",
		"CapInh":     "0000000000000000",
		"CapPrm":     "0000000000000000",
		"CapEff":     "0000000000000000",
		"CapBnd":     "0000000000000000",
		"CapAmb":     "0000000000000000",
		"Uid":        "1000 1000 1000 1000",
		"Gid":        "100 100 100 100",
		// The init ignores some signals to survive them, and some came
		// ignored from this process; the child sets every signal back to
		// its default, and unblocks them, before anything of the job runs.
		"SigIgn": "0000000000000000",
		"SigBlk": "0000000000000000",
	} {
		if got := statusField(self, key); got != want {
			t.Errorf("target's %s: %q, want %q", key, got, want)
		}
	}
	// The caller's supplementary groups are not mapped into the job's
	// user namespace: they show as the overflow gid, if at all.
	for _, g := range strings.Fields(statusField(self, "Groups")) {
		if g != "65534" && g != "100" {
			t.Errorf("target's Groups: %q", statusField(self, "Groups"))
		}
	}
	for name, want := range map[string]string{
		"Max open files":     "77 77",
		"Max file size":      "1048576 1048576",
		"Max core file size": "0 0",
		"Max address space":  "4294967296 4294967296",
		"Max stack size":     "4194304 4194304",
	} {
		if got := limitLine(limits, name); got != want {
			t.Errorf("target's %q limit: %q, want %q\n%s", name, got, want, limits)
		}
	}
	if got := strings.TrimSpace(sec["cwd"]); got != "/tmp" {
		t.Errorf("target's cwd %q, want /tmp", got)
	}
	// The init (pid 1) stays unconfined: it serves the live view and
	// reaps after the target started.
	if got := statusField(init, "Seccomp"); got != "0" {
		t.Errorf("the init's Seccomp: %q, want 0\n%s", got, init)
	}
	if got := statusField(init, "NoNewPrivs"); got != "0" {
		t.Errorf("the init's NoNewPrivs: %q, want 0", got)
	}
	if got := statusField(init, "CapEff"); got == "0000000000000000" || got == "" {
		t.Errorf("the init's CapEff: %q, want its capabilities", got)
	}
	// The child shares the init's memory until its execve (amd64), not
	// its process: the rlimits it set are its own.
	if got := limitLine(sec["initlimits"], "Max open files"); got == "77 77" || got == "" {
		t.Errorf("the init's open files limit: %q, want its own, not the target's\n%s", got, sec["initlimits"])
	}
}

// TestTargetStepFailures: a confinement step or execve that fails is
// reported as the step's Error, on its path and with its errno, and
// nothing of the job runs.
func TestTargetStepFailures(t *testing.T) {
	if !asNobody(t) {
		return
	}
	bb := fixture.Path(t, "busybox")
	for _, tc := range []struct {
		name  string
		edit  func(*spec.Spec)
		op    string
		path  string
		errno unix.Errno
		msg   string
	}{
		{"missing cwd", func(s *spec.Spec) { s.Cwd = "/tmp/no-such-dir" }, "chdir", "/tmp/no-such-dir", unix.ENOENT, ""},
		{"cwd a file", func(s *spec.Spec) { s.Cwd = "/dev/null" }, "chdir", "/dev/null", unix.ENOTDIR, ""},
		{"missing target", func(s *spec.Spec) { s.Path = bb + "/bin/no-such-program" }, "execve", bb + "/bin/no-such-program", unix.ENOENT, ""},
		{"target not executable", func(s *spec.Spec) { s.Path = "/dev/null" }, "execve", "/dev/null", unix.EACCES, ""},
		// Above the hard limit: only CAP_SYS_RESOURCE over the host may.
		{"rlimit out of reach", func(s *spec.Spec) { s.Limits.Rlimits = map[string]uint64{"NOFILE": 1 << 40} }, "set rlimits", "", unix.EPERM, "RLIMIT_NOFILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := confineSpec(bb, "echo RAN")
			tc.edit(s)
			stdout, stderr, _, err := runSpec(t, s)
			var se *stage.Error
			if !errors.As(err, &se) {
				t.Fatalf("want a stage.Error, got %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
			}
			t.Logf("%v", err)
			if se.Op != tc.op || se.Path != tc.path || !errors.Is(err, tc.errno) || !strings.Contains(se.Msg, tc.msg) {
				t.Errorf("got op %q path %q errno %v msg %q, want %q %q %v %q", se.Op, se.Path, se.Errno, se.Msg, tc.op, tc.path, tc.errno, tc.msg)
			}
			if !errors.Is(err, ErrSetup) {
				t.Errorf("not marked as a setup failure: %v", err)
			}
			if tc.op == "execve" && se.Hint == "" {
				t.Errorf("execve error without a hint: %v", err)
			}
			if bytes.Contains([]byte(stdout+stderr), []byte("RAN")) {
				t.Errorf("the job ran: %s%s", stdout, stderr)
			}
		})
	}
}
