package check

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Attacks on the syscall surface: other ABIs, unknown and refused calls,
// privileges across execve, and what persists between jobs.

// childAttack runs mode in a child process that the seccomp filter should
// kill with SIGSYS.
func childAttack(mode string) func(*Params) Result {
	return func(*Params) Result {
		if !archAsm {
			return skipped("not applicable: %s is an x86_64 attack", mode)
		}
		cmd := exec.Command("/proc/self/exe", "__attack", mode)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				if ws.Signal() == unix.SIGSYS {
					return blocked("the child was killed by SIGSYS")
				}
				return blocked("the child was killed by %v", ws.Signal())
			}
		}
		if err != nil && ee == nil {
			return skipped("start child: %v", err)
		}
		return escaped("the child survived the call: %q (%v)", strings.TrimSpace(string(out)), err)
	}
}

func unknownSyscall(*Params) Result {
	var got []string
	for _, nr := range []uintptr{600, 1000, 4095} {
		e := raw(nr)
		if e != unix.ENOSYS {
			return escaped("syscall %d: %s (want ENOSYS)", nr, errName(e))
		}
		got = append(got, strconv.Itoa(int(nr)))
	}
	return blocked("syscalls %s: ENOSYS", strings.Join(got, ", "))
}

func clone3(*Params) Result {
	// struct clone_args, 88 bytes: flags = CLONE_NEWUSER, exit_signal = SIGCHLD.
	var args [11]uint64
	args[0] = unix.CLONE_NEWUSER
	args[4] = uint64(unix.SIGCHLD)
	r, _, e := unix.RawSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args[0])), unsafe.Sizeof(args), 0)
	if e == 0 {
		if r == 0 {
			unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
		}
		var ws unix.WaitStatus
		unix.Wait4(int(r), &ws, 0, nil)
		return escaped("clone3(CLONE_NEWUSER) made pid %d", r)
	}
	if e != unix.ENOSYS {
		return blocked("clone3: %s (want ENOSYS, so libc falls back to clone)", errName(e))
	}
	return blocked("clone3: ENOSYS")
}

func ioUring(*Params) Result {
	var params [120]byte
	return allFail(
		try{"io_uring_setup", raw(unix.SYS_IO_URING_SETUP, 8, uintptr(unsafe.Pointer(&params[0])))},
		try{"io_uring_enter", raw(unix.SYS_IO_URING_ENTER, 0, 0, 0, 0, 0, 0)},
		try{"io_uring_register", raw(unix.SYS_IO_URING_REGISTER, 0, 0, 0, 0)},
	)
}

func userfaultfd(*Params) Result {
	return allFail(
		try{"userfaultfd", raw(unix.SYS_USERFAULTFD, unix.O_CLOEXEC)},
		try{"open /dev/userfaultfd", openErr("/dev/userfaultfd", unix.O_RDWR, 0)},
	)
}

func bpfAttempt(*Params) Result {
	// BPF_MAP_CREATE of a small array map.
	attr := [18]uint32{2, 4, 4, 1}
	return allFail(try{"bpf(BPF_MAP_CREATE)", raw(unix.SYS_BPF, 0, uintptr(unsafe.Pointer(&attr[0])), unsafe.Sizeof(attr))})
}

func perfEventOpen(*Params) Result {
	attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK, Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{}))}
	attr.Bits = unix.PerfBitDisabled | unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	return allFail(try{"perf_event_open(cpu-clock, self)", err})
}

func modules(*Params) Result {
	return allFail(
		try{"init_module", raw(unix.SYS_INIT_MODULE, 0, 0, cstr(""))},
		try{"finit_module", raw(unix.SYS_FINIT_MODULE, ^uintptr(0), cstr(""), 0)},
		try{"delete_module", raw(unix.SYS_DELETE_MODULE, cstr("closet_none"), 0)},
		try{"kexec_load", raw(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0)},
		try{"kexec_file_load", raw(unix.SYS_KEXEC_FILE_LOAD, ^uintptr(0), ^uintptr(0), 0, 0, 0)},
	)
}

func rebootAttempt(*Params) Result {
	// LINUX_REBOOT_CMD_CAD_OFF: harmless if it ever got through.
	return allFail(try{"reboot(CAD_OFF)", raw(unix.SYS_REBOOT, unix.LINUX_REBOOT_MAGIC1, unix.LINUX_REBOOT_MAGIC2, unix.LINUX_REBOOT_CMD_CAD_OFF, 0)})
}

func syslogAttempt(*Params) Result {
	buf := make([]byte, 4096)
	_, err := unix.Klogctl(3, buf)   // SYSLOG_ACTION_READ_ALL
	_, err2 := unix.Klogctl(10, nil) // SYSLOG_ACTION_SIZE_BUFFER
	return allFail(
		try{"syslog(READ_ALL)", err},
		try{"syslog(SIZE_BUFFER)", err2},
		try{"open /dev/kmsg", openErr("/dev/kmsg", unix.O_RDONLY, 0)},
	)
}

func openByHandle(p *Params) Result {
	f := storeFile(p)
	if f == "" {
		f = "/etc/passwd"
	}
	h, mnt, err := unix.NameToHandleAt(unix.AT_FDCWD, f, 0)
	if err != nil {
		return allFail(try{"name_to_handle_at " + f, err})
	}
	mfd, err := unix.Open(filepath.Dir(f), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return skipped("open %s: %v", filepath.Dir(f), err)
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, h, unix.O_RDONLY)
	if err == nil {
		unix.Close(fd)
	}
	return allFail(try{fmt.Sprintf("open_by_handle_at (handle of %s, mount %d, from name_to_handle_at)", f, mnt), err})
}

func personalityLDT(*Params) Result {
	return allFail(append([]try{
		{"personality(ADDR_NO_RANDOMIZE)", raw(unix.SYS_PERSONALITY, 0x0040000)},
		{"personality(MMAP_PAGE_ZERO)", raw(unix.SYS_PERSONALITY, 0x0100000)},
	}, x86PortTries()...)...)
}

func sethostname(*Params) Result {
	return allFail(
		try{"sethostname", unix.Sethostname([]byte("pwned"))},
		try{"setdomainname", unix.Setdomainname([]byte("pwned"))},
	)
}

func noNewPrivs(*Params) Result {
	v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil || v != 1 {
		return escaped("PR_GET_NO_NEW_PRIVS: %d %v", v, err)
	}
	sm, _ := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0)
	if sm != 2 {
		return escaped("PR_GET_SECCOMP: %d, want 2", sm)
	}
	return allFail(
		try{"prctl(PR_SET_NO_NEW_PRIVS, 0)", unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 0, 0, 0, 0)},
		try{"prctl(PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN)", unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, unix.CAP_SYS_ADMIN, 0, 0)},
	)
}

func setuidRoot(*Params) Result {
	uid := os.Getuid()
	_, _, e1 := unix.RawSyscall(unix.SYS_SETUID, 0, 0, 0)
	_, _, e2 := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0)
	_, _, e3 := unix.RawSyscall(unix.SYS_SETRESGID, 0, 0, 0)
	g := [1]uint32{0}
	_, _, e4 := unix.RawSyscall(unix.SYS_SETGROUPS, 1, uintptr(unsafe.Pointer(&g[0])), 0)
	r := allFail(
		try{"setuid(0)", sysErr(0, e1)}, try{"setresuid(0,0,0)", sysErr(0, e2)},
		try{"setresgid(0,0,0)", sysErr(0, e3)}, try{"setgroups([0])", sysErr(0, e4)},
	)
	if now := unix.Geteuid(); now != uid && r.Blocked {
		return escaped("euid changed from %d to %d", uid, now)
	}
	return r
}

// killAll sends SIGKILL to every process it may signal; the host checks
// its canary survived. It is the last attack of the batch.
func killAll(p *Params) Result {
	err := unix.Kill(-1, unix.SIGKILL)
	return blocked("kill(-1, SIGKILL): %s; the host checks its canary (pid %d) survived", errName(err), p.HostPID)
}

func fanotify(*Params) Result {
	return allFail(try{"fanotify_init", raw(unix.SYS_FANOTIFY_INIT, unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC, unix.O_RDONLY)})
}

// seccompAfterExec re-executes this binary and has the new image report
// its own capabilities, no_new_privs and seccomp mode on every thread.
func seccompAfterExec(*Params) Result {
	out, err := exec.Command("/proc/self/exe", "__attack", "status").CombinedOutput()
	text := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(text, "ok") {
		return escaped("after execve: %s (%v)", text, err)
	}
	return blocked("after execve: %s with no capabilities, NoNewPrivs 1, Seccomp 2; PR_SET_SECCOMP cannot remove a filter", text)
}

// daemonize leaves a process behind that ignores SIGTERM, in a session of
// its own, and returns at once: the host looks for it after closet ends.
func daemonize(p *Params) int {
	cmd := exec.Command("/proc/self/exe", "__attack", "canary", p.Marker+"-daemon")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "start daemon:", err)
		return 1
	}
	fmt.Println("daemon started")
	return 0
}

// persistWrite leaves traces a next job could find: files in every
// writable tmpfs and a SysV segment.
func persistWrite(p *Params) int {
	for _, d := range []string{"/tmp", "/dev/shm", os.Getenv("HOME")} {
		os.WriteFile(d+"/closet-persist-"+p.Marker, []byte("x"), 0o666)
	}
	unix.SysvShmGet(0x0c105e8, 4096, unix.IPC_CREAT|0o666)
	fmt.Println("traces left")
	return 0
}

func persistRead(p *Params) Result {
	var found []string
	for _, d := range []string{"/tmp", "/dev/shm", os.Getenv("HOME")} {
		if _, err := os.Stat(d + "/closet-persist-" + p.Marker); err == nil {
			found = append(found, d)
		}
	}
	if _, err := unix.SysvShmGet(0x0c105e8, 0, 0); err == nil {
		found = append(found, "SysV key 0x0c105e8")
	}
	if len(found) > 0 {
		return escaped("the previous job's traces are here: %s", strings.Join(found, ", "))
	}
	return blocked("no file in /tmp, /dev/shm or $HOME and no SysV segment of the previous job")
}

// crossJob runs while another sandbox holds an abstract socket, a SysV
// segment and a /dev/shm file: none may be reachable from here.
func crossJob(p *Params) Result {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return skipped("socket: %v", err)
	}
	defer unix.Close(fd)
	_, shmErr := unix.SysvShmGet(0x0c105e7, 0, 0)
	return allFail(
		try{"connect @" + p.Abstract + "-inside (the other job's)", unix.Connect(fd, &unix.SockaddrUnix{Name: "@" + p.Abstract + "-inside"})},
		try{"shmget(0x0c105e7) (the other job's)", shmErr},
		try{"stat /dev/shm/closet-hold (the other job's)", statErr("/dev/shm/closet-hold")},
	)
}
