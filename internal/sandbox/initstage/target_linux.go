package initstage

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/sandbox/rawclone"

	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/seccomp"
)

// Starting the target. The init forks it (forkTarget) once the root is
// pivoted into; the child confines itself with what prepareTarget laid out
// and execve's the target (confineAndExec). Everything that can be decided
// or built ahead (the seccomp program, the Landlock ruleset, argv and the
// environment as C strings, the rlimits) is, in the init, before the fork,
// so the child only makes system calls. Nothing of it confines the init,
// which serves the live view and reaps until the target ends.
//
// The child shares the init's memory until its execve where closet has
// a vfork trampoline (amd64: CLONE_VM|CLONE_VFORK, see forkTarget), and is
// a plain fork elsewhere. Measured as nobody on a 2-core VM (median of 61,
// same run), the fork to the target's execve took 0.58 ms with a plain
// fork and 0.32 with the shared memory: no copy of the init's page tables
// (with a TLB flush on every CPU that runs one of its threads), no
// copy-on-write faults in the child or the init afterwards, and no copy
// to tear down at the execve.

// stepNames name the child's steps in errors, as the user sees them.
var stepNames = [numSteps]string{
	stepJoinPids:    "join the job's pids cgroup",
	stepCgroupNS:    "new cgroup namespace",
	stepSignals:     "reset signal dispositions and mask",
	stepConsole:     "attach console",
	stepSession:     "new session",
	stepUID:         "take the job's uid",
	stepRlimits:     "set rlimits",
	stepChdir:       "chdir",
	stepCwdOutside:  "chdir",
	stepLandlock:    "landlock",
	stepCloseFDs:    "close fds",
	stepBoundingSet: "drop capabilities",
	stepAmbient:     "drop capabilities",
	stepCapset:      "drop capabilities",
	stepNoNewPrivs:  "no_new_privs",
	stepSeccompNNP:  "seccomp",
	stepSeccomp:     "seccomp",
	stepLateRlimits: "set rlimits",
	stepExecve:      "execve",
}

var rlimitNames = map[string]uintptr{
	"AS": unix.RLIMIT_AS, "CORE": unix.RLIMIT_CORE, "CPU": unix.RLIMIT_CPU,
	"DATA": unix.RLIMIT_DATA, "FSIZE": unix.RLIMIT_FSIZE, "NOFILE": unix.RLIMIT_NOFILE,
	"NPROC": unix.RLIMIT_NPROC, "STACK": unix.RLIMIT_STACK, "MEMLOCK": unix.RLIMIT_MEMLOCK,
	"MSGQUEUE": unix.RLIMIT_MSGQUEUE,
}

// lateRlimits are set as the last thing before execve: the child is a
// copy of the init, whose Go address space RLIMIT_AS (--memory without a
// cgroup) may already exceed, and execve leaves only the new image.
// RLIMIT_NPROC is counted at fork, so it is set where it counts the job's
// own tasks only.
var lateRlimits = []string{"NPROC", "AS"}

// prepareTarget lays out what the child needs (see launch), after
// pivot_root: the Landlock rules bind to inodes of the sandbox's root.
func (st *state) prepareTarget() error {
	s := st.s
	l := &launch{tty: -1, landlockFD: -1, errPipe: -1, pidsFD: -1, joinSelf: [1]byte{'0'}, cwdBuf: make([]byte, unix.PathMax)}
	// Every signal a process may set: the init's ignored ones, and any
	// that closet itself was started with ignored (a shell ignores
	// SIGINT and SIGQUIT for a command it starts in the background, and
	// an ignored disposition outlives every execve down to the job).
	for sig := uintptr(1); sig <= 64; sig++ {
		if sig != uintptr(unix.SIGKILL) && sig != uintptr(unix.SIGSTOP) {
			l.defaultSigs = append(l.defaultSigs, sig)
		}
	}
	if os.Getenv(stage.EnvPids) == "1" {
		// Absent or not a cgroup.procs: the child's write fails, and
		// nothing runs.
		l.pidsFD = stage.PidsFD
	}
	var err error
	if l.path, err = syscall.BytePtrFromString(s.Path); err != nil {
		return stage.Errorf(stage.Init, "prepare the target", s.Path, err)
	}
	if l.cwd, err = syscall.BytePtrFromString(s.Cwd); err != nil {
		return stage.Errorf(stage.Init, "prepare the target", s.Cwd, err)
	}
	if l.argv, err = syscall.SlicePtrFromStrings(s.Args); err != nil {
		return stage.Errorf(stage.Init, "prepare the target", "argv", err)
	}
	if l.envv, err = syscall.SlicePtrFromStrings(s.Env); err != nil {
		return stage.Errorf(stage.Init, "prepare the target", "environment", err)
	}
	if st.tty != nil {
		l.tty = int(st.tty.Fd())
	}
	// Where the job has a host uid of its own, the init took it as
	// effective uid only (takeIdentity); the job holds it as its real uid
	// too. Elsewhere both are already the same.
	if r, e := unix.Getuid(), unix.Geteuid(); r != e {
		l.setUID, l.uid = true, uintptr(e)
	}
	names := make([]string, 0, len(s.Limits.Rlimits))
	for name := range s.Limits.Rlimits {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		res, ok := rlimitNames[name]
		if !ok {
			return stage.Errorf(stage.Init, "set rlimits", "", fmt.Errorf("unknown rlimit %s", name))
		}
		v := s.Limits.Rlimits[name]
		r := rlimitSet{name: name, resource: res, lim: unix.Rlimit{Cur: v, Max: v}}
		if slices.Contains(lateRlimits, name) {
			l.late = append(l.late, r)
		} else {
			l.rlimits = append(l.rlimits, r)
		}
	}
	if s.Landlock != "off" {
		if l.landlockFD, l.landlockFlags, err = landlockRuleset(landlockPaths(s)); err != nil {
			return stage.Errorf(stage.Init, "landlock", "", err)
		}
	}
	if l.lastCap, err = lastCap(); err != nil {
		return stage.Errorf(stage.Init, "drop capabilities", "/proc/sys/kernel/cap_last_cap", err)
	}
	l.capHdr.Version = unix.LINUX_CAPABILITY_VERSION_3
	f := <-st.seccomp
	if f.err != nil {
		return stage.Errorf(stage.Init, "seccomp", "", f.err)
	}
	l.fprog = f.prog
	st.target = l
	return nil
}

// compiledFilter is seccompProgram's answer.
type compiledFilter struct {
	prog *unix.SockFprog
	err  error
}

// seccompProgram is the named profile's filter (nil for "off"). An RLIMIT_AS
// among the rlimits means the parent found no memory cgroup and holds
// --memory by RLIMIT_AS alone: the policy then also refuses what makes
// memory outside any address space (memfd, SysV shared memory and message
// queues).
func seccompProgram(profile string, memoryByRlimit bool) (*unix.SockFprog, error) {
	if profile == seccomp.ProfileOff {
		return nil, nil
	}
	opts, err := seccomp.OptionsFor(profile, memoryByRlimit)
	if err != nil {
		return nil, err
	}
	prog, err := seccomp.Program(opts)
	if err != nil {
		return nil, err
	}
	if len(prog) == 0 || len(prog) > 0xffff {
		return nil, fmt.Errorf("seccomp: program has %d instructions: %w", len(prog), unix.EINVAL)
	}
	return &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}, nil
}

func lastCap() (uintptr, error) {
	b, err := readSmallFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("read %q: not a capability number", b)
	}
	return uintptr(n), nil
}

// startTarget forks the child that becomes the target and waits until it
// has: EOF on the error pipe means its execve succeeded (the pipe is
// close-on-exec); a failure record means it did not and has exited, and
// comes back as the Error of the step that failed. The init itself stays
// as it was: nothing of the child's confinement applies to it.
func (st *state) startTarget() (int, error) {
	l := st.target
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return 0, stage.Errorf(stage.Init, "start the target", "", err)
	}
	l.errPipe = p[1]
	// No descriptor opened meanwhile escapes close-on-exec (the child
	// marks every one anyway).
	syscall.ForkLock.Lock()
	pid, errno := forkTarget(l)
	syscall.ForkLock.Unlock()
	unix.Close(p[1])
	if l.landlockFD >= 0 {
		unix.Close(l.landlockFD)
	}
	if l.pidsFD >= 0 {
		unix.Close(l.pidsFD) // only the child joins
	}
	if errno != 0 {
		unix.Close(p[0])
		return 0, stage.Errorf(stage.Init, "fork the target", "", errno)
	}
	f, failed, err := rawclone.ReadFailure(p[0])
	unix.Close(p[0])
	if err != nil {
		return pid, stage.Errorf(stage.Init, "start the target", "", err)
	}
	if !failed {
		return pid, nil
	}
	return pid, st.childError(f)
}

// childError turns the child's failure record into the Error the parent
// reads: which step, on which path, and what to do where that is known.
func (st *state) childError(f rawclone.Failure) *stage.Error {
	if f.Step >= numSteps {
		return &stage.Error{Stage: stage.Init, Op: "start the target", Msg: fmt.Sprintf("unknown step %d", f.Step)}
	}
	l, errno := st.target, unix.Errno(f.Errno)
	e := &stage.Error{Stage: stage.Init, Op: stepNames[f.Step], Errno: errno}
	limit := func(rs []rlimitSet) {
		if int(f.Index) < len(rs) {
			r := rs[f.Index]
			e.Msg = fmt.Sprintf("RLIMIT_%s=%d: %v", r.name, r.lim.Cur, errno)
		}
	}
	switch f.Step {
	case stepJoinPids:
		e.Msg = fmt.Sprintf("write 0 to the cgroup.procs of the job's pids cgroup (fd %d): %v", stage.PidsFD, errno)
		e.Hint = "--pids is enforced by that cgroup; nothing ran"
	case stepSignals:
		e.Msg = fmt.Sprintf("set signal %d to its default: %v", f.Index, errno)
	case stepConsole:
		e.Path = "/dev/pts"
	case stepRlimits:
		limit(l.rlimits)
	case stepLateRlimits:
		limit(l.late)
	case stepChdir:
		e.Path = st.s.Cwd
	case stepCwdOutside:
		e.Path = st.s.Cwd
		e.Msg = "the working directory lies outside the sandbox's root"
	case stepLandlock:
		e.Msg = fmt.Sprintf("landlock_restrict_self: %v", errno)
	case stepBoundingSet:
		e.Msg = fmt.Sprintf("drop capability %d from the bounding set: %v", f.Index, errno)
	case stepAmbient:
		e.Msg = fmt.Sprintf("clear ambient capabilities: %v", errno)
	case stepCapset:
		e.Msg = fmt.Sprintf("capset: %v", errno)
	case stepSeccompNNP:
		e.Msg = seccomp.ErrNoNewPrivs.Error()
	case stepSeccomp:
		e.Msg = fmt.Sprintf("seccomp: install filter (%d instructions): %v", l.fprog.Len, errno)
	case stepExecve:
		e.Path = st.s.Path
		switch {
		case errors.Is(errno, unix.ENOENT):
			e.Hint = "it is not in the sandbox: is it in the closure of the roots you named?"
		case errors.Is(errno, unix.EACCES):
			e.Hint = "it is not executable, or lies on a noexec mount"
		}
	}
	return e
}
