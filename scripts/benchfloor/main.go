// Command benchfloor measures a floor, not closet: how fast a cold run
// could be with closet's shape but no second Go program. It is a Go
// parent (like closet) that clones an init in seven new namespaces; the
// init is not a Go program but one function of raw system calls over a
// list the parent prepared (the pattern of closet's target child). It
// makes about the mounts closet's init makes for a one-path view (a
// tmpfs root, /dev of six device binds and a devpts, the store path,
// /proc with its masks, /tmp, /etc's files), pivots, forks the target,
// which execs with no_new_privs, and reaps it.
//
// It is NOT a sandbox: no seccomp, no Landlock, no capability drop, no
// checks, no report. scripts/bench times it beside closet and bubblewrap
// (benchtable -floor), so that the table shows how much of closet's cold
// start is its two Go runtimes and how much is the kernel's work.
//
// Usage: benchfloor STOREPATH (a store path with bin/true, e.g. busybox).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/sandbox/rawclone"
)

// op is one system call of the init: nr and its arguments.
type op struct{ nr, a, b, c, d, e uintptr }

// plan is what the init reads, prepared before the clone.
type plan struct {
	syncR      int
	ops        []op
	path       *byte
	argv, envv []*byte
	keep       [][]byte // the C strings ops point into
}

func (p *plan) cstr(s string) uintptr { return uintptr(unsafe.Pointer(p.cptr(s))) }

// cptr is s as a C string the plan keeps alive.
func (p *plan) cptr(s string) *byte {
	b := append([]byte(s), 0)
	p.keep = append(p.keep, b)
	return &b[0]
}

const atFDCWD = ^uintptr(99)

func main() {
	if len(os.Args) != 2 || !strings.HasPrefix(os.Args[1], "/nix/store/") {
		fmt.Fprintln(os.Stderr, "usage: benchfloor /nix/store/HASH-NAME (a store path with bin/true)")
		os.Exit(2)
	}
	sp := os.Args[1]
	// The root is mounted over a directory of the parent's: any will do,
	// in the init's own mount namespace.
	root, err := os.MkdirTemp("", "benchfloor-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchfloor:", err)
		os.Exit(1)
	}
	defer os.Remove(root)
	p := &plan{}
	mount := func(src, dst, typ string, flags uintptr, data string) {
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
		p.ops = append(p.ops, op{unix.SYS_MOUNT, s, p.cstr(dst), t, flags, d})
	}
	mkdir := func(path string) { p.ops = append(p.ops, op{unix.SYS_MKDIRAT, atFDCWD, p.cstr(path), 0o755, 0, 0}) }
	mkfile := func(path string) {
		p.ops = append(p.ops, op{unix.SYS_MKNODAT, atFDCWD, p.cstr(path), unix.S_IFREG | 0o644, 0, 0})
	}
	setattr := func(path string, set uint64, flags uintptr) {
		a := &unix.MountAttr{Attr_set: set}
		p.keep = append(p.keep, (*[unsafe.Sizeof(*a)]byte)(unsafe.Pointer(a))[:])
		p.ops = append(p.ops, op{unix.SYS_MOUNT_SETATTR, atFDCWD, p.cstr(path), flags, uintptr(unsafe.Pointer(a)), unsafe.Sizeof(*a)})
	}
	in := func(rel string) string { return filepath.Join(root, rel) }

	mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")
	for _, d := range []string{"dev", "nix", "nix/store", "proc", "tmp", "etc", "home"} {
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
	mkdir(in(sp))
	mount(sp, in(sp), "", unix.MS_BIND, "")
	setattr(in("nix/store"), unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, unix.AT_RECURSIVE)
	mount("proc", in("proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	for _, f := range []string{"keys", "key-users", "timer_list", "cmdline"} {
		mount("/dev/null", in("proc/"+f), "", unix.MS_BIND, "")
		setattr(in("proc/"+f), unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, 0)
	}
	for _, d := range []string{"acpi", "bus", "irq", "driver"} {
		mount("tmpfs", in("proc/"+d), "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0,mode=0555")
	}
	for _, d := range []string{"sys", "fs"} {
		mount(in("proc/"+d), in("proc/"+d), "", unix.MS_BIND|unix.MS_REC, "")
		setattr(in("proc/"+d), unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, unix.AT_RECURSIVE)
	}
	mount("tmpfs", in("tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
	for _, f := range []string{"passwd", "group", "hosts", "nsswitch.conf"} {
		mkfile(in("etc/" + f))
	}
	p.ops = append(p.ops,
		op{unix.SYS_CHDIR, p.cstr(root), 0, 0, 0, 0},
		op{unix.SYS_PIVOT_ROOT, p.cstr("."), p.cstr("."), 0, 0, 0},
		op{unix.SYS_UMOUNT2, p.cstr("."), unix.MNT_DETACH, 0, 0, 0},
		op{unix.SYS_CHDIR, p.cstr("/"), 0, 0, 0, 0})
	setattr("/", unix.MOUNT_ATTR_RDONLY, 0)
	p.path = p.cptr(sp + "/bin/true")
	p.argv = []*byte{p.cptr("true"), nil}
	p.envv = []*byte{nil}

	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchfloor:", err)
		os.Exit(1)
	}
	p.syncR = int(r.Fd())
	flags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC |
		unix.CLONE_NEWUTS | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP | unix.SIGCHLD)
	pid, errno := fork(p, flags)
	if errno != 0 {
		fmt.Fprintln(os.Stderr, "benchfloor: clone:", errno)
		os.Exit(1)
	}
	// The maps, as closet's parent writes them for a job of the caller's.
	ps := "/proc/" + strconv.Itoa(pid)
	os.WriteFile(ps+"/uid_map", []byte("1000 "+strconv.Itoa(os.Geteuid())+" 1\n"), 0)
	os.WriteFile(ps+"/setgroups", []byte("deny"), 0)
	os.WriteFile(ps+"/gid_map", []byte("100 "+strconv.Itoa(os.Getegid())+" 1\n"), 0)
	w.Write([]byte{1})
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		fmt.Fprintf(os.Stderr, "benchfloor: the init failed: %v (100+N: its Nth system call; 99: execve)\n", ws)
		os.Exit(1)
	}
	_ = p.keep
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
// initstage.confineAndExec for why).
//
//go:nosplit
//go:norace
//go:nocheckptr
func initMain(p *plan) {
	var b [1]byte
	syscall.RawSyscall(unix.SYS_READ, uintptr(p.syncR), uintptr(unsafe.Pointer(&b[0])), 1)
	for i := range p.ops {
		o := &p.ops[i]
		if _, _, e := syscall.RawSyscall6(o.nr, o.a, o.b, o.c, o.d, o.e, 0); e != 0 {
			syscall.RawSyscall(unix.SYS_EXIT_GROUP, 100+uintptr(i), 0, 0)
		}
	}
	r, _, _ := syscall.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if r == 0 {
		syscall.RawSyscall(unix.SYS_SETSID, 0, 0, 0)
		syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0)
		syscall.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(p.path)), uintptr(unsafe.Pointer(&p.argv[0])), uintptr(unsafe.Pointer(&p.envv[0])))
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, 99, 0, 0)
	}
	var st int32
	syscall.RawSyscall6(unix.SYS_WAIT4, r, uintptr(unsafe.Pointer(&st)), 0, 0, 0, 0)
	syscall.RawSyscall(unix.SYS_EXIT_GROUP, uintptr((st>>8)&0xff), 0, 0)
}
