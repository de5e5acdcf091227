// Package execstage is the last closet code a job's process runs: on one
// locked OS thread it applies the per-thread confinement (session, rlimits,
// Landlock, capabilities, no_new_privs, seccomp) and then execve's the
// target, so the thread that was confined is the one that becomes the
// target.
package execstage

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/seccomp"
)

// Run is the exec stage's main. It never returns: it becomes the target
// or reports why not on the status pipe.
func Run() {
	// Every per-thread attribute below (capabilities, no_new_privs, the
	// seccomp filter, the Landlock domain) is set on this thread, and this
	// thread calls execve. It is never unlocked.
	runtime.LockOSThread()
	// The runtime's start is over (it read /proc/self/mountinfo, which a
	// cached view makes 10,000 lines long): the init may attach the view.
	unix.Write(stage.ReadyFD, []byte{1})
	unix.Close(stage.ReadyFD)

	f := os.NewFile(stage.SpecFD, "exec")
	xp, err := stage.ReadExec(f)
	f.Close()
	if err != nil {
		fail("read exec spec", "", err)
	}
	x := *xp

	steps := []struct {
		name string
		fn   func(*stage.Exec) error
	}{
		{"new session", newSession},
		{"take the job's uid", takeRealUID},
		{"set rlimits", setRlimits},
		{"chdir", enterCwd},
		{"landlock", restrictFS},
		{"close fds", closeFDs},
		{"drop capabilities", dropCaps},
		{"no_new_privs", noNewPrivs},
		// Once the filter is on, the syscalls the steps above need may be
		// refused.
		{"seccomp", installSeccomp},
		// Last, only execve follows: see lateRlimits.
		{"set rlimits", setLateRlimits},
	}
	for _, s := range steps {
		if err := s.fn(&x); err != nil {
			fail(s.name, "", err)
		}
	}
	err = unix.Exec(x.Path, x.Args, x.Env)
	e := stage.Errorf(stage.ExecStage, "execve", x.Path, err)
	switch {
	case errors.Is(err, unix.ENOENT):
		e.Hint = "it is not in the sandbox: is it in the closure of the roots you named?"
	case errors.Is(err, unix.EACCES):
		e.Hint = "it is not executable, or lies on a noexec mount"
	}
	stage.Fail(e)
}

func fail(op, path string, err error) {
	stage.Fail(stage.Errorf(stage.ExecStage, op, path, err))
}

// newSession detaches the job from any terminal closet was started from:
// in a session of its own, TIOCSTI and job-control signals cannot reach
// the host's terminal. With a pty, the pty becomes its controlling terminal.
func newSession(x *stage.Exec) error {
	if _, err := unix.Setsid(); err != nil {
		return err
	}
	if x.TTY {
		return unix.IoctlSetInt(0, unix.TIOCSCTTY, 0)
	}
	return nil
}

var rlimitNames = map[string]int{
	"AS": unix.RLIMIT_AS, "CORE": unix.RLIMIT_CORE, "CPU": unix.RLIMIT_CPU,
	"DATA": unix.RLIMIT_DATA, "FSIZE": unix.RLIMIT_FSIZE, "NOFILE": unix.RLIMIT_NOFILE,
	"NPROC": unix.RLIMIT_NPROC, "STACK": unix.RLIMIT_STACK, "MEMLOCK": unix.RLIMIT_MEMLOCK,
	"MSGQUEUE": unix.RLIMIT_MSGQUEUE,
}

// setRlimits sets soft and hard limits to the same value: the job cannot
// raise them again.
func setRlimits(x *stage.Exec) error {
	for name, v := range x.Rlimits {
		if slices.Contains(lateRlimits, name) {
			continue // setLateRlimits, last
		}
		r, ok := rlimitNames[name]
		if !ok {
			return fmt.Errorf("unknown rlimit %s", name)
		}
		if err := unix.Setrlimit(r, &unix.Rlimit{Cur: v, Max: v}); err != nil {
			return fmt.Errorf("RLIMIT_%s=%d: %w", name, v, err)
		}
	}
	return nil
}

// enterCwd changes to the job's directory and checks it lies inside the
// root: a directory reachable only through a stale reference to the old
// root would show as "(unreachable)".
func enterCwd(x *stage.Exec) error {
	if err := unix.Chdir(x.Cwd); err != nil {
		return fmt.Errorf("%s: %w", x.Cwd, err)
	}
	wd, err := unix.Getwd()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(wd, "/") {
		return fmt.Errorf("working directory %q lies outside the sandbox's root", wd)
	}
	return nil
}

// closeFDs marks every descriptor above stderr close-on-exec. The status
// pipe stays usable until execve closes it, which is how the parent learns
// the target started.
func closeFDs(*stage.Exec) error {
	return unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
}

// dropCaps empties every capability set of this thread: the bounding set
// (needs CAP_SETPCAP, so first), the ambient set, then effective,
// permitted and inheritable.
func dropCaps(*stage.Exec) error {
	last, err := lastCap()
	if err != nil {
		return err
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, err
	}
	var n int
	_, err = fmt.Sscanf(string(b), "%d", &n)
	return n, err
}

func noNewPrivs(*stage.Exec) error {
	return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
}

// installSeccomp loads the named profile. An RLIMIT_AS among the rlimits
// means the parent found no memory cgroup and holds --memory by RLIMIT_AS
// alone: the policy then also refuses what makes memory outside any address
// space (memfd, SysV shared memory and message queues).
func installSeccomp(x *stage.Exec) error {
	if x.Seccomp == seccomp.ProfileOff {
		return nil
	}
	opts, err := seccomp.OptionsFor(x.Seccomp, x.Rlimits["AS"] > 0)
	if err != nil {
		return err
	}
	prog, err := seccomp.Program(opts)
	if err != nil {
		return err
	}
	return seccomp.Install(prog)
}

// takeRealUID makes the effective uid the real one. Where the job has a
// host uid of its own, the init took it as effective uid only, keeping
// the caller's (unmapped) real uid, so that its threads do not count
// against the job's RLIMIT_NPROC; the job itself must hold it as its real
// uid too. Elsewhere both are already the same.
func takeRealUID(*stage.Exec) error {
	if r, e := unix.Getuid(), unix.Geteuid(); r != e {
		// syscall's, not unix's: every thread of this process changes.
		return syscall.Setresuid(e, e, e)
	}
	return nil
}

// lateRlimits are set as the last thing before execve, because this
// stage's own Go runtime would trip them first: RLIMIT_NPROC counts its
// threads, and RLIMIT_AS (--memory without a cgroup) can be too small for
// its address space (fatal error: runtime: out of memory). execve leaves
// only the calling thread and a fresh address space.
var lateRlimits = []string{"NPROC", "AS"}

func setLateRlimits(x *stage.Exec) error {
	for _, name := range lateRlimits {
		v, ok := x.Rlimits[name]
		if !ok {
			continue
		}
		if err := unix.Setrlimit(rlimitNames[name], &unix.Rlimit{Cur: v, Max: v}); err != nil {
			return fmt.Errorf("RLIMIT_%s=%d: %w", name, v, err)
		}
	}
	return nil
}
