package initstage

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/sandbox/rawclone"
)

// cloneFlags make the target's child share the init's memory, and the
// init's calling thread wait, until the child's execve or exit: no copy of
// the init's page tables, no copy-on-write faults in either process, and
// nothing to tear down at the execve (see forkTarget). Where rawclone
// cannot share memory, a plain fork: the child gets a copy.
const cloneFlags = rawclone.VforkFlags | uintptr(unix.SIGCHLD)

// The target is a child of the init forked with a raw clone, not a second
// Go program: between the fork and execve it runs confineAndExec only,
// which makes raw system calls on what prepareTarget laid out in memory
// beforehand, and allocates nothing. The pattern is the one of Go's own
// syscall.forkAndExecInChild1: the runtime's fork hooks around the clone,
// one function with loops over prepared arrays in the child; the clone
// and the fork hooks are package rawclone's, shared with the init's own
// clone (sandbox.Launch).

// Steps of the child, in the order it takes them; a failure crosses the
// error pipe as its step, errno and an index into the step's array.
const (
	stepJoinPids uint32 = iota
	stepCgroupNS
	stepSignals
	stepConsole
	stepSession
	stepUID
	stepRlimits
	stepChdir
	stepCwdOutside
	stepLandlock
	stepCloseFDs
	stepBoundingSet
	stepAmbient
	stepCapset
	stepNoNewPrivs
	stepSeccompNNP
	stepSeccomp
	stepLateRlimits
	stepExecve
	numSteps
)

// rlimitSet is one resource limit to set, soft and hard alike.
type rlimitSet struct {
	name     string
	resource uintptr
	lim      unix.Rlimit
}

// launch is everything the child needs, prepared by the init (see
// prepareTarget) so that the child only reads it: C strings, pointer
// arrays and numbers.
type launch struct {
	path *byte   // the target, NUL-terminated
	argv []*byte // NUL-terminated strings, then nil
	envv []*byte
	cwd  *byte
	// cwdBuf receives getcwd's answer in the child (its own copy of it).
	cwdBuf []byte
	// tty is the pty slave to make fds 0-2 and the controlling terminal,
	// or -1.
	tty int
	// uid, when setUID, becomes the real, effective and saved uid.
	setUID bool
	uid    uintptr
	// rlimits are set early; late ones last before execve (lateRlimits).
	rlimits, late []rlimitSet
	// landlockFD is a Landlock ruleset to restrict the child to, or -1.
	landlockFD    int
	landlockFlags uint32
	// lastCap is the highest capability number the kernel knows.
	lastCap uintptr
	capHdr  unix.CapUserHeader
	capData [2]unix.CapUserData
	// fprog is the seccomp filter, or nil for none.
	fprog *unix.SockFprog
	// errPipe is the write end of the error pipe (close-on-exec).
	errPipe int
	// pidsFD is the job's pids cgroup.procs (stage.PidsFD), or -1; the
	// child writes joinSelf ("0": the writer) to it.
	pidsFD   int
	joinSelf [1]byte
	// defaultSigs are the signals the child sets to their default with
	// sigDfl (a zeroed struct sigaction: SIG_DFL, no flags, no mask):
	// every one but SIGKILL and SIGSTOP. noSigs is the empty signal mask
	// it then takes.
	defaultSigs []uintptr
	sigDfl      [4]uint64
	noSigs      uint64
}

// forkTarget clones the child that becomes the target and returns its
// pid; an error is the clone's own. The child's failures come on
// l.errPipe.
//
// On amd64 the child shares the init's memory and this goroutine's stack
// until its execve (CLONE_VM|CLONE_VFORK, as Go's own forkAndExecInChild
// does), while this thread waits: the child returns from rawclone.Clone into
// this frame and never returns from it (confineAndExec ends in execve or
// exit), and rawclone.Clone keeps its own return address off the stack.
// Elsewhere it is a plain fork (rawclone.VforkFlags is 0).
// Either way the child has its own fd table, fs (cwd, root), signal
// handlers, credentials, rlimits and session: it is its own process, not a
// thread of the init, so nothing it sets reaches the init.
//
//go:noinline
//go:norace
//go:nocheckptr
func forkTarget(l *launch) (pid int, err syscall.Errno) {
	rawclone.BeforeFork()
	r, e := rawclone.Clone(unix.SYS_CLONE, cloneFlags, 0)
	if e != 0 || r != 0 {
		rawclone.AfterFork()
		return int(r), syscall.Errno(e)
	}
	rawclone.AfterForkInChild()
	confineAndExec(l)
	return 0, 0 // never reached
}

// confineAndExec is the child: it confines itself in the order below and
// execve's the target, or writes which step failed on the error pipe and
// exits. Only this thread exists in the child, so per-thread and
// per-process attributes are the same here, and none reaches the init.
//
// It must not allocate, grow its stack, or call anything but raw system
// calls: the other threads of the runtime are not in the child, and the
// runtime's locks may be held by them forever (hence nosplit, norace).
// Where it shares the init's memory (cloneFlags) it writes only its own
// stack and what the init left for it alone (l.cwdBuf): the init's other
// threads run meanwhile.
//
//go:nosplit
//go:norace
//go:nocheckptr
func confineAndExec(l *launch) {
	var (
		f     rawclone.Failure
		errno syscall.Errno
		r     uintptr
		i     int
		c     uintptr
	)
	// The job's own pids cgroup, first: from here on each of its tasks
	// counts against the job's allowance, and only the job's do. A
	// child that cannot join runs nothing.
	if l.pidsFD >= 0 {
		f.Step = stepJoinPids
		if _, _, errno = syscall.RawSyscall(unix.SYS_WRITE, uintptr(l.pidsFD), uintptr(unsafe.Pointer(&l.joinSelf[0])), 1); errno != 0 {
			goto fail
		}
	}
	// A cgroup namespace rooted where the job now is, in every hierarchy:
	// its /proc/self/cgroup reads "/" instead of the host's names for its
	// cgroups (closet's pid and the job's number under cgroup v1, where
	// the init is placed after its clone, and the pids cgroup's "job"
	// part it has just joined). Before the capabilities are dropped:
	// it takes CAP_SYS_ADMIN over the job's user namespace.
	f.Step = stepCgroupNS
	if _, _, errno = syscall.RawSyscall(unix.SYS_UNSHARE, unix.CLONE_NEWCGROUP, 0, 0); errno != 0 {
		goto fail
	}
	// Every signal starts at its default and unblocked, as for a process
	// nobody started specially: an ignored disposition and the signal
	// mask outlive execve, and both would otherwise come down from the
	// init (which ignores some: dropSignals) and from whoever started
	// closet (the runtime restores the mask closet was started with).
	f.Step = stepSignals
	for i = 0; i < len(l.defaultSigs); i++ {
		f.Index = uint32(l.defaultSigs[i])
		if _, _, errno = syscall.RawSyscall6(unix.SYS_RT_SIGACTION, l.defaultSigs[i], uintptr(unsafe.Pointer(&l.sigDfl)), 0, 8, 0, 0); errno != 0 {
			goto fail
		}
	}
	f.Index = 0
	if _, _, errno = syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&l.noSigs)), 0, 8, 0, 0); errno != 0 {
		goto fail
	}
	// The console: the pty slave becomes stdin, stdout and stderr.
	if l.tty >= 0 {
		f.Step = stepConsole
		for i = 0; i < 3; i++ {
			if _, _, errno = syscall.RawSyscall(unix.SYS_DUP3, uintptr(l.tty), uintptr(i), 0); errno != 0 {
				goto fail
			}
		}
	}
	// A session of its own: TIOCSTI and job-control signals cannot reach
	// the terminal closet was started from. With a pty, the pty becomes
	// its controlling terminal.
	f.Step = stepSession
	if _, _, errno = syscall.RawSyscall(unix.SYS_SETSID, 0, 0, 0); errno != 0 {
		goto fail
	}
	if l.tty >= 0 {
		if _, _, errno = syscall.RawSyscall(unix.SYS_IOCTL, 0, unix.TIOCSCTTY, 0); errno != 0 {
			goto fail
		}
	}
	// The job's uid as its real uid too (see takeIdentity).
	if l.setUID {
		f.Step = stepUID
		if _, _, errno = syscall.RawSyscall(unix.SYS_SETRESUID, l.uid, l.uid, l.uid); errno != 0 {
			goto fail
		}
	}
	f.Step = stepRlimits
	if f.Index, errno = setRlimits(l.rlimits); errno != 0 {
		goto fail
	}
	// The job's directory, which must lie inside the root: a directory
	// reachable only through a stale reference to the old root reads as
	// "(unreachable)...", not "/...".
	f.Step = stepChdir
	if _, _, errno = syscall.RawSyscall(unix.SYS_CHDIR, uintptr(unsafe.Pointer(l.cwd)), 0, 0); errno != 0 {
		goto fail
	}
	if _, _, errno = syscall.RawSyscall(unix.SYS_GETCWD, uintptr(unsafe.Pointer(&l.cwdBuf[0])), uintptr(len(l.cwdBuf)), 0); errno != 0 {
		goto fail
	}
	if l.cwdBuf[0] != '/' {
		f.Step = stepCwdOutside
		goto fail
	}
	// Landlock: before the capability drop, since without no_new_privs
	// enforcing needs CAP_SYS_ADMIN.
	if l.landlockFD >= 0 {
		f.Step = stepLandlock
		if _, _, errno = syscall.RawSyscall(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(l.landlockFD), uintptr(l.landlockFlags), 0); errno != 0 {
			goto fail
		}
	}
	// Every descriptor above stderr closes at execve; the error pipe stays
	// usable until then, which is how the init learns the target started.
	f.Step = stepCloseFDs
	if _, _, errno = syscall.RawSyscall(unix.SYS_CLOSE_RANGE, 3, ^uintptr(0), unix.CLOSE_RANGE_CLOEXEC); errno != 0 {
		goto fail
	}
	// Capabilities: the bounding set (needs CAP_SETPCAP, so first), the
	// ambient set, then effective, permitted and inheritable.
	f.Step = stepBoundingSet
	for c = 0; c <= l.lastCap; c++ {
		f.Index = uint32(c)
		if _, _, errno = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0, 0, 0, 0); errno != 0 && errno != unix.EINVAL {
			goto fail
		}
	}
	f.Index = 0
	f.Step = stepAmbient
	if _, _, errno = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); errno != 0 {
		goto fail
	}
	f.Step = stepCapset
	if _, _, errno = syscall.RawSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&l.capHdr)), uintptr(unsafe.Pointer(&l.capData[0])), 0); errno != 0 {
		goto fail
	}
	f.Step = stepNoNewPrivs
	if _, _, errno = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); errno != 0 {
		goto fail
	}
	// seccomp last but the late rlimits: the filter allows what is left
	// (prlimit64 on itself, write, exit, execve).
	if l.fprog != nil {
		f.Step = stepSeccompNNP
		if r, _, errno = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0, 0); errno != 0 || r != 1 {
			goto fail
		}
		f.Step = stepSeccomp
		if _, _, errno = syscall.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(l.fprog))); errno != 0 {
			goto fail
		}
	}
	f.Step = stepLateRlimits
	if f.Index, errno = setRlimits(l.late); errno != 0 {
		goto fail
	}
	f.Step = stepExecve
	_, _, errno = syscall.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(l.path)), uintptr(unsafe.Pointer(&l.argv[0])), uintptr(unsafe.Pointer(&l.envv[0])))

fail:
	f.Errno = uint32(errno)
	rawclone.Fail(l.errPipe, &f)
}

// setRlimits sets each limit of rs on the calling process (prlimit64 on
// pid 0, which the seccomp policy allows), soft and hard alike, so the job
// cannot raise them again. It returns the index of the one that failed.
// It runs in the child: see confineAndExec.
//
//go:nosplit
//go:norace
//go:nocheckptr
func setRlimits(rs []rlimitSet) (uint32, syscall.Errno) {
	for i := range rs {
		if _, _, errno := syscall.RawSyscall6(unix.SYS_PRLIMIT64, 0, rs[i].resource, uintptr(unsafe.Pointer(&rs[i].lim)), 0, 0, 0); errno != 0 {
			return uint32(i), errno
		}
	}
	return 0, 0
}
