package seccomp

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"golang.org/x/net/bpf"
)

// Audit architecture values the tests feed the filter.
const (
	auditArchI386 = 0x40000003
)

// abi is one way a call can reach the filter.
type abi struct {
	name   string
	arch   uint32
	nrBits uint32 // ORed into the syscall number
}

var abis = []abi{
	{"x86_64", auditArchX86_64, 0},
	{"x32", auditArchX86_64, x32Bit},
	{"i386", auditArchI386, 0},
	{"aarch64", auditArchAARCH64, 0},
}

// filter is the compiled policy loaded in x/net/bpf's VM.
type filter struct {
	vm *bpf.VM
}

func newFilter(t testing.TB) filter { return newFilterFor(t, Options{}) }

func newFilterFor(t testing.TB, opts Options) filter { return filterFor(t, archX86_64, opts) }

// run evaluates one call. The VM loads words big-endian from a byte slice while
// the kernel loads them natively from struct seccomp_data, so each 32-bit word
// is written big-endian holding the value the kernel would load there: for an
// argument, the low half at its offset and the high half 4 bytes on, as in
// x86_64's little-endian layout (the trick of elastic/go-seccomp-bpf's
// simulateSyscalls).
func (f filter) run(t testing.TB, arch, nr uint32, args [6]uint64) Action {
	t.Helper()
	var data [64]byte
	be := binary.BigEndian
	be.PutUint32(data[offNr:], nr)
	be.PutUint32(data[offArch:], arch)
	be.PutUint32(data[8:], 0x00401000) // instruction_pointer, never read
	for i, a := range args {
		be.PutUint32(data[offArgs+8*i:], uint32(a))
		be.PutUint32(data[offArgs+8*i+4:], uint32(a>>32))
	}
	ret, err := f.vm.Run(data[:])
	if err != nil {
		t.Fatalf("vm: %v", err)
	}
	return Action(uint32(ret))
}

func nr(t testing.TB, name string) uint32 {
	t.Helper()
	for _, s := range x86_64Syscalls {
		if s.name == name {
			return s.nr
		}
	}
	t.Fatalf("unknown syscall %q", name)
	return 0
}

// Flag sets real programs pass to clone.
const (
	glibcThread = 0x3d0f00 // pthread_create: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
	goThread    = 0x50f00  // Go runtime newosproc: VM|FS|FILES|SIGHAND|SYSVSEM|THREAD
	glibcFork   = 0x1200011
	goVfork     = 0x1004111 // os/exec: VFORK|VM|PIDFD|SIGCHLD
	sigchld     = 17

	afALG     = 38
	afVsock   = 40
	afPacket  = 17
	afKey     = 15
	afBluetth = 31

	high = 1 << 32 // a bit the kernel drops when it truncates to int
)

type vmCase struct {
	name    string
	syscall string // looked up in the x86_64 table, unless nr is set
	nr      uint32
	args    [6]uint64
	want    Action // on native x86_64; every other ABI is killed
}

// policyCases holds one or more cases for every rule of the policy.
var policyCases = []vmCase{
	// What ordinary programs need.
	{name: "read", syscall: "read", want: ActionAllow},
	{name: "write", syscall: "write", want: ActionAllow},
	{name: "openat", syscall: "openat", want: ActionAllow},
	{name: "openat2 answers ENOSYS (mode unreadable)", syscall: "openat2", want: ActionENOSYS},
	{name: "openat 0644 O_CREAT", syscall: "openat", args: [6]uint64{2: 0o100, 3: 0o644}, want: ActionAllow},
	{name: "openat O_CREAT setuid", syscall: "openat", args: [6]uint64{2: 0o100, 3: 0o4755}, want: ActionEPERM},
	{name: "openat setgid, high bits", syscall: "openat", args: [6]uint64{3: 1<<32 | 0o2755}, want: ActionEPERM},
	{name: "open O_CREAT setuid", syscall: "open", args: [6]uint64{1: 0o100, 2: 0o4755}, want: ActionEPERM},
	{name: "open plain", syscall: "open", args: [6]uint64{1: 0}, want: ActionAllow},
	{name: "creat setuid", syscall: "creat", args: [6]uint64{1: 0o4700}, want: ActionEPERM},
	{name: "creat 0600", syscall: "creat", args: [6]uint64{1: 0o600}, want: ActionAllow},
	{name: "mknod setgid fifo", syscall: "mknod", args: [6]uint64{1: 0o10000 | 0o2644}, want: ActionEPERM},
	{name: "mknodat setuid", syscall: "mknodat", args: [6]uint64{2: 0o4644}, want: ActionEPERM},
	{name: "mknodat fifo", syscall: "mknodat", args: [6]uint64{2: 0o10644}, want: ActionAllow},
	{name: "prlimit64 on self", syscall: "prlimit64", args: [6]uint64{0: 0}, want: ActionAllow},
	{name: "prlimit64 on pid 1", syscall: "prlimit64", args: [6]uint64{0: 1}, want: ActionEPERM},
	{name: "mmap", syscall: "mmap", want: ActionAllow},
	{name: "execve", syscall: "execve", want: ActionAllow},
	{name: "rseq", syscall: "rseq", want: ActionAllow},
	{name: "arch_prctl", syscall: "arch_prctl", want: ActionAllow},
	{name: "landlock", syscall: "landlock_restrict_self", want: ActionAllow},
	{name: "clone glibc thread", syscall: "clone", args: [6]uint64{glibcThread}, want: ActionAllow},
	{name: "clone go thread", syscall: "clone", args: [6]uint64{goThread}, want: ActionAllow},
	{name: "clone fork", syscall: "clone", args: [6]uint64{glibcFork}, want: ActionAllow},
	{name: "clone vfork", syscall: "clone", args: [6]uint64{goVfork}, want: ActionAllow},
	{name: "clone flags in high half ignored", syscall: "clone", args: [6]uint64{cloneNewUser<<32 | sigchld}, want: ActionAllow},

	// Refused outright.
	{name: "io_uring_setup", syscall: "io_uring_setup", want: ActionEPERM},
	{name: "io_uring_enter", syscall: "io_uring_enter", want: ActionEPERM},
	{name: "io_uring_register", syscall: "io_uring_register", want: ActionEPERM},
	{name: "userfaultfd", syscall: "userfaultfd", want: ActionEPERM},
	{name: "bpf", syscall: "bpf", want: ActionEPERM},
	{name: "perf_event_open", syscall: "perf_event_open", want: ActionEPERM},
	{name: "keyctl", syscall: "keyctl", want: ActionEPERM},
	{name: "add_key", syscall: "add_key", want: ActionEPERM},
	{name: "request_key", syscall: "request_key", want: ActionEPERM},
	{name: "kexec_load", syscall: "kexec_load", want: ActionEPERM},
	{name: "kexec_file_load", syscall: "kexec_file_load", want: ActionEPERM},
	{name: "init_module", syscall: "init_module", want: ActionEPERM},
	{name: "finit_module", syscall: "finit_module", want: ActionEPERM},
	{name: "delete_module", syscall: "delete_module", want: ActionEPERM},
	{name: "mount", syscall: "mount", want: ActionEPERM},
	{name: "umount2", syscall: "umount2", want: ActionEPERM},
	{name: "pivot_root", syscall: "pivot_root", want: ActionEPERM},
	{name: "chroot", syscall: "chroot", want: ActionEPERM},
	{name: "open_tree", syscall: "open_tree", want: ActionEPERM},
	{name: "move_mount", syscall: "move_mount", want: ActionEPERM},
	{name: "fsopen", syscall: "fsopen", want: ActionEPERM},
	{name: "fsmount", syscall: "fsmount", want: ActionEPERM},
	{name: "mount_setattr", syscall: "mount_setattr", want: ActionEPERM},
	{name: "unshare newuser", syscall: "unshare", args: [6]uint64{cloneNewUser}, want: ActionEPERM},
	{name: "unshare files", syscall: "unshare", args: [6]uint64{0x400}, want: ActionEPERM},
	{name: "unshare nothing", syscall: "unshare", want: ActionEPERM},
	{name: "setns", syscall: "setns", want: ActionEPERM},
	{name: "ptrace", syscall: "ptrace", want: ActionEPERM},
	{name: "process_vm_readv", syscall: "process_vm_readv", want: ActionEPERM},
	{name: "pidfd_getfd", syscall: "pidfd_getfd", want: ActionEPERM},
	{name: "open_by_handle_at", syscall: "open_by_handle_at", want: ActionEPERM},
	{name: "modify_ldt", syscall: "modify_ldt", want: ActionEPERM},
	{name: "reboot", syscall: "reboot", want: ActionEPERM},
	{name: "mbind", syscall: "mbind", want: ActionEPERM},
	{name: "unlisted ustat", syscall: "ustat", want: ActionEPERM},
	{name: "unlisted file_setattr", syscall: "file_setattr", want: ActionEPERM},

	// New namespaces through clone.
	{name: "clone newuser", syscall: "clone", args: [6]uint64{cloneNewUser | sigchld}, want: ActionEPERM},
	{name: "clone newuser thread", syscall: "clone", args: [6]uint64{cloneNewUser | glibcThread}, want: ActionEPERM},
	{name: "clone newuser high bits too", syscall: "clone", args: [6]uint64{high | cloneNewUser}, want: ActionEPERM},
	{name: "clone newns", syscall: "clone", args: [6]uint64{cloneNewNS}, want: ActionEPERM},
	{name: "clone newcgroup", syscall: "clone", args: [6]uint64{cloneNewCgroup}, want: ActionEPERM},
	{name: "clone newuts", syscall: "clone", args: [6]uint64{cloneNewUTS}, want: ActionEPERM},
	{name: "clone newipc", syscall: "clone", args: [6]uint64{cloneNewIPC}, want: ActionEPERM},
	{name: "clone newpid", syscall: "clone", args: [6]uint64{cloneNewPID}, want: ActionEPERM},
	{name: "clone newnet", syscall: "clone", args: [6]uint64{cloneNewNet}, want: ActionEPERM},
	{name: "clone3", syscall: "clone3", want: ActionENOSYS},
	{name: "clone3 any args", syscall: "clone3", args: [6]uint64{0x7fff0000, 88}, want: ActionENOSYS},

	// Terminal injection, low 32 bits only.
	{name: "ioctl TIOCSTI", syscall: "ioctl", args: [6]uint64{0, tiocsti}, want: ActionEPERM},
	{name: "ioctl TIOCSTI high bits", syscall: "ioctl", args: [6]uint64{0, high | tiocsti}, want: ActionEPERM},
	{name: "ioctl TIOCSTI all high bits", syscall: "ioctl", args: [6]uint64{0, 0xffffffff_00000000 | tiocsti}, want: ActionEPERM},
	{name: "ioctl TIOCLINUX", syscall: "ioctl", args: [6]uint64{0, tioclinux}, want: ActionEPERM},
	{name: "ioctl TIOCLINUX high bits", syscall: "ioctl", args: [6]uint64{1, high | tioclinux}, want: ActionEPERM},
	{name: "ioctl TCGETS", syscall: "ioctl", args: [6]uint64{0, 0x5401}, want: ActionAllow},
	{name: "ioctl FIONREAD", syscall: "ioctl", args: [6]uint64{3, 0x541b}, want: ActionAllow},
	{name: "ioctl TIOCGWINSZ", syscall: "ioctl", args: [6]uint64{1, 0x5413}, want: ActionAllow},
	{name: "ioctl TIOCSTI only in high half", syscall: "ioctl", args: [6]uint64{0, tiocsti << 32}, want: ActionAllow},
	{name: "ioctl TIOCSTI as the fd", syscall: "ioctl", args: [6]uint64{tiocsti, 0x5401}, want: ActionAllow},

	// Setuid and setgid bits.
	{name: "chmod 0755", syscall: "chmod", args: [6]uint64{0x1000, 0o755}, want: ActionAllow},
	{name: "chmod 01777", syscall: "chmod", args: [6]uint64{0x1000, 0o1777}, want: ActionAllow},
	{name: "chmod 04755", syscall: "chmod", args: [6]uint64{0x1000, 0o4755}, want: ActionEPERM},
	{name: "chmod 02755", syscall: "chmod", args: [6]uint64{0x1000, 0o2755}, want: ActionEPERM},
	{name: "chmod 06755", syscall: "chmod", args: [6]uint64{0x1000, 0o6755}, want: ActionEPERM},
	{name: "chmod 04755 high bits", syscall: "chmod", args: [6]uint64{0x1000, high | 0o4755}, want: ActionEPERM},
	{name: "chmod path looks setuid", syscall: "chmod", args: [6]uint64{0o6000, 0o644}, want: ActionAllow},
	{name: "fchmod 0644", syscall: "fchmod", args: [6]uint64{3, 0o644}, want: ActionAllow},
	{name: "fchmod 04000", syscall: "fchmod", args: [6]uint64{3, 0o4000}, want: ActionEPERM},
	{name: "fchmodat 0644", syscall: "fchmodat", args: [6]uint64{0xffffff9c, 0x1000, 0o644}, want: ActionAllow},
	{name: "fchmodat 02755", syscall: "fchmodat", args: [6]uint64{0xffffff9c, 0x1000, 0o2755}, want: ActionEPERM},
	{name: "fchmodat mode in arg1 slot ignored", syscall: "fchmodat", args: [6]uint64{0xffffff9c, 0o4755, 0o755}, want: ActionAllow},
	{name: "fchmodat2 0755", syscall: "fchmodat2", args: [6]uint64{0xffffff9c, 0x1000, 0o755, 0x100}, want: ActionAllow},
	{name: "fchmodat2 02000", syscall: "fchmodat2", args: [6]uint64{0xffffff9c, 0x1000, 0o2000, 0x100}, want: ActionEPERM},
	{name: "fchmodat2 04711", syscall: "fchmodat2", args: [6]uint64{0xffffff9c, 0x1000, 0o4711}, want: ActionEPERM},

	// Socket families.
	{name: "socket AF_UNIX", syscall: "socket", args: [6]uint64{afUnix, 1 | 0x80000}, want: ActionAllow},
	{name: "socket AF_INET", syscall: "socket", args: [6]uint64{afInet, 1, 6}, want: ActionAllow},
	{name: "socket AF_INET6", syscall: "socket", args: [6]uint64{afInet6, 2, 17}, want: ActionAllow},
	{name: "socket AF_INET high bits", syscall: "socket", args: [6]uint64{high | afInet, 1}, want: ActionAllow},
	{name: "socket AF_NETLINK route", syscall: "socket", args: [6]uint64{afNetlink, 3 | 0x80000, netlinkRoute}, want: ActionAllow},
	{name: "socket AF_NETLINK audit", syscall: "socket", args: [6]uint64{afNetlink, 3, 9}, want: ActionEAFNOSUPPORT},
	{name: "socket AF_NETLINK sock_diag", syscall: "socket", args: [6]uint64{afNetlink, 3, 4}, want: ActionEAFNOSUPPORT},
	{name: "socket AF_NETLINK uevent", syscall: "socket", args: [6]uint64{afNetlink, 2, 15}, want: ActionEAFNOSUPPORT},
	{name: "socket AF_NETLINK route high protocol", syscall: "socket", args: [6]uint64{afNetlink, 3, high}, want: ActionAllow},
	{name: "socket AF_ALG", syscall: "socket", args: [6]uint64{afALG, 5}, want: ActionEAFNOSUPPORT},
	{name: "socket AF_ALG high bits", syscall: "socket", args: [6]uint64{high | afALG, 5}, want: ActionEAFNOSUPPORT},
	{name: "socket AF_VSOCK", syscall: "socket", args: [6]uint64{afVsock, 1}, want: ActionEAFNOSUPPORT},
	{name: "socket AF_PACKET", syscall: "socket", args: [6]uint64{afPacket, 3}, want: ActionEAFNOSUPPORT},
	{name: "socket AF_KEY", syscall: "socket", args: [6]uint64{afKey, 3}, want: ActionEAFNOSUPPORT},
	{name: "socket AF_BLUETOOTH", syscall: "socket", args: [6]uint64{afBluetth, 1}, want: ActionEAFNOSUPPORT},
	{name: "socket AF_UNSPEC", syscall: "socket", args: [6]uint64{0, 1}, want: ActionEAFNOSUPPORT},
	{name: "socketpair AF_UNIX", syscall: "socketpair", args: [6]uint64{afUnix, 1, 0, 0x1000}, want: ActionAllow},
	{name: "socketpair AF_INET", syscall: "socketpair", args: [6]uint64{afInet, 1}, want: ActionEAFNOSUPPORT},
	{name: "socketpair AF_NETLINK", syscall: "socketpair", args: [6]uint64{afNetlink, 3}, want: ActionEAFNOSUPPORT},

	// Personality.
	{name: "personality PER_LINUX", syscall: "personality", args: [6]uint64{0}, want: ActionAllow},
	{name: "personality PER_LINUX32", syscall: "personality", args: [6]uint64{0x8}, want: ActionAllow},
	{name: "personality UNAME26", syscall: "personality", args: [6]uint64{0x20000}, want: ActionAllow},
	{name: "personality UNAME26|PER_LINUX32", syscall: "personality", args: [6]uint64{0x20008}, want: ActionAllow},
	{name: "personality query", syscall: "personality", args: [6]uint64{0xffffffff}, want: ActionAllow},
	{name: "personality query as -1", syscall: "personality", args: [6]uint64{0xffffffff_ffffffff}, want: ActionAllow},
	{name: "personality ADDR_NO_RANDOMIZE", syscall: "personality", args: [6]uint64{0x0040000}, want: ActionEPERM},
	{name: "personality MMAP_PAGE_ZERO", syscall: "personality", args: [6]uint64{0x0100000}, want: ActionEPERM},
	{name: "personality READ_IMPLIES_EXEC", syscall: "personality", args: [6]uint64{0x0400000}, want: ActionEPERM},

	// Numbers the policy does not know.
	{name: "number 1000", nr: 1000, want: ActionENOSYS},
	{name: "gap 400", nr: 400, want: ActionENOSYS},
	{name: "gap 337", nr: 337, want: ActionENOSYS},
	{name: "gap 423", nr: 423, want: ActionENOSYS},
	{name: "after the table", nr: 472, want: ActionENOSYS},
	{name: "x32 compat range without the bit", nr: 512, want: ActionENOSYS},
	{name: "largest without the x32 bit", nr: 0x3fffffff, want: ActionENOSYS},
	{name: "negative", nr: 0x80000000, want: ActionENOSYS},
}

// TestPolicyEveryABI runs every case on every ABI: native x86_64 gets the
// policy's answer, x32, i386 and aarch64 calls with the same number are killed.
func TestPolicyEveryABI(t *testing.T) {
	f := newFilter(t)
	for _, c := range policyCases {
		n := c.nr
		if c.syscall != "" {
			n = nr(t, c.syscall)
		}
		for _, a := range abis {
			want := c.want
			if a.name != "x86_64" {
				want = ActionKillProcess
			}
			if got := f.run(t, a.arch, n|a.nrBits, c.args); got != want {
				t.Errorf("%s on %s (nr %#x, args %#x): got %v, want %v", c.name, a.name, n|a.nrBits, c.args, got, want)
			}
		}
	}
}

// TestOtherABIsKilled checks every number of the foreign ABIs, including ones
// that are allowed natively, and odd architecture values.
func TestOtherABIsKilled(t *testing.T) {
	f := newFilter(t)
	for _, arch := range []uint32{auditArchI386, auditArchAARCH64, 0x40000028 /* ARM */, 0, 0xffffffff, auditArchX86_64 ^ 1} {
		for n := uint32(0); n < 600; n++ {
			if got := f.run(t, arch, n, [6]uint64{}); got != ActionKillProcess {
				t.Fatalf("arch %#x nr %d: got %v, want kill", arch, n, got)
			}
		}
	}
	for n := uint32(0); n < 600; n++ {
		for _, bits := range []uint32{x32Bit, x32Bit | 0x80000000, 0xffffffff &^ 0xfff} {
			if got := f.run(t, auditArchX86_64, n|bits, [6]uint64{}); got != ActionKillProcess {
				t.Fatalf("x32 nr %#x: got %v, want kill", n|bits, got)
			}
		}
	}
}

// TestOrdinaryProgramsAllowed lists calls that busybox, glibc's dynamic loader,
// CPython and the Go runtime make on start-up and in common use; none may be
// refused.
func TestOrdinaryProgramsAllowed(t *testing.T) {
	f := newFilter(t)
	for _, name := range []string{
		// glibc and its loader
		"brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "prlimit64",
		"mprotect", "munmap", "getrandom", "newfstatat", "fstat", "statx", "faccessat2",
		"access", "close_range", "openat", "pread64", "readlink", "getcwd", "uname",
		"futex", "futex_waitv", "getdents64", "lseek", "fcntl", "dup2", "dup3", "pipe2",
		"wait4", "waitid", "kill", "tgkill", "exit", "exit_group", "vfork", "fork",
		"execve", "execveat", "getuid", "geteuid", "getgid", "getegid", "getpid",
		"getppid", "gettid", "setpgid", "setsid", "getpgrp", "umask", "chdir", "fchdir",
		"mkdir", "rmdir", "unlink", "unlinkat", "rename", "renameat2", "symlink",
		"link", "utimensat", "fsync", "ftruncate", "fallocate", "copy_file_range",
		"sendfile", "splice", "poll", "ppoll", "select", "pselect6", "nanosleep",
		"clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "times",
		"getrusage", "sysinfo", "sched_yield", "sched_getaffinity", "sched_setaffinity",
		"getpriority", "setpriority", "alarm", "setitimer", "timer_create",
		"timerfd_create", "eventfd2", "signalfd4", "inotify_init1", "inotify_add_watch",
		"memfd_create", "membarrier", "mlock", "msync", "mremap", "madvise", "mincore",
		"flock", "getxattr", "lgetxattr", "listxattr", "statfs", "fstatfs",
		"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend",
		"rt_sigtimedwait", "sigaltstack", "restart_syscall", "prctl", "capget",
		"pidfd_open", "pidfd_send_signal", "epoll_create1", "epoll_ctl", "epoll_pwait",
		"epoll_wait", "epoll_pwait2", "accept4", "bind", "listen", "connect",
		"getsockname", "getpeername", "setsockopt", "getsockopt", "sendto", "recvfrom",
		"sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "shmget", "shmat",
		"semget", "mq_open", "io_setup", "io_submit", "seccomp",
		"landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
	} {
		if got := f.run(t, auditArchX86_64, nr(t, name), [6]uint64{}); got != ActionAllow {
			t.Errorf("%s: got %v, want allow", name, got)
		}
	}
}

// reference answers a call straight from the policy's decisions, without BPF:
// the model the compiled program is compared against.
func reference(d map[uint32]decision, arch, n uint32, args [6]uint64) Action {
	if arch != auditArchX86_64 || n&x32Bit != 0 {
		return ActionKillProcess
	}
	dec, ok := d[n]
	if !ok {
		return ActionENOSYS
	}
	for _, c := range dec.clauses {
		holds := true
		for _, k := range c.all {
			v := uint32(args[k.arg])
			if k.mask != 0 {
				v &= k.mask
			}
			holds = holds && slices.Contains(k.in, v)
		}
		if holds {
			return c.action
		}
	}
	return dec.action
}

// TestEveryNumberMatchesReference sweeps every number in and around the table
// with zero arguments and with arguments that trip each condition.
func TestEveryNumberMatchesReference(t *testing.T) {
	f := newFilter(t)
	d, err := decide(policy(Options{}))
	if err != nil {
		t.Fatal(err)
	}
	argSets := [][6]uint64{
		{},
		{cloneNewUser, tiocsti, 0o4755, 0, 0, 0},
		{afNetlink, tioclinux, netlinkRoute},
		{afNetlink, 0, 9},
		{0xffffffff, high | tiocsti, high | 0o2000},
		{afInet6, 0x5401, 0o755},
	}
	for n := uint32(0); n < 1100; n++ {
		for _, args := range argSets {
			want := reference(d, auditArchX86_64, n, args)
			if got := f.run(t, auditArchX86_64, n, args); got != want {
				t.Fatalf("nr %d args %#x: got %v, want %v", n, args, got, want)
			}
		}
	}
}

// interesting are values that sit on or next to what the policy compares.
var interesting = []uint64{
	0, 1, 2, 3, 8, 9, 10, 15, 16, 17, 38, 40, tiocsti, tioclinux, tiocsti - 1, 0x5401,
	0o755, 0o4755, 0o2755, 0o6000, 0o1777, 0x20000, 0x20008, 0x40000, 0xffffffff,
	cloneNewUser, cloneNewNet, glibcThread, goThread, cloneNewMask, high, high | tiocsti,
	high | afInet, 0xffffffff_ffffffff, 0x80000000,
}

// TestRandomCallsMatchReference compares the program with the reference on many
// calls built from interesting numbers, arguments and ABIs.
func TestRandomCallsMatchReference(t *testing.T) {
	f := newFilter(t)
	d, err := decide(policy(Options{}))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	arches := []uint32{auditArchX86_64, auditArchX86_64, auditArchX86_64, auditArchI386, auditArchAARCH64}
	for i := 0; i < 200000; i++ {
		arch := arches[r.IntN(len(arches))]
		var n uint32
		switch r.IntN(4) {
		case 0:
			n = r.Uint32()
		case 1:
			n = uint32(r.IntN(500)) | x32Bit
		default:
			n = x86_64Syscalls[r.IntN(len(x86_64Syscalls))].nr
		}
		var args [6]uint64
		for j := range args {
			if r.IntN(3) == 0 {
				args[j] = r.Uint64()
			} else {
				args[j] = interesting[r.IntN(len(interesting))]
			}
		}
		want := reference(d, arch, n, args)
		if got := f.run(t, arch, n, args); got != want {
			t.Fatalf("arch %#x nr %#x args %#x: got %v, want %v", arch, n, args, got, want)
		}
	}
}

// FuzzFilter compares the program with the reference on arbitrary calls.
func FuzzFilter(f *testing.F) {
	f.Add(uint32(auditArchX86_64), uint32(16), uint64(0), uint64(high|tiocsti), uint64(0))
	f.Add(uint32(auditArchX86_64), uint32(41), uint64(afNetlink), uint64(3), uint64(9))
	f.Add(uint32(auditArchX86_64), uint32(56), uint64(cloneNewUser), uint64(0), uint64(0))
	f.Add(uint32(auditArchX86_64), uint32(452), uint64(0), uint64(0), uint64(0o2000))
	f.Add(uint32(auditArchI386), uint32(0), uint64(0), uint64(0), uint64(0))
	filter := newFilter(f)
	d, err := decide(policy(Options{}))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, arch, n uint32, a0, a1, a2 uint64) {
		args := [6]uint64{a0, a1, a2, a0 ^ a1, a2, a1}
		want := reference(d, arch, n, args)
		if got := filter.run(t, arch, n, args); got != want {
			t.Fatalf("arch %#x nr %#x args %#x: got %v, want %v", arch, n, args, got, want)
		}
	})
}

// TestProgramShape checks what the kernel's seccomp verifier would: only the
// instructions it accepts, aligned loads inside struct seccomp_data, forward
// jumps inside the program, a return at the end, and fewer than BPF_MAXINSNS.
func TestProgramShape(t *testing.T) {
	prog, err := compile(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d instructions", len(prog))
	if len(prog) >= maxInstructions {
		t.Fatalf("%d instructions, the kernel takes fewer than %d", len(prog), maxInstructions)
	}
	if _, ok := prog[len(prog)-1].(bpf.RetConstant); !ok {
		t.Fatalf("last instruction %v is not a return", prog[len(prog)-1])
	}
	for i, ins := range prog {
		left := len(prog) - i - 1
		switch ins := ins.(type) {
		case bpf.LoadAbsolute:
			if ins.Size != 4 || ins.Off%4 != 0 || ins.Off >= 64 {
				t.Errorf("%d: %v: not a word of seccomp_data", i, ins)
			}
		case bpf.JumpIf:
			if int(ins.SkipTrue) >= left || int(ins.SkipFalse) >= left {
				t.Errorf("%d: %v jumps out of the program", i, ins)
			}
		case bpf.Jump:
			if int(ins.Skip) >= left {
				t.Errorf("%d: %v jumps out of the program", i, ins)
			}
		case bpf.ALUOpConstant:
			if ins.Op != bpf.ALUOpAnd {
				t.Errorf("%d: %v: only AND is used", i, ins)
			}
		case bpf.RetConstant:
			switch a := Action(ins.Val); a {
			case ActionAllow, ActionKillProcess, ActionEPERM, ActionENOSYS, ActionEAFNOSUPPORT:
			default:
				t.Errorf("%d: returns %v", i, a)
			}
		default:
			t.Errorf("%d: %T %v is not used by this compiler", i, ins, ins)
		}
	}
	if _, err := bpf.Assemble(prog); err != nil {
		t.Fatal(err)
	}
}

// TestSearchLongJumps exercises the unconditional-jump form of the binary
// search, which the current policy is too small to need.
func TestSearchLongJumps(t *testing.T) {
	var leaves []leaf
	for i := uint32(0); i < 700; i++ {
		leaves = append(leaves, leaf{start: 3 * i, code: []bpf.Instruction{bpf.RetConstant{Val: i}}})
	}
	prog := append([]bpf.Instruction{bpf.LoadAbsolute{Off: offNr, Size: 4}}, search(leaves)...)
	long := 0
	for _, ins := range prog {
		if _, ok := ins.(bpf.Jump); ok {
			long++
		}
	}
	if long == 0 {
		t.Fatal("no long jumps emitted")
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	for n := uint32(0); n < 2200; n++ {
		var data [64]byte
		binary.BigEndian.PutUint32(data[:], n)
		got, err := vm.Run(data[:])
		if err != nil {
			t.Fatal(err)
		}
		if want := min(n/3, 699); uint32(got) != want {
			t.Fatalf("nr %d: leaf %d, want %d", n, got, want)
		}
	}
}

// TestCompileRejectsBadPolicy checks that mistakes in the policy table fail
// compilation instead of yielding a filter.
func TestCompileRejectsBadPolicy(t *testing.T) {
	for _, groups := range [][]group{
		{{name: "typo", syscalls: []string{"reed"}, action: ActionAllow}},
		{{name: "a", syscalls: []string{"read"}, action: ActionAllow}, {name: "b", syscalls: []string{"read"}, action: ActionEPERM}},
	} {
		if _, err := decide(groups); err == nil {
			t.Errorf("decide(%v) succeeded", groups)
		}
	}
	if _, err := checks(decision{clauses: []clause{{all: []cond{{arg: 6, in: []uint32{0}}}}}}); err == nil {
		t.Error("a condition on argument 6 compiled")
	}
}
