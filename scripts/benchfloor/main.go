// Command benchfloor measures a floor, not closet: how fast a cold run
// could be with closet's shape but no second Go program. It is a Go
// parent (like closet) that clones an init in seven new namespaces; the
// init is not a Go program but one function of raw system calls over a
// list the parent prepared (the pattern of closet's target child). It
// makes about the mounts closet's init makes for a one-path view (a
// tmpfs root, /dev of six device binds and a devpts, the store path,
// /proc with its masks, /tmp, /etc's files), pivots, forks the target,
// which execs with no_new_privs, and reaps it. The init writes the
// target's status on a pipe before it exits, as closet's init sends its
// Result, and the parent exits on it: neither waits for the kernel's
// teardown of the namespaces (nor does bubblewrap's).
//
// With -confine it also does what closet adds to that view and to the
// target's start: every /proc mask and read-only bind of closet's, the
// scratch tmpfs bound at /tmp, /dev/shm and $HOME, /etc's files written,
// the /dev links, the user quotas, the hostname, lo up, and, in the
// target's child, closet's steps: signals reset, a new cgroup namespace,
// setsid, the Landlock fence (closet's rules, built after pivot_root),
// fds closed, every capability dropped, no_new_privs and closet's own
// seccomp program. It is still not closet: no closure is read, no GC
// root is held, no spec crosses a pipe, nothing is checked or reported.
//
// It is NOT a sandbox: without -confine, no seccomp, no Landlock, no
// capability drop; with it, no checks; never a report. scripts/bench
// times both beside closet and bubblewrap (benchtable -floor), so that
// the table shows how much of closet's cold start is its two Go
// runtimes and how much is the kernel's work.
//
// Usage: benchfloor [-confine] STOREPATH [STOREPATH...]: the view binds
// them all, and the first has bin/true (busybox, say).
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/sandbox/rawclone"
	"github.com/closet-sandbox/closet/internal/seccomp"
)

// op is one system call of a list the raw code runs: nr and its
// arguments, where bit i of reg says that argument i is a register's
// number (an fd an earlier op returned), and out, when not 0, is the
// register (out-1) its result goes to. nr opStore is not a system call:
// it writes register args[0] as a 32-bit value to at (a Landlock rule's
// parent fd).
type op struct {
	nr   uintptr
	args [5]uintptr
	reg  uint8
	out  uint8
	at   *uint32
}

const opStore = ^uintptr(0)

// plan is what the init reads, prepared before the clone.
type plan struct {
	syncR, resultW int
	ops            []op // the init's, in order
	child          []op // the target child's, before its execve
	path           *byte
	argv, envv     []*byte
	keep           [][]byte // the memory ops point into
	root           string   // the new root's mount point, in the parent's tree
}

// call adds system call nr to the init's ops.
func (p *plan) call(nr uintptr, a ...uintptr) { p.ops = append(p.ops, sys(nr, a...)) }

// mount adds a mount(2); "" is a NULL argument.
func (p *plan) mount(src, dst, typ string, flags uintptr, data string) {
	var s, t, d uintptr
	if src != "" {
		s = p.cstr(src)
	}
	if typ != "" {
		t = p.cstr(typ)
	}
	if data != "" {
		d = p.cstr(data)
	}
	p.call(unix.SYS_MOUNT, s, p.cstr(dst), t, flags, d)
}

func (p *plan) mkdir(path string) { p.call(unix.SYS_MKDIRAT, atFDCWD, p.cstr(path), 0o755) }

// mkfile makes an empty file: a mount point for a file.
func (p *plan) mkfile(path string) {
	p.call(unix.SYS_MKNODAT, atFDCWD, p.cstr(path), unix.S_IFREG|0o644)
}

// setattr adds a mount_setattr(2) setting the MOUNT_ATTR_* flags set.
func (p *plan) setattr(path string, set uint64, flags uintptr) {
	b := p.buf(int(unsafe.Sizeof(unix.MountAttr{})))
	binary.LittleEndian.PutUint64(b, set)
	p.call(unix.SYS_MOUNT_SETATTR, atFDCWD, p.cstr(path), flags, addr(b), uintptr(len(b)))
}

// in is rel beneath the new root.
func (p *plan) in(rel string) string { return filepath.Join(p.root, rel) }

func (p *plan) cstr(s string) uintptr { return uintptr(unsafe.Pointer(p.cptr(s))) }

// cptr is s as a C string the plan keeps alive.
func (p *plan) cptr(s string) *byte {
	b := append([]byte(s), 0)
	p.keep = append(p.keep, b)
	return &b[0]
}

// buf is n zero bytes the plan keeps alive.
func (p *plan) buf(n int) []byte {
	b := make([]byte, n)
	p.keep = append(p.keep, b)
	return b
}

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

const atFDCWD = ^uintptr(99)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchfloor:", err)
	os.Exit(1)
}

func main() {
	args := os.Args[1:]
	confine := len(args) > 0 && args[0] == "-confine"
	if confine {
		args = args[1:]
	}
	for _, a := range args {
		if !strings.HasPrefix(a, "/nix/store/") {
			args = nil
		}
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: benchfloor [-confine] /nix/store/HASH-NAME [STOREPATH...] (the first with bin/true; the view binds them all)")
		os.Exit(2)
	}
	sp := args[0]
	// The root is mounted over a directory of the parent's: any will do,
	// in the init's own mount namespace.
	root, err := os.MkdirTemp("", "benchfloor-")
	if err != nil {
		fail(err)
	}
	defer os.Remove(root)
	p := &plan{}
	p.root = root
	call, mount, mkdir, mkfile, setattr, in := p.call, p.mount, p.mkdir, p.mkfile, p.setattr, p.in
	const roNoExec = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NOEXEC

	mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")
	for _, d := range []string{"dev", "nix", "nix/store", "proc", "tmp", "etc", "home", "bin", "usr", "usr/bin"} {
		mkdir(in(d))
	}
	mount("tmpfs", in("dev"), "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755")
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		mkfile(in("dev/" + d))
		mount("/dev/"+d, in("dev/"+d), "", unix.MS_BIND, "")
	}
	mkdir(in("dev/pts"))
	mount("devpts", in("dev/pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
	mount("tmpfs", in("nix/store"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")
	for _, a := range args {
		if st, err := os.Stat(a); err == nil && !st.IsDir() {
			mkfile(in(a)) // a store path may be a file
		} else {
			mkdir(in(a))
		}
		mount(a, in(a), "", unix.MS_BIND, "")
	}
	setattr(in("nix/store"), unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, unix.AT_RECURSIVE)
	mount("proc", in("proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if !confine {
		for _, f := range []string{"keys", "key-users", "timer_list", "cmdline"} {
			mount("/dev/null", in("proc/"+f), "", unix.MS_BIND, "")
			setattr(in("proc/"+f), roNoExec, 0)
		}
		for _, d := range []string{"acpi", "bus", "irq", "driver"} {
			mount("tmpfs", in("proc/"+d), "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0,mode=0555")
		}
		for _, d := range []string{"sys", "fs"} {
			mount(in("proc/"+d), in("proc/"+d), "", unix.MS_BIND|unix.MS_REC, "")
			setattr(in("proc/"+d), roNoExec, unix.AT_RECURSIVE)
		}
		mount("tmpfs", in("tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
		for _, f := range []string{"passwd", "group", "hosts", "nsswitch.conf"} {
			mkfile(in("etc/" + f))
		}
	} else {
		confineView(p)
	}
	call(unix.SYS_CHDIR, p.cstr(root))
	call(unix.SYS_PIVOT_ROOT, p.cstr("."), p.cstr("."))
	call(unix.SYS_UMOUNT2, p.cstr("."), unix.MNT_DETACH)
	call(unix.SYS_CHDIR, p.cstr("/"))
	setattr("/", unix.MOUNT_ATTR_RDONLY, 0)
	if confine {
		confineTarget(p)
	} else {
		p.child = append(p.child, sys(unix.SYS_SETSID), sys(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1))
	}
	p.path = p.cptr(sp + "/bin/true")
	p.argv = []*byte{p.cptr("true"), nil}
	p.envv = []*byte{nil}

	r, w, err := os.Pipe()
	if err != nil {
		fail(err)
	}
	p.syncR = int(r.Fd())
	// The init writes the target's status here before it exits, as
	// closet's init sends its Result.
	rr, rw, err := os.Pipe()
	if err != nil {
		fail(err)
	}
	p.resultW = int(rw.Fd())
	flags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC |
		unix.CLONE_NEWUTS | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP | unix.SIGCHLD)
	pid, errno := fork(p, flags)
	if errno != 0 {
		fail(fmt.Errorf("clone: %v", errno))
	}
	runtime.KeepAlive(p)
	// The maps, as closet's parent writes them for a job of the caller's.
	ps := "/proc/" + strconv.Itoa(pid)
	os.WriteFile(ps+"/uid_map", []byte("1000 "+strconv.Itoa(os.Geteuid())+" 1\n"), 0)
	os.WriteFile(ps+"/setgroups", []byte("deny"), 0)
	os.WriteFile(ps+"/gid_map", []byte("100 "+strconv.Itoa(os.Getegid())+" 1\n"), 0)
	w.Write([]byte{1})
	rw.Close()
	var st [1]byte
	if n, _ := rr.Read(st[:]); n == 1 && st[0] == 0 {
		return // the init, and its teardown, end behind us
	}
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	fmt.Fprintf(os.Stderr, "benchfloor: the init failed: %v (100+N: its Nth system call; 99: execve; 98: the target's Nth before it), the target's status %d\n", ws, st[0])
	os.Exit(1)
}

// closet's /proc masks and read-only parts (initstage's maskedProc and
// readOnlyProc).
var (
	maskedProc   = []string{"keys", "key-users", "kcore", "timer_list", "timer_stats", "sched_debug", "latency_stats", "sysrq-trigger", "acpi", "asound", "scsi", "bus", "irq", "driver", "cmdline"}
	readOnlyProc = []string{"sys", "sysrq-trigger", "irq", "bus", "fs"}
)

// confineView adds the parts of closet's view the bare floor leaves out,
// each by closet's method and in about its order; the lists are copies
// of initstage's, to be kept alike.
func confineView(p *plan) {
	call, mount, mkdir, setattr, in := p.call, p.mount, p.mkdir, p.setattr, p.in
	for n, t := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		call(unix.SYS_SYMLINKAT, p.cstr(t), atFDCWD, p.cstr(in("dev/"+n)))
	}
	mkdir(in("dev/shm"))
	call(unix.SYS_SYMLINKAT, p.cstr("/nix/store/x-busybox/bin/sh"), atFDCWD, p.cstr(in("bin/sh")))
	for name, v := range map[string]string{"max_inotify_instances": "32", "max_inotify_watches": "65536"} {
		if _, err := os.Stat("/proc/sys/user/" + name); err == nil { // as closet: a kernel without them has no such quota
			writeFile(p, in("proc/sys/user/"+name), unix.O_TRUNC, v)
		}
	}
	// Which masks apply is the kernel's, so the host's /proc says.
	dirMask, fileMask := "", ""
	for _, name := range maskedProc {
		var sb unix.Stat_t
		if unix.Lstat("/proc/"+name, &sb) != nil {
			continue
		}
		t := in("proc/" + name)
		switch dir := sb.Mode&unix.S_IFMT == unix.S_IFDIR; {
		case dir && dirMask != "":
			mount(dirMask, t, "", unix.MS_BIND, "")
		case dir:
			mount("tmpfs", t, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0,mode=0555")
			dirMask = t
		case fileMask != "":
			mount(fileMask, t, "", unix.MS_BIND, "")
		default:
			mount("/dev/null", t, "", unix.MS_BIND, "")
			setattr(t, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, 0)
			fileMask = t
		}
	}
	for _, name := range readOnlyProc {
		masked := false
		for _, m := range maskedProc {
			masked = masked || m == name
		}
		if _, err := os.Lstat("/proc/" + name); err != nil || masked {
			continue
		}
		t := in("proc/" + name)
		mount(t, t, "", unix.MS_BIND|unix.MS_REC, "")
		setattr(t, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, unix.AT_RECURSIVE)
	}
	// The scratch tmpfs, bound at /tmp, /dev/shm and $HOME.
	stg := in(".scratch")
	mkdir(stg)
	mount("tmpfs", stg, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700")
	for _, d := range []struct {
		sub, target string
		mode        uintptr
		noexec      bool
	}{{"tmp", "tmp", 0o1777, false}, {"shm", "dev/shm", 0o1777, true}, {"home", "home/u", 0o700, false}} {
		src := filepath.Join(stg, d.sub)
		call(unix.SYS_MKDIRAT, atFDCWD, p.cstr(src), 0o700)
		call(unix.SYS_FCHMODAT, atFDCWD, p.cstr(src), d.mode)
		if d.sub == "home" {
			mkdir(in("home/u"))
		}
		mount(src, in(d.target), "", unix.MS_BIND, "")
		if d.noexec {
			setattr(in(d.target), unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC, 0)
		}
	}
	call(unix.SYS_UMOUNT2, p.cstr(stg), unix.MNT_DETACH)
	call(unix.SYS_UNLINKAT, atFDCWD, p.cstr(stg), unix.AT_REMOVEDIR)
	for name, body := range map[string]string{
		"passwd":        "root:x:0:0::/root:/noshell\nu:x:1000:100::/home/u:/bin/sh\nnobody:x:65534:65534::/:/noshell\n",
		"group":         "root:x:0:\nusers:x:100:\nnogroup:x:65534:\n",
		"hosts":         "127.0.0.1 localhost\n::1 localhost\n",
		"nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
	} {
		writeFile(p, in("etc/"+name), unix.O_CREAT|unix.O_TRUNC, body)
	}
	hn := p.cptr("closet")
	call(unix.SYS_SETHOSTNAME, uintptr(unsafe.Pointer(hn)), 6)
	// lo up: SIOCSIFFLAGS on a datagram socket.
	ifr := p.buf(40)
	copy(ifr, "lo")
	binary.LittleEndian.PutUint16(ifr[16:], unix.IFF_UP|unix.IFF_LOOPBACK|unix.IFF_RUNNING)
	p.ops = append(p.ops,
		sys(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0).to(1),
		sys(unix.SYS_IOCTL, 1, unix.SIOCSIFFLAGS, addr(ifr)).regs(0),
		sys(unix.SYS_CLOSE, 1).regs(0))
}

// sys is system call nr with args a.
func sys(nr uintptr, a ...uintptr) op {
	o := op{nr: nr}
	copy(o.args[:], a)
	return o
}

// to sends o's result to register r.
func (o op) to(r uint8) op { o.out = r + 1; return o }

// regs makes o's arguments is (by position) register numbers.
func (o op) regs(is ...int) op {
	for _, i := range is {
		o.reg |= 1 << i
	}
	return o
}

// writeFile writes body to path, as closet's init writes /etc and the
// user quotas: open, write, close.
func writeFile(p *plan, path string, flags uintptr, body string) {
	b := []byte(body)
	p.keep = append(p.keep, b)
	p.ops = append(p.ops,
		sys(unix.SYS_OPENAT, atFDCWD, p.cstr(path), unix.O_WRONLY|unix.O_CLOEXEC|flags, 0o644).to(1),
		sys(unix.SYS_WRITE, 1, addr(b), uintptr(len(b))).regs(0),
		sys(unix.SYS_CLOSE, 1).regs(0))
}

// Landlock's access rights and scopes, and the ABI that brought each.
const (
	llExecute   = 1 << 0
	llWriteFile = 1 << 1
	llReadFile  = 1 << 2
	llReadDir   = 1 << 3
	llTruncate  = 1 << 14 // ABI 3
	llIoctlDev  = 1 << 15 // ABI 5
	llFileOnly  = llExecute | llWriteFile | llReadFile | llTruncate | llIoctlDev
	llScoped    = 1<<0 | 1<<1 // ABI 6: abstract unix sockets, signals
)

// llHandled is every filesystem right the kernel's Landlock ABI knows.
func llHandled(abi int) uint64 {
	switch {
	case abi >= 5:
		return 1<<16 - 1
	case abi >= 3:
		return 1<<15 - 1
	case abi == 2:
		return 1<<14 - 1
	}
	return 1<<13 - 1
}

// confineTarget builds closet's Landlock fence in the init, after
// pivot_root (its rules bind to the view's inodes), and gives the
// target's child closet's steps before execve. Where the kernel has no
// Landlock, there is no fence, as in closet.
func confineTarget(p *plan) {
	abi, _, e := syscall.RawSyscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	landlock := e == 0 && abi > 0
	if landlock {
		// The ruleset: register 2 from here to the child's restrict_self.
		all := llHandled(int(abi))
		attr := p.buf(24)
		binary.LittleEndian.PutUint64(attr[0:], all)
		if abi >= 6 {
			binary.LittleEndian.PutUint64(attr[16:], llScoped)
		}
		p.ops = append(p.ops, sys(unix.SYS_LANDLOCK_CREATE_RULESET, addr(attr), 24, 0).to(2))
		rule := func(path string, access uint64, dir bool) {
			r := p.buf(16) // struct landlock_path_beneath_attr, packed: 12 bytes
			access &= all
			if !dir {
				access &= llFileOnly
			}
			binary.LittleEndian.PutUint64(r, access)
			p.ops = append(p.ops,
				sys(unix.SYS_OPENAT, atFDCWD, p.cstr(path), unix.O_PATH|unix.O_CLOEXEC).to(1),
				op{nr: opStore, args: [5]uintptr{1}, reg: 1, at: (*uint32)(unsafe.Pointer(&r[8]))},
				sys(unix.SYS_LANDLOCK_ADD_RULE, 2, unix.LANDLOCK_RULE_PATH_BENEATH, addr(r), 0).regs(0),
				sys(unix.SYS_CLOSE, 1).regs(0))
		}
		// closet's rules (initstage.landlockPaths) for a job without binds.
		const ro = llExecute | llReadFile | llReadDir
		for _, d := range []string{"/nix/store", "/proc", "/etc", "/bin", "/usr", "/dev"} {
			rule(d, ro, true)
		}
		for _, d := range []string{"/tmp", "/dev/shm", "/dev/pts", "/home/u"} {
			rule(d, all, true)
		}
		for _, f := range []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/tty"} {
			rule(f, all, false)
		}
		rule("/", llReadDir, true)
	}

	// The child's steps, in closet's order (initstage.confineAndExec).
	dfl := p.buf(32) // struct sigaction: SIG_DFL, no flags, empty mask
	for s := uintptr(1); s < 65; s++ {
		if s != uintptr(unix.SIGKILL) && s != uintptr(unix.SIGSTOP) && (s < 32 || s > 33) {
			p.child = append(p.child, sys(unix.SYS_RT_SIGACTION, s, addr(dfl), 0, 8))
		}
	}
	none := p.buf(8)
	p.child = append(p.child,
		sys(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, addr(none), 0, 8),
		sys(unix.SYS_UNSHARE, unix.CLONE_NEWCGROUP),
		sys(unix.SYS_SETSID),
		sys(unix.SYS_CHDIR, p.cstr("/home/u")),
		sys(unix.SYS_GETCWD, addr(p.buf(4096)), 4096))
	if landlock {
		p.child = append(p.child, sys(unix.SYS_LANDLOCK_RESTRICT_SELF, 2, 0).regs(0))
	}
	p.child = append(p.child, sys(unix.SYS_CLOSE_RANGE, 3, ^uintptr(0), unix.CLOSE_RANGE_CLOEXEC))
	for c := uintptr(0); c <= unix.CAP_LAST_CAP; c++ {
		p.child = append(p.child, sys(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c))
	}
	hdr := p.buf(8)
	binary.LittleEndian.PutUint32(hdr, unix.LINUX_CAPABILITY_VERSION_3)
	prog, err := seccomp.Program(seccomp.Options{})
	if err != nil {
		fail(err)
	}
	p.keep = append(p.keep, unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(prog)*int(unsafe.Sizeof(prog[0]))))
	fprog := &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	p.keep = append(p.keep, unsafe.Slice((*byte)(unsafe.Pointer(fprog)), unsafe.Sizeof(*fprog)))
	p.child = append(p.child,
		sys(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL),
		sys(unix.SYS_CAPSET, addr(hdr), addr(p.buf(24))),
		sys(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1),
		sys(unix.SYS_PRCTL, unix.PR_GET_NO_NEW_PRIVS),
		sys(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(fprog))))
}

//go:noinline
//go:norace
//go:nocheckptr
func fork(p *plan, flags uintptr) (int, syscall.Errno) {
	rawclone.BeforeFork()
	r, _, errno := syscall.RawSyscall6(unix.SYS_CLONE, flags, 0, 0, 0, 0, 0)
	if errno != 0 || r != 0 {
		rawclone.AfterFork()
		return int(r), errno
	}
	rawclone.AfterForkInChild()
	initMain(p)
	return 0, 0
}

// initMain is the init: raw system calls only (see closet's
// initstage.confineAndExec for why). A failed call ends it with 100+N
// (its Nth call) or, in the target's child, 98; the target's status
// crosses the result pipe before it exits.
//
//go:nosplit
//go:norace
//go:nocheckptr
func initMain(p *plan) {
	var b [1]byte
	var regs [4]uintptr
	syscall.RawSyscall(unix.SYS_READ, uintptr(p.syncR), uintptr(unsafe.Pointer(&b[0])), 1)
	if i := runOps(p.ops, &regs); i >= 0 {
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, 100+uintptr(i), 0, 0)
	}
	r, _, _ := syscall.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if r == 0 {
		if runOps(p.child, &regs) >= 0 {
			syscall.RawSyscall(unix.SYS_EXIT_GROUP, 98, 0, 0)
		}
		syscall.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(p.path)), uintptr(unsafe.Pointer(&p.argv[0])), uintptr(unsafe.Pointer(&p.envv[0])))
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, 99, 0, 0)
	}
	var st int32
	syscall.RawSyscall6(unix.SYS_WAIT4, r, uintptr(unsafe.Pointer(&st)), 0, 0, 0, 0)
	b[0] = byte(st >> 8)
	if st&0x7f != 0 {
		b[0] = 128
	}
	syscall.RawSyscall(unix.SYS_WRITE, uintptr(p.resultW), uintptr(unsafe.Pointer(&b[0])), 1)
	syscall.RawSyscall(unix.SYS_EXIT_GROUP, uintptr(b[0]), 0, 0)
}

// runOps runs ops in order and returns the index of the first that
// failed, or -1.
//
//go:nosplit
//go:norace
//go:nocheckptr
func runOps(ops []op, regs *[4]uintptr) int {
	for i := range ops {
		o := &ops[i]
		var a [5]uintptr
		for j := range a {
			a[j] = o.args[j]
			if o.reg&(1<<j) != 0 {
				a[j] = regs[o.args[j]]
			}
		}
		if o.nr == opStore {
			*o.at = uint32(a[0])
			continue
		}
		r, _, e := syscall.RawSyscall6(o.nr, a[0], a[1], a[2], a[3], a[4], 0)
		if e != 0 {
			return i
		}
		if o.out != 0 {
			regs[o.out-1] = r
		}
	}
	return -1
}
