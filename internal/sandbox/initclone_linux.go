package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/sandbox/rawclone"
)

// The init's own clone, for a job that runs as the caller (no Identity):
// the init shares closet's memory until its execve (rawclone.VforkFlags),
// where os/exec would copy closet's page tables. os/exec cannot share
// them when it clones a new user namespace: its parent writes the child's
// uid and gid maps while the child waits, so it forks. Here the child
// writes its own maps, as bubblewrap and `unshare -r` do: a process may
// map its own euid and egid, once setgroups is denied, in the user
// namespace it created. The child is one function of raw system calls
// over data prepared before the clone (initChild), the pattern of Go's
// syscall.forkAndExecInChild1 and of the target's child (initstage's
// confineAndExec), and does what os/exec's child did, in its order.
//
// Why: the fork cost closet 0.18 ms of copying page tables, 0.15 ms of
// tearing the copy down at the execve and 0.15-0.3 ms of copy-on-write
// faults afterwards, per job: 35-40 % of `closet serve`'s CPU.

// Steps of the init's child, in the order it takes them; a failure
// crosses the error pipe as its step and errno.
const (
	initStepSetgroups uint32 = iota
	initStepUIDMap
	initStepGIDMap
	initStepSession
	initStepCaps
	initStepAmbient
	initStepPdeathsig
	initStepParent
	initStepFDs
	initStepExecve
)

// initStepNames name each step in the error Launch returns.
var initStepNames = [...]string{
	initStepSetgroups: "deny setgroups (write /proc/self/setgroups)",
	initStepUIDMap:    "map its uid (write /proc/self/uid_map)",
	initStepGIDMap:    "map its gid (write /proc/self/gid_map)",
	initStepSession:   "start a session (setsid)",
	initStepCaps:      "make its capabilities inheritable (capset)",
	initStepAmbient:   "raise its ambient capabilities",
	initStepParent:    "check that closet is still there (read /proc/self/stat)",
	initStepPdeathsig: "set the parent-death signal",
	initStepFDs:       "lay out its descriptors",
	initStepExecve:    "execve",
}

// atFDCWD is AT_FDCWD (-100) as a system call's argument.
const atFDCWD = ^uintptr(99)

// cloneArgs is struct clone_args (clone3).
type cloneArgs struct {
	flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls, setTID, setTIDSize, cgroup uint64
}

// initLaunch is everything the init's child needs, prepared by
// prepareInitClone so that the child only reads it (but statBuf).
type initLaunch struct {
	path       *byte
	argv, envv []*byte
	// The maps: /proc/self/{setgroups,uid_map,gid_map} and their lines.
	setgroupsPath, uidMapPath, gidMapPath *byte
	deny, uidMap, gidMap                  []byte
	// The capabilities made inheritable and ambient (bit masks by word,
	// and the list).
	capInh  [2]uint32
	ambient []uintptr
	// ppid is closet's pid; statPath is /proc/self/stat, read into
	// statBuf (the child's alone) to learn its parent after
	// PR_SET_PDEATHSIG.
	ppid     uintptr
	statPath *byte
	statBuf  []byte
	// fd is the init's fds 0.. as os/exec lays them out: fd[i] becomes i,
	// -1 is closed. nextfd is above every one of them.
	fd     []int
	nextfd int
	// errPipe is the write end of the error pipe (close-on-exec).
	errPipe int
	// trap and a1, a2: the clone (flags) or clone3 (args) call.
	trap, a1, a2 uintptr
	args         cloneArgs
}

// useInitClone says whether the init is cloned by startInit rather than
// os/exec: where rawclone can share memory, and the job runs as the
// caller (an Identity needs its maps written by the parent) whose real
// ids are its effective ones (a process may map only its euid and egid
// itself; the maps name the real ones).
func useInitClone(o LaunchOptions) bool {
	return rawclone.VforkFlags != 0 && o.Identity == nil &&
		os.Getuid() == os.Geteuid() && os.Getgid() == os.Getegid()
}

// startInit starts cmd (built for os/exec by Launch: path, argv, env,
// stdio, ExtraFiles and SysProcAttr's clone flags, maps, ambient
// capabilities and cgroup) with the init's own clone. It is called on the
// locked thread that will wait for the init (Pdeathsig). An error names
// the child's step that failed; then the child is reaped and nothing ran.
func startInit(cmd *exec.Cmd) (*os.Process, error) {
	l, closeAfter, err := prepareInitClone(cmd)
	defer func() {
		for _, f := range closeAfter {
			f.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	// As syscall.forkExec: no other fork copies the error pipe while it
	// is open here, and no fd is half-made (not yet close-on-exec) while
	// this one forks.
	syscall.ForkLock.Lock()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		syscall.ForkLock.Unlock()
		return nil, fmt.Errorf("error pipe: %w", err)
	}
	l.errPipe = p[1]
	l.nextfd = max(l.nextfd, p[1]+1)
	pid, errno := cloneInit(l)
	syscall.ForkLock.Unlock()
	runtime.KeepAlive(cmd) // its files' fds are in l.fd until here
	unix.Close(p[1])
	defer unix.Close(p[0])
	if errno != 0 {
		return nil, os.NewSyscallError("clone", errno)
	}
	// The child has exec'd (EOF: the pipe closed with it) or exited.
	f, failed, rerr := rawclone.ReadFailure(p[0])
	if !failed {
		return os.FindProcess(pid) // a pidfd, as os/exec's Process holds
	}
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
			break
		}
	}
	if rerr != nil {
		return nil, fmt.Errorf("the init's child reported nothing readable (%v); it ended with %v", rerr, ws)
	}
	step := "step " + strconv.Itoa(int(f.Step))
	if int(f.Step) < len(initStepNames) {
		step = initStepNames[f.Step]
	}
	if f.Step == initStepExecve {
		step += " " + cmd.Path
	}
	return nil, &initChildError{step: step, errno: syscall.Errno(f.Errno)}
}

// initChildError is a step of the init's child that failed: the clone
// itself worked (so cloneHint does not apply).
type initChildError struct {
	step  string
	errno syscall.Errno
}

func (e *initChildError) Error() string {
	return "the init's child could not " + e.step + ": " + e.errno.Error()
}

func (e *initChildError) Unwrap() error { return e.errno }

// prepareInitClone lays out what the init's child needs from cmd. The
// files returned are the parent's copies of /dev/null (os/exec's stand-in
// for a nil stdin or stdout), to close once the child has them.
func prepareInitClone(cmd *exec.Cmd) (l *initLaunch, closeAfter []*os.File, err error) {
	sys := cmd.SysProcAttr
	if len(sys.UidMappings) != 1 || len(sys.GidMappings) != 1 || sys.UidMappings[0].Size != 1 || sys.GidMappings[0].Size != 1 ||
		sys.UidMappings[0].HostID != os.Geteuid() || sys.GidMappings[0].HostID != os.Getegid() {
		return nil, nil, fmt.Errorf("the init's own clone maps exactly its caller's euid and egid, not %v %v", sys.UidMappings, sys.GidMappings)
	}
	l = &initLaunch{}
	if l.path, err = syscall.BytePtrFromString(cmd.Path); err != nil {
		return nil, nil, err
	}
	if l.argv, err = syscall.SlicePtrFromStrings(cmd.Args); err != nil {
		return nil, nil, err
	}
	if l.envv, err = syscall.SlicePtrFromStrings(cmd.Env); err != nil {
		return nil, nil, err
	}
	l.setgroupsPath, _ = syscall.BytePtrFromString("/proc/self/setgroups")
	l.uidMapPath, _ = syscall.BytePtrFromString("/proc/self/uid_map")
	l.gidMapPath, _ = syscall.BytePtrFromString("/proc/self/gid_map")
	l.statPath, _ = syscall.BytePtrFromString("/proc/self/stat")
	l.deny = []byte("deny")
	u, g := sys.UidMappings[0], sys.GidMappings[0]
	l.uidMap = fmt.Appendf(nil, "%d %d 1\n", u.ContainerID, u.HostID)
	l.gidMap = fmt.Appendf(nil, "%d %d 1\n", g.ContainerID, g.HostID)
	for _, c := range sys.AmbientCaps {
		l.capInh[c/32] |= 1 << (c % 32)
	}
	l.ambient = sys.AmbientCaps
	l.ppid = uintptr(os.Getpid())
	l.statBuf = make([]byte, 512)

	// fds 0-2 as os/exec: a nil reader or writer is /dev/null, a nil
	// *os.File is closed; then ExtraFiles, a nil entry closed.
	var null [2]*os.File
	stdio := func(v any, i int) (*os.File, error) {
		if v != nil {
			f, ok := v.(*os.File)
			if !ok {
				return nil, fmt.Errorf("the init's stdio must be files, not %T", v)
			}
			return f, nil
		}
		if null[min(i, 1)] == nil {
			flag := os.O_WRONLY
			if i == 0 {
				flag = os.O_RDONLY
			}
			f, err := os.OpenFile(os.DevNull, flag, 0)
			if err != nil {
				return nil, err
			}
			null[min(i, 1)] = f
			closeAfter = append(closeAfter, f)
		}
		return null[min(i, 1)], nil
	}
	files := make([]*os.File, 0, 3+len(cmd.ExtraFiles))
	for i, v := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		f, err := stdio(v, i)
		if err != nil {
			return nil, closeAfter, err
		}
		files = append(files, f)
	}
	files = append(files, cmd.ExtraFiles...)
	l.fd = make([]int, len(files))
	l.nextfd = len(files)
	for i, f := range files {
		// Fd, as os.StartProcess: a nil *os.File is -1, and the file is
		// made blocking, as the init expects its descriptors.
		l.fd[i] = int(f.Fd())
		l.nextfd = max(l.nextfd, l.fd[i]+1)
	}

	flags := sys.Cloneflags | rawclone.VforkFlags
	if sys.UseCgroupFD {
		l.args = cloneArgs{flags: uint64(flags) | unix.CLONE_INTO_CGROUP, exitSignal: uint64(unix.SIGCHLD), cgroup: uint64(sys.CgroupFD)}
		l.trap, l.a1, l.a2 = unix.SYS_CLONE3, uintptr(unsafe.Pointer(&l.args)), unsafe.Sizeof(l.args)
	} else {
		l.trap, l.a1 = unix.SYS_CLONE, flags|uintptr(unix.SIGCHLD)
	}
	return l, closeAfter, nil
}

// cloneInit clones the init's child and returns its pid; an error is the
// clone's own, the child's come on l.errPipe. The child shares closet's
// memory and this goroutine's stack until its execve, while this thread
// waits, as in initstage's forkTarget: the child returns from
// rawclone.Clone into this frame and never returns from it. It has its own
// fd table, signal handlers, credentials and namespaces.
//
//go:noinline
//go:norace
//go:nocheckptr
func cloneInit(l *initLaunch) (pid int, err syscall.Errno) {
	rawclone.BeforeFork()
	r, e := rawclone.Clone(l.trap, l.a1, l.a2)
	if e != 0 || r != 0 {
		rawclone.AfterFork()
		return int(r), syscall.Errno(e)
	}
	initChild(l)
	return 0, 0 // never reached
}

// initChild is the init's child: it maps its ids, takes a session, its
// capabilities and the parent-death signal, lays out its descriptors and
// execve's the init, or writes the step that failed on the error pipe and
// exits. Like the target's child (confineAndExec), it must not allocate,
// grow its stack or call anything but raw system calls, and it writes only
// its own stack, l.statBuf and l.fd and l.errPipe, which closet no longer
// reads: closet's other threads run meanwhile.
//
//go:nosplit
//go:norace
//go:nocheckptr
func initChild(l *initLaunch) {
	var (
		f     rawclone.Failure
		errno syscall.Errno
		r     uintptr
		i     int
		fd    int
		hdr   unix.CapUserHeader
		data  [2]unix.CapUserData
	)
	// The maps, as os/exec's parent wrote them: setgroups denied first,
	// which an unprivileged gid map needs; each line maps the caller's
	// own id, which the process that created the namespace may.
	f.Step = initStepSetgroups
	if errno = writeProcFile(l.setgroupsPath, l.deny); errno != 0 {
		goto fail
	}
	f.Step = initStepUIDMap
	if errno = writeProcFile(l.uidMapPath, l.uidMap); errno != 0 {
		goto fail
	}
	f.Step = initStepGIDMap
	if errno = writeProcFile(l.gidMapPath, l.gidMap); errno != 0 {
		goto fail
	}
	f.Step = initStepSession
	if _, _, errno = syscall.RawSyscall(unix.SYS_SETSID, 0, 0, 0); errno != 0 {
		goto fail
	}
	rawclone.AfterForkInChild()
	// The ambient capabilities: each must be permitted (it is: the
	// child holds every capability in its new namespace) and inheritable.
	f.Step = initStepCaps
	hdr.Version = unix.LINUX_CAPABILITY_VERSION_3
	if _, _, errno = syscall.RawSyscall(unix.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		goto fail
	}
	data[0].Inheritable |= l.capInh[0]
	data[1].Inheritable |= l.capInh[1]
	if _, _, errno = syscall.RawSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		goto fail
	}
	f.Step = initStepAmbient
	for i = 0; i < len(l.ambient); i++ {
		if _, _, errno = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, l.ambient[i], 0, 0, 0); errno != 0 {
			goto fail
		}
	}
	// The parent-death signal: the init dies with the thread that forked
	// it (Launch keeps that thread locked until the init is reaped). If
	// that thread is gone already, the child has been handed to another
	// parent: then it runs nothing. getppid cannot tell (0 for the first
	// process of a pid namespace); /proc/self/stat, of the host's /proc,
	// gives the parent's host pid.
	f.Step = initStepPdeathsig
	if _, _, errno = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0, 0); errno != 0 {
		goto fail
	}
	f.Step = initStepParent
	if r, errno = readParent(l.statPath, l.statBuf); errno != 0 {
		goto fail
	}
	if r != l.ppid {
		errno = unix.ESRCH
		goto fail
	}
	// The descriptors, as os/exec lays them out: first every fd[i] below
	// i (and the error pipe) moves above them all, then each fd[i] becomes
	// i without close-on-exec, and a -1 closes i.
	f.Step = initStepFDs
	fd = l.nextfd
	if l.errPipe < len(l.fd) {
		if _, _, errno = syscall.RawSyscall(unix.SYS_DUP3, uintptr(l.errPipe), uintptr(fd), unix.O_CLOEXEC); errno != 0 {
			goto fail
		}
		l.errPipe = fd // not read by closet until the child is gone
		fd++
	}
	for i = 0; i < len(l.fd); i++ {
		if l.fd[i] >= 0 && l.fd[i] < i {
			if _, _, errno = syscall.RawSyscall(unix.SYS_DUP3, uintptr(l.fd[i]), uintptr(fd), unix.O_CLOEXEC); errno != 0 {
				goto fail
			}
			l.fd[i] = fd
			fd++
		}
	}
	for i = 0; i < len(l.fd); i++ {
		switch {
		case l.fd[i] == -1:
			syscall.RawSyscall(unix.SYS_CLOSE, uintptr(i), 0, 0)
		case l.fd[i] == i:
			if _, _, errno = syscall.RawSyscall(unix.SYS_FCNTL, uintptr(i), unix.F_SETFD, 0); errno != 0 {
				goto fail
			}
		default:
			if _, _, errno = syscall.RawSyscall(unix.SYS_DUP3, uintptr(l.fd[i]), uintptr(i), 0); errno != 0 {
				goto fail
			}
		}
	}
	f.Step = initStepExecve
	_, _, errno = syscall.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(l.path)), uintptr(unsafe.Pointer(&l.argv[0])), uintptr(unsafe.Pointer(&l.envv[0])))

fail:
	f.Errno = uint32(errno)
	rawclone.Fail(l.errPipe, &f)
}

// writeProcFile writes b to the file at path in one write. It runs in the
// init's child: see initChild.
//
//go:nosplit
//go:norace
//go:nocheckptr
func writeProcFile(path *byte, b []byte) syscall.Errno {
	fd, _, errno := syscall.RawSyscall6(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(path)), unix.O_WRONLY|unix.O_CLOEXEC, 0, 0, 0)
	if errno != 0 {
		return errno
	}
	n, _, errno := syscall.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	syscall.RawSyscall(unix.SYS_CLOSE, fd, 0, 0)
	if errno == 0 && n != uintptr(len(b)) {
		errno = unix.EIO
	}
	return errno
}

// readParent reads the parent's pid from /proc/self/stat (path) into buf:
// the fourth field, after "pid (comm) state", where comm may hold any
// byte but ends at the last ')'. It runs in the init's child: see
// initChild.
//
//go:nosplit
//go:norace
//go:nocheckptr
func readParent(path *byte, buf []byte) (uintptr, syscall.Errno) {
	fd, _, errno := syscall.RawSyscall6(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(path)), unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	n, _, errno := syscall.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
	syscall.RawSyscall(unix.SYS_CLOSE, fd, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	end := -1
	for i := 0; i < int(n); i++ {
		if buf[i] == ')' {
			end = i
		}
	}
	// ") S ppid "
	if end < 0 || end+4 >= int(n) {
		return 0, unix.EINVAL
	}
	var ppid uintptr
	for i := end + 4; i < int(n) && buf[i] >= '0' && buf[i] <= '9'; i++ {
		ppid = ppid*10 + uintptr(buf[i]-'0')
	}
	return ppid, 0
}
