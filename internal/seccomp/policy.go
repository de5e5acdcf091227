package seccomp

import (
	"fmt"
	"slices"
	"strings"
)

// Options selects policy variations.
type Options struct {
	// MemoryByRlimit is true when only RLIMIT_AS holds the job's memory (no
	// memory cgroup): the calls that make memory outside any address space
	// (memfd_create, SysV shared memory and message queues) are refused,
	// since RLIMIT_AS would not see what they hold.
	MemoryByRlimit bool
	// Grading is the grading profile: inotify is refused, because a job
	// watching a store file of its closure would see, live, when other
	// tenants' processes open it.
	Grading bool
}

// Profile names, as spec.Seccomp and --seccomp spell them.
const (
	ProfileDefault = "default"
	ProfileGrading = "grading" // default, and no inotify
	ProfileOff     = "off"
)

// OptionsFor returns the options of the named profile ("" is the default),
// with memoryByRlimit as the caller knows it; a profile it does not know is
// an error, never the default.
func OptionsFor(profile string, memoryByRlimit bool) (Options, error) {
	o := Options{MemoryByRlimit: memoryByRlimit}
	switch profile {
	case ProfileDefault, "":
	case ProfileGrading:
		o.Grading = true
	default:
		return Options{}, fmt.Errorf("seccomp: unknown profile %q (want %s or %s, or %s for none)", profile, ProfileDefault, ProfileGrading, ProfileOff)
	}
	return o, nil
}

// Action is what the filter answers: a SECCOMP_RET_* value, with the errno in
// the low 16 bits for errno actions.
type Action uint32

// Actions the policy uses.
const (
	ActionKillProcess Action = 0x80000000 // SECCOMP_RET_KILL_PROCESS
	ActionAllow       Action = 0x7fff0000 // SECCOMP_RET_ALLOW
	actionErrno       Action = 0x00050000 // SECCOMP_RET_ERRNO

	// Errno actions, with x86_64 errno numbers (the filter only ever answers
	// x86_64 calls, so these are right on any build host).
	ActionEPERM        = actionErrno | 1  // EPERM: refused on purpose
	ActionENOSYS       = actionErrno | 38 // ENOSYS: unknown call, or clone3
	ActionEAFNOSUPPORT = actionErrno | 97 // EAFNOSUPPORT: refused socket family
)

func errnoName(e uint16) (string, bool) {
	switch e {
	case 1:
		return "EPERM", true
	case 38:
		return "ENOSYS", true
	case 97:
		return "EAFNOSUPPORT", true
	}
	return "", false
}

// Errno returns the errno an errno action answers, and whether a is one.
func (a Action) Errno() (uint16, bool) {
	if a&0xffff0000 != actionErrno {
		return 0, false
	}
	return uint16(a), true
}

func (a Action) String() string {
	switch a {
	case ActionKillProcess:
		return "kill process"
	case ActionAllow:
		return "allow"
	}
	if e, ok := a.Errno(); ok {
		if name, ok := errnoName(e); ok {
			return "errno " + name
		}
		return fmt.Sprintf("errno %d", e)
	}
	return fmt.Sprintf("action %#x", uint32(a))
}

// Rule is one line of the policy in words, for reports and --help.
type Rule struct {
	Name     string   // short identifier, e.g. "io_uring"
	Syscalls []string // x86_64 syscall names; empty for rules about numbers or ABIs
	Action   Action   // what the filter answers when the rule applies
	When     string   // when the rule applies; empty means on every call
	Reason   string   // why
}

// cond holds when the low 32 bits of argument arg, masked with mask (0 means all
// 32 bits), equal one of in. Only the low half is ever read: every argument the
// policy inspects is an int, unsigned int or mode to the kernel, which truncates
// it, so a check on all 64 bits could be dodged by setting high bits (flatpak
// CVE-2019-10063, TIOCSTI | 1<<32).
type cond struct {
	arg  int
	mask uint32
	in   []uint32
}

// clause decides action when all its conds hold.
type clause struct {
	all    []cond
	action Action
}

// group is one rule of the policy: the syscalls it covers and what they answer.
type group struct {
	name     string
	syscalls []string
	clauses  []clause // tried in order; the first whose conds all hold decides
	action   Action   // the answer when no clause holds (or there are none)
	when     string   // for conditional groups: when the refusal applies
	reason   string
}

// refusal is the action a group's rule is about: its answer, or for an allowed
// call with argument checks, the answer of its first refusing clause.
func (g *group) refusal() Action {
	if g.action != ActionAllow {
		return g.action
	}
	for _, c := range g.clauses {
		if c.action != ActionAllow {
			return c.action
		}
	}
	return ActionAllow
}

// Constants the argument checks compare against (x86_64 values).
const (
	afUnix       = 1
	afInet       = 2
	afInet6      = 10
	afNetlink    = 16
	netlinkRoute = 0

	tiocsti   = 0x5412
	tioclinux = 0x541c

	sISUID = 0o4000
	sISGID = 0o2000

	// Every CLONE_NEW* flag clone(2) accepts. CLONE_NEWTIME (0x80) is left out:
	// clone(2) reads those bits as the exit signal, and only clone3 and unshare,
	// both refused, can ask for a time namespace.
	cloneNewNS     = 0x00020000
	cloneNewCgroup = 0x02000000
	cloneNewUTS    = 0x04000000
	cloneNewIPC    = 0x08000000
	cloneNewUser   = 0x10000000
	cloneNewPID    = 0x20000000
	cloneNewNet    = 0x40000000
	cloneNewMask   = cloneNewNS | cloneNewCgroup | cloneNewUTS | cloneNewIPC | cloneNewUser | cloneNewPID | cloneNewNet
)

// allowed is Docker's default allowlist (moby/profiles seccomp/default_linux.go,
// the unconditional group plus the amd64 arch_prctl), reduced to the names that
// exist on x86_64. Names removed from it carry a comment saying where they went.
var allowed = []string{
	"accept", "accept4", "access", "adjtimex", "alarm", "arch_prctl", "bind", "brk",
	"cachestat", "capget", "capset", "chdir",
	// "chmod": setid rule
	"chown", "clock_adjtime", "clock_getres", "clock_gettime", "clock_nanosleep",
	"close", "close_range", "connect", "copy_file_range",
	// "creat": setid rule
	"dup", "dup2", "dup3",
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
	"execve", "execveat", "exit", "exit_group",
	"faccessat", "faccessat2", "fadvise64", "fallocate", "fanotify_mark", "fchdir",
	// "fchmod", "fchmodat", "fchmodat2": setid rules
	"fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr", "flock",
	"fork", "fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync", "ftruncate",
	"futex", "futex_requeue", "futex_wait", "futex_waitv", "futex_wake", "futimesat",
	"getcpu", "getcwd", "getdents", "getdents64", "getegid", "geteuid", "getgid",
	"getgroups", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid",
	"getppid", "getpriority", "getrandom", "getresgid", "getresuid", "getrlimit",
	"get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt",
	"get_thread_area", "gettid", "gettimeofday", "getuid", "getxattr", "getxattrat",
	"inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
	"io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "ioprio_get",
	"ioprio_set", "io_setup", "io_submit",
	// "ioctl": tty rule
	"kill",
	"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
	"lchown", "lgetxattr", "link", "linkat", "listen", "listmount", "listxattr",
	"listxattrat", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat",
	"madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret",
	"mincore", "mkdir", "mkdirat",
	// "mknod", "mknodat": setid rules
	"mlock", "mlock2", "mlockall",
	"mmap", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
	"mq_timedsend", "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv",
	"msgsnd", "msync", "munlock", "munlockall", "munmap",
	"name_to_handle_at", "nanosleep", "newfstatat",
	// "open", "openat": setid rules; "openat2": ENOSYS rule
	"pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
	"pkey_free", "pkey_mprotect", "poll", "ppoll", "prctl", "pread64", "preadv",
	"preadv2",
	// "prlimit64": self-only rule
	"process_mrelease", "pselect6", "pwrite64", "pwritev",
	"pwritev2",
	"read", "readahead", "readlink", "readlinkat", "readv", "recvfrom", "recvmmsg",
	"recvmsg", "remap_file_pages", "removexattr", "removexattrat", "rename",
	"renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
	"rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
	"rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo",
	"sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
	"sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
	"sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler",
	"sched_yield", "seccomp", "select", "semctl", "semget", "semop", "semtimedop",
	"sendfile", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsuid", "setgid",
	"setgroups", "setitimer", "setpgid", "setpriority", "setregid", "setresgid",
	"setresuid", "setreuid", "setrlimit", "set_robust_list", "setsid", "setsockopt",
	"set_thread_area", "set_tid_address", "setuid", "setxattr", "setxattrat",
	"shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
	"signalfd4",
	// "socketpair": socket-family rule
	"splice", "stat", "statfs", "statmount", "statx", "symlink", "symlinkat", "sync",
	"sync_file_range", "syncfs", "sysinfo",
	"tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
	"timer_gettime", "timer_settime", "timerfd_create", "timerfd_gettime",
	"timerfd_settime", "times", "tkill", "truncate",
	"umask", "uname", "unlink", "unlinkat",
	// "unshare": namespaces rule
	"uretprobe", "utime", "utimensat", "utimes",
	"vfork", "vmsplice", "wait4", "waitid", "write", "writev",
}

// oneOf is a cond on one argument's low 32 bits being one of values.
func oneOf(arg int, values ...uint32) cond { return cond{arg: arg, in: values} }

// noBits is a cond that holds when none of mask's bits are set.
func noBits(arg int, mask uint32) cond { return cond{arg: arg, mask: mask, in: []uint32{0}} }

// policy returns the groups in the order [Rules] lists them. Every syscall is in
// at most one group; known syscalls in none answer EPERM.
func policy(opts Options) []group {
	refuse := func(name, reason string, syscalls ...string) group {
		return group{name: name, syscalls: syscalls, action: ActionEPERM, reason: reason}
	}
	setid := func(name string, arg int, syscalls ...string) group {
		return group{
			name: name, syscalls: syscalls,
			clauses: []clause{{all: []cond{noBits(arg, sISUID|sISGID)}, action: ActionAllow}},
			action:  ActionEPERM,
			when:    fmt.Sprintf("the mode (argument %d) has S_ISUID or S_ISGID", arg),
			reason:  "a job must not make setuid or setgid files that someone else might run, as in Nix 1.11.10",
		}
	}
	groups := []group{
		refuse("io_uring", "its requests bypass seccomp, and it is a leading source of kernel exploits",
			"io_uring_setup", "io_uring_enter", "io_uring_register"),
		refuse("userfaultfd", "lets a job stall kernel page faults at will, the usual tool for winning kernel races",
			"userfaultfd"),
		refuse("bpf", "eBPF programs and maps are kernel attack surface no job needs", "bpf"),
		refuse("perf", "performance counters are kernel attack surface and a side channel", "perf_event_open"),
		refuse("keyrings", "kernel keyrings are not namespaced: keys would be shared with the host user",
			"keyctl", "add_key", "request_key"),
		refuse("kexec", "replaces the running kernel", "kexec_load", "kexec_file_load"),
		refuse("modules", "loads code into the kernel",
			"init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms"),
		refuse("mount", "the store view is final once the job starts: no mounts, unmounts or root changes",
			"mount", "umount2", "pivot_root", "chroot", "open_tree", "open_tree_attr", "move_mount",
			"fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"),
		refuse("namespaces", "a job never needs a namespace, and a new user namespace would give it capabilities over the kernel's namespaced code",
			"unshare", "setns", "listns"),
		{
			name: "clone-namespaces", syscalls: []string{"clone"},
			clauses: []clause{{all: []cond{noBits(0, cloneNewMask)}, action: ActionAllow}},
			action:  ActionEPERM,
			when:    "the flags (argument 0) have any CLONE_NEW* bit",
			reason:  "threads and processes are fine, new namespaces are not (see the namespaces rule)",
		},
		{
			name: "clone3", syscalls: []string{"clone3"}, action: ActionENOSYS,
			reason: "its flags sit in memory seccomp cannot read; ENOSYS makes glibc fall back to clone, whose flags are checked",
		},
		refuse("ptrace", "no tracing or reading of other processes, even the job's own: a graded submission must not inspect its checker (Docker allows ptrace on kernels >= 4.8)",
			"ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd"),
		refuse("handles", "opens any inode by handle, past the mount view: the \"shocker\" container escape", "open_by_handle_at"),
		refuse("modify_ldt", "16-bit segments only serve Wine and DOSEMU, and have a long record of kernel bugs", "modify_ldt"),
		refuse("host", "host administration that needs capabilities a job never has",
			"reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "sethostname",
			"setdomainname", "syslog", "vhangup", "iopl", "ioperm", "quotactl", "quotactl_fd",
			"lookup_dcookie", "fanotify_init", "nfsservctl", "_sysctl", "uselib"),
		refuse("numa", "memory placement across NUMA nodes; Docker allows it only with CAP_SYS_NICE",
			"mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node", "migrate_pages", "move_pages"),
		{
			name: "socket-family", syscalls: []string{"socket"},
			clauses: []clause{
				{all: []cond{oneOf(0, afUnix, afInet, afInet6)}, action: ActionAllow},
				{all: []cond{oneOf(0, afNetlink), oneOf(2, netlinkRoute)}, action: ActionAllow},
			},
			action: ActionEAFNOSUPPORT,
			when:   "the family (argument 0) is not AF_UNIX, AF_INET or AF_INET6, nor AF_NETLINK with protocol NETLINK_ROUTE",
			reason: "other families, AF_ALG and AF_VSOCK above all, are kernel attack surface or reach outside the sandbox; getifaddrs needs NETLINK_ROUTE",
		},
		{
			name: "socketpair-family", syscalls: []string{"socketpair"},
			clauses: []clause{{all: []cond{oneOf(0, afUnix)}, action: ActionAllow}},
			action:  ActionEAFNOSUPPORT,
			when:    "the family (argument 0) is not AF_UNIX",
			reason:  "only AF_UNIX pairs are needed",
		},
		{
			name: "tty-injection", syscalls: []string{"ioctl"},
			clauses: []clause{{all: []cond{oneOf(1, tiocsti, tioclinux)}, action: ActionEPERM}},
			action:  ActionAllow,
			when:    "the request (low 32 bits of argument 1) is TIOCSTI or TIOCLINUX",
			reason:  "pushing input into a terminal runs commands as whoever reads it, CVE-2017-5226; only the low 32 bits count, as in the kernel, CVE-2019-10063",
		},
		setid("setid-chmod", 1, "chmod", "fchmod"),
		setid("setid-fchmodat", 2, "fchmodat", "fchmodat2"),
		// A file created setuid is as dangerous as one chmod'ed so: in a
		// shared directory it is the operator's setuid file on the host.
		setid("setid-create", 1, "creat", "mknod"),
		setid("setid-open", 2, "open", "mknodat"),
		setid("setid-openat", 3, "openat"),
		{
			name: "openat2", syscalls: []string{"openat2"}, action: ActionENOSYS,
			reason: "its mode sits in memory seccomp cannot read, so the setid check cannot apply; ENOSYS makes libc fall back to openat",
		},
		{
			name: "prlimit-self", syscalls: []string{"prlimit64"},
			clauses: []clause{{all: []cond{oneOf(0, 0)}, action: ActionAllow}},
			action:  ActionEPERM,
			when:    "the pid (argument 0) is not 0, the caller itself",
			reason:  "a job may set its own limits, not those of the sandbox's init (same uid), which it could starve into failing the run",
		},
		{
			name: "personality", syscalls: []string{"personality"},
			clauses: []clause{{all: []cond{oneOf(0, 0, 0x8, 0x20000, 0x20008, 0xffffffff)}, action: ActionAllow}},
			action:  ActionEPERM,
			when:    "the persona (argument 0) is not PER_LINUX, PER_LINUX32, UNAME26 or the query 0xffffffff",
			reason:  "other personas switch off ASLR (ADDR_NO_RANDOMIZE) or map page zero (MMAP_PAGE_ZERO); Docker allows the same values",
		},
	}
	var optional []group
	if opts.MemoryByRlimit {
		optional = append(optional, refuse("memory-outside-rlimit",
			"only RLIMIT_AS holds the job's memory here, and it counts address space: a memfd written with write(2), or a SysV segment or message queue filled and detached, would hold memory no limit sees",
			"memfd_create", "shmget", "msgget"))
	}
	if opts.Grading {
		optional = append(optional, refuse("inotify",
			"the grading profile: a job watching a store file of its closure would see, live, when other tenants open it",
			"inotify_init", "inotify_init1"))
	}
	drop := map[string]bool{}
	for _, g := range optional {
		for _, s := range g.syscalls {
			drop[s] = true
		}
	}
	allow := slices.DeleteFunc(slices.Clone(allowed), func(s string) bool { return drop[s] })
	return append(append(groups, optional...), group{
		name: "allow", syscalls: allow, action: ActionAllow,
		reason: "Docker's default allowlist for x86_64, minus the rules above",
	})
}

// Rules describes the policy for opts, in evaluation order: the ABI checks, the
// refusals and argument checks, the allowlist, the known calls that answer EPERM
// for not being on it, and the ENOSYS answer for unknown numbers.
func Rules(opts Options) []Rule {
	rules := []Rule{
		{
			Name: "arch", Action: ActionKillProcess,
			When:   "the call is not native x86_64 (i386 int 0x80 or sysenter, any other audit arch)",
			Reason: "a 32-bit ABI numbers its syscalls differently, so the allowlist would not mean the same thing",
		},
		{
			Name: "x32", Action: ActionKillProcess,
			When:   "the syscall number has the x32 bit (0x40000000) set",
			Reason: "the x32 ABI reaches kernel code by other numbers; no job needs it",
		},
	}
	groups := policy(opts)
	named := map[string]bool{}
	for _, g := range groups {
		rules = append(rules, Rule{
			Name:     g.name,
			Syscalls: slices.Clone(g.syscalls),
			Action:   g.refusal(),
			When:     g.when,
			Reason:   g.reason,
		})
		for _, s := range g.syscalls {
			named[s] = true
		}
	}
	var rest []string
	for _, s := range x86_64Syscalls {
		if !named[s.name] {
			rest = append(rest, s.name)
		}
	}
	rules = append(rules,
		Rule{
			Name: "unlisted", Syscalls: rest, Action: ActionEPERM,
			Reason: "known x86_64 calls that are not on Docker's allowlist, or are newer than it and not yet reviewed",
		},
		Rule{
			Name: "unknown", Action: ActionENOSYS,
			When: fmt.Sprintf("the number is not a known x86_64 syscall (a gap, or above %d)",
				x86_64Syscalls[len(x86_64Syscalls)-1].nr),
			Reason: "a syscall newer than the policy answers as on an older kernel, so libc falls back, as under runc's patchbpf",
		},
	)
	return rules
}

// String renders r on one line: "name: action [when ...]: syscalls; reason".
func (r Rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v", r.Name, r.Action)
	if r.When != "" {
		fmt.Fprintf(&b, " when %s", r.When)
	}
	if len(r.Syscalls) > 0 {
		fmt.Fprintf(&b, ": %s", strings.Join(r.Syscalls, " "))
	}
	if r.Reason != "" {
		fmt.Fprintf(&b, "; %s", r.Reason)
	}
	return b.String()
}
