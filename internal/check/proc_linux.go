package check

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Attacks on processes and namespaces: host processes, the sandbox's init,
// new namespaces, capabilities, cgroups, the network, inherited fds,
// keyrings and socket families.

func procHost(p *Params) Result {
	pids, err := procPids()
	if err != nil {
		return escaped("readdir /proc: %v", err)
	}
	for _, pid := range pids {
		if isCanary(pid, p.Marker) {
			return escaped("the host canary is visible as /proc/%d", pid)
		}
	}
	if len(pids) > 16 {
		return escaped("%d processes in /proc: more than a sandbox of one job holds", len(pids))
	}
	return blocked("/proc shows %d processes (pids %v), none of the host's", len(pids), first(intStrings(pids), 8))
}

// isCanary reports whether pid is the host's canary process, by its argv
// (the marker alone also appears in this process's own arguments).
func isCanary(pid int, marker string) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return marker != "" && len(argv) == 4 && argv[2] == "canary" && argv[3] == marker
}

func intStrings(v []int) []string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return s
}

func ptraceHost(p *Params) Result {
	if p.HostPID == 0 {
		return skipped("no host canary")
	}
	err := unix.PtraceAttach(p.HostPID)
	if err == nil {
		unix.PtraceDetach(p.HostPID)
	}
	_, _, e := unix.RawSyscall(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(p.HostPID), 0)
	return allFail(
		try{fmt.Sprintf("ptrace(ATTACH, host pid %d)", p.HostPID), err},
		try{fmt.Sprintf("ptrace(SEIZE, %d)", p.HostPID), sysErr(0, e)},
		try{fmt.Sprintf("kill(%d, 0)", p.HostPID), hostKillProbe(p)},
	)
}

// hostKillProbe signals the host canary's pid number with signal 0. The
// number may name a sandbox process; then it is not the canary.
func hostKillProbe(p *Params) error {
	err := unix.Kill(p.HostPID, 0)
	if err == nil && !isCanary(p.HostPID, p.Marker) {
		return errors.New("the number names a sandbox process, not the canary")
	}
	return err
}

func ptraceInit(*Params) Result {
	tries := []try{{"ptrace(ATTACH, 1)", unix.PtraceAttach(1)}}
	buf := make([]byte, 8)
	local := []unix.Iovec{{Base: &buf[0], Len: 8}}
	remote := []unix.RemoteIovec{{Base: 0x400000, Len: 8}}
	_, err := unix.ProcessVMReadv(1, local, remote, 0)
	tries = append(tries, try{"process_vm_readv(1)", err})
	pfd, err := unix.PidfdOpen(1, 0)
	tries = append(tries, try{"pidfd_open(1)+pidfd_getfd", func() error {
		if err != nil {
			return err
		}
		defer unix.Close(pfd)
		fd, err := unix.PidfdGetfd(pfd, 3, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}()})
	tries = append(tries, try{"kcmp(1, self)", raw(unix.SYS_KCMP, 1, uintptr(os.Getpid()), 0, 0, 0)})
	return allFail(tries...)
}

func procInit(*Params) Result {
	var tries []try
	for _, f := range []string{"/proc/1/environ", "/proc/1/mem", "/proc/1/maps"} {
		_, err := os.ReadFile(f)
		tries = append(tries, try{"read " + f, err})
	}
	for _, f := range []string{"/proc/1/root", "/proc/1/cwd", "/proc/1/exe", "/proc/1/fd/3"} {
		_, err := os.Readlink(f)
		tries = append(tries, try{"readlink " + f, err})
	}
	_, err := os.ReadDir("/proc/1/fd")
	tries = append(tries, try{"readdir /proc/1/fd", err})
	_, err = os.ReadDir("/proc/1/root/")
	tries = append(tries, try{"readdir /proc/1/root/", err})
	return allFail(tries...)
}

// initLimits tries to change pid 1's resource limits and scheduling: the
// job shares init's uid, and an init starved of CPU time or files would
// end without reporting, so that the job's own failure reads as the
// sandbox's (A3). Reading a limit changes nothing; the writes use values
// that would end init quickly if they held.
func initLimits(*Params) Result {
	lim := unix.Rlimit{Cur: 1, Max: 1}
	var set unix.CPUSet
	set.Set(0)
	return allFail(
		try{"prlimit(1, RLIMIT_CPU, 1s)", unix.Prlimit(1, unix.RLIMIT_CPU, &lim, nil)},
		try{"prlimit(1, RLIMIT_NOFILE, 1)", unix.Prlimit(1, unix.RLIMIT_NOFILE, &lim, nil)},
		try{"setpriority(pid 1, 19)", unix.Setpriority(unix.PRIO_PROCESS, 1, 19)},
		try{"sched_setaffinity(1)", unix.SchedSetaffinity(1, &set)},
		try{"sched_setattr(1, SCHED_IDLE)", unix.SchedSetAttr(1, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: 5}, 0)},
	)
}

// starveInit demonstrates what init-limits allows: it lowers pid 1's
// CPU limit to one second, then makes pid 1 reap orphans until that second
// is spent. Not part of the battery (it takes seconds); run by hand:
// closet run --expose closet=/c ROOT -- /c __attack starve-init '{}'
func starveInit(*Params) int {
	if !archAsm {
		fmt.Println("not applicable: orphan() is x86_64 assembly")
		return 1
	}
	lim := unix.Rlimit{Cur: 1, Max: 1}
	if err := unix.Prlimit(1, unix.RLIMIT_CPU, &lim, nil); err != nil {
		fmt.Println("prlimit:", err)
		return 1
	}
	deadline := time.Now().Add(60 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		pid := orphan()
		if pid > 0 {
			var ws unix.WaitStatus
			unix.Wait4(int(pid), &ws, 0, nil)
			n++
		}
		if n%10000 == 0 {
			fmt.Println("orphans", n)
		}
	}
	fmt.Println("init survived", n, "orphans")
	return 0
}

func unshareAttempt(*Params) Result {
	return allFail(
		try{"unshare(CLONE_NEWUSER)", unix.Unshare(unix.CLONE_NEWUSER)},
		try{"unshare(CLONE_NEWNS)", unix.Unshare(unix.CLONE_NEWNS)},
		try{"unshare(CLONE_NEWNET)", unix.Unshare(unix.CLONE_NEWNET)},
		try{"unshare(CLONE_NEWTIME)", unix.Unshare(unix.CLONE_NEWTIME)},
	)
}

func cloneNewUser(*Params) Result {
	if !archAsm {
		return skipped("not applicable: the raw clone is x86_64 assembly; unshare covers the same flags")
	}
	var tries []try
	for _, f := range []struct {
		name  string
		flags uintptr
	}{{"CLONE_NEWUSER", unix.CLONE_NEWUSER}, {"CLONE_NEWNS", unix.CLONE_NEWNS}, {"CLONE_NEWPID", unix.CLONE_NEWPID}} {
		r := rawClone(f.flags | uintptr(unix.SIGCHLD))
		var err error
		if r < 0 {
			err = unix.Errno(-r)
		} else {
			var ws unix.WaitStatus
			unix.Wait4(int(r), &ws, 0, nil)
		}
		tries = append(tries, try{"clone(" + f.name + ")", err})
	}
	return allFail(tries...)
}

func setnsAttempt(*Params) Result {
	var tries []try
	for _, ns := range []string{"user", "mnt", "net"} {
		fd, err := unix.Open("/proc/self/ns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			tries = append(tries, try{"open /proc/self/ns/" + ns, err})
			continue
		}
		tries = append(tries, try{"setns(" + ns + ")", unix.Setns(fd, 0)})
		unix.Close(fd)
	}
	return allFail(tries...)
}

func capsEveryThread(*Params) Result {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return escaped("readdir /proc/self/task: %v", err)
	}
	var bad []string
	for _, t := range tasks {
		st := readStatus("/proc/self/task/" + t.Name() + "/status")
		bad = append(bad, statusProblems(t.Name(), st)...)
	}
	if len(bad) > 0 {
		return escaped("%s", strings.Join(first(bad, 6), "; "))
	}
	return blocked("%d threads: all capability sets 0, NoNewPrivs 1, Seccomp 2", len(tasks))
}

// readStatus parses a /proc status file into its fields.
func readStatus(path string) map[string]string {
	m := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// statusProblems lists what is wrong with a confined task's status.
func statusProblems(who string, st map[string]string) []string {
	var bad []string
	if len(st) == 0 {
		return []string{who + ": status unreadable"}
	}
	for _, c := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if st[c] != "0000000000000000" {
			bad = append(bad, fmt.Sprintf("%s: %s %s", who, c, st[c]))
		}
	}
	if st["NoNewPrivs"] != "1" {
		bad = append(bad, fmt.Sprintf("%s: NoNewPrivs %s", who, st["NoNewPrivs"]))
	}
	if st["Seccomp"] != "2" {
		bad = append(bad, fmt.Sprintf("%s: Seccomp %s", who, st["Seccomp"]))
	}
	return bad
}

func cgroupAttempt(*Params) Result {
	b, _ := os.ReadFile("/proc/self/cgroup")
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, l := range lines {
		if !strings.HasSuffix(l, ":/") {
			return escaped("/proc/self/cgroup has %q: a host cgroup path (want every hierarchy at / in an own cgroup namespace)", l)
		}
	}
	return allFail(
		try{"mount cgroup2", unix.Mount("cgroup2", "/tmp", "cgroup2", 0, "")},
		try{"mount cgroup v1 (release_agent)", unix.Mount("cgroup", "/tmp", "cgroup", 0, "none,name=closet")},
	)
}

func abstractHost(p *Params) Result {
	if p.Abstract == "" {
		return skipped("no host abstract socket")
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return escaped("socket: %v", err)
	}
	defer unix.Close(fd)
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: "@" + p.Abstract})
	return allFail(try{"connect @" + p.Abstract, err})
}

func tcpHost(p *Params) Result {
	var tries []try
	if p.TCPPort != 0 {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.TCPPort), time.Second)
		if err == nil {
			c.Close()
		}
		tries = append(tries, try{fmt.Sprintf("connect 127.0.0.1:%d (host listener)", p.TCPPort), unwrapNet(err)})
	}
	c, err := net.DialTimeout("tcp", "169.254.169.254:80", time.Second)
	if err == nil {
		c.Close()
	}
	tries = append(tries, try{"connect 169.254.169.254:80", unwrapNet(err)})
	return allFail(tries...)
}

func unwrapNet(err error) error {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return err
}

func netInterfaces(*Params) Result {
	ifs, err := net.Interfaces()
	if err != nil {
		return blocked("net.Interfaces: %v", err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	if len(names) != 1 || names[0] != "lo" {
		return escaped("interfaces: %s", strings.Join(names, " "))
	}
	return blocked("only lo")
}

func setTime(*Params) Result {
	tv := unix.Timeval{Sec: 1}
	ts := unix.Timespec{Sec: 1}
	tx := unix.Timex{Modes: unix.ADJ_OFFSET}
	_, err := unix.Adjtimex(&tx)
	return allFail(
		try{"settimeofday", unix.Settimeofday(&tv)},
		try{"clock_settime", unix.ClockSettime(unix.CLOCK_REALTIME, &ts)},
		try{"adjtimex(ADJ_OFFSET)", err},
	)
}

func inheritedFDs(*Params) Result {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return escaped("open /proc/self/fd: %v", err)
	}
	names, _ := d.Readdirnames(-1)
	self := int(d.Fd())
	d.Close()
	var extra, dirs []string
	for _, n := range names {
		fd, _ := strconv.Atoi(n)
		if fd == self {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			dirs = append(dirs, n)
		}
		if fd > 2 && !goRuntimeFD(fd) {
			link, _ := os.Readlink("/proc/self/fd/" + n)
			extra = append(extra, n+" -> "+link)
		}
	}
	if len(extra) > 0 || len(dirs) > 0 {
		return escaped("fds beyond 0-2: %s; directory fds: %s", strings.Join(extra, ", "), strings.Join(dirs, ", "))
	}
	return blocked("only fds 0, 1, 2; none a directory (host left a non-CLOEXEC fd open in closet)")
}

// goRuntimeFD reports whether fd is one this very process's Go runtime
// opened (the netpoller's epoll and its wakeup eventfd or pipe).
func goRuntimeFD(fd int) bool {
	link, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	return strings.HasPrefix(link, "anon_inode:[eventpoll]") || strings.HasPrefix(link, "anon_inode:[eventfd]") || strings.HasPrefix(link, "pipe:") && fd > 2 && pipeIsOurs(fd)
}

func pipeIsOurs(fd int) bool {
	// The runtime's wakeup pipe is non-blocking and close-on-exec.
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil && fl&unix.FD_CLOEXEC != 0
}

func keyctl(*Params) Result {
	const (
		keyctlGetKeyringID = 0
		keySpecSession     = ^uintptr(2) // -3
		keySpecProcess     = ^uintptr(1) // -2
	)
	return allFail(
		try{"keyctl(GET_KEYRING_ID, @s)", raw(unix.SYS_KEYCTL, keyctlGetKeyringID, keySpecSession, 1)},
		try{"keyctl(JOIN_SESSION_KEYRING)", raw(unix.SYS_KEYCTL, 1, 0)},
		try{"add_key(user)", raw(unix.SYS_ADD_KEY, cstr("user"), cstr("closet-check"), cstr("x"), 1, keySpecProcess)},
		try{"request_key(user)", raw(unix.SYS_REQUEST_KEY, cstr("user"), cstr("closet-check"), 0, 0)},
	)
}

// procKeys reads /proc/keys: keys the job can view would name the
// operator's keyrings (keyrings are not namespaced by mount or pid).
func procKeys(*Params) Result {
	b, err := os.ReadFile("/proc/keys")
	if err != nil {
		return blocked("read /proc/keys: %s", errName(err))
	}
	var keys []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) >= 9 {
			keys = append(keys, f[7]+" "+f[8])
		}
	}
	if len(keys) > 0 {
		return escaped("/proc/keys lists %d keys: %s", len(keys), strings.Join(first(keys, 4), ", "))
	}
	return blocked("/proc/keys is empty")
}

func afVsock(*Params) Result {
	return allFail(try{"socket(AF_VSOCK)", sockErr(unix.AF_VSOCK, unix.SOCK_STREAM, 0)})
}

func afAlg(*Params) Result {
	return allFail(try{"socket(AF_ALG)", sockErr(unix.AF_ALG, unix.SOCK_SEQPACKET, 0)})
}

func sockErr(family, typ, proto int) error {
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

func socketFamilies(*Params) Result {
	var ok []string
	n := 0
	for f := 0; f <= 45; f++ {
		if f == unix.AF_UNIX || f == unix.AF_INET || f == unix.AF_INET6 || f == unix.AF_NETLINK {
			continue
		}
		for _, t := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_RAW, unix.SOCK_SEQPACKET} {
			n++
			if sockErr(f, t, 0) == nil {
				ok = append(ok, fmt.Sprintf("family %d type %d", f, t))
			}
		}
	}
	for _, proto := range []int{unix.NETLINK_AUDIT, unix.NETLINK_NETFILTER, unix.NETLINK_KOBJECT_UEVENT, unix.NETLINK_XFRM, unix.NETLINK_GENERIC, unix.NETLINK_SOCK_DIAG} {
		n++
		if sockErr(unix.AF_NETLINK, unix.SOCK_RAW, proto) == nil {
			ok = append(ok, fmt.Sprintf("netlink protocol %d", proto))
		}
	}
	n++
	if sockErr(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP) == nil {
		ok = append(ok, "raw IPv4")
	}
	if len(ok) > 0 {
		return escaped("opened: %s", strings.Join(first(ok, 6), ", "))
	}
	return blocked("%d family/type/protocol combinations beyond unix, inet, inet6 and netlink-route: all refused", n)
}
