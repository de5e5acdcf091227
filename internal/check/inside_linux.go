package check

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Params is what the host side tells the inside side about the world
// outside: the canaries to reach for, and what the view should hold.
type Params struct {
	Closure   []string `json:"closure"`   // store paths the view must hold, exactly
	Foreign   []string `json:"foreign"`   // store paths on the host outside the closure
	HostPID   int      `json:"hostPid"`   // a canary process on the host
	Marker    string   `json:"marker"`    // a word in the canary's argv
	Abstract  string   `json:"abstract"`  // a host abstract unix socket (no leading @)
	TCPPort   int      `json:"tcpPort"`   // a host listener on 127.0.0.1
	HostFiles []string `json:"hostFiles"` // host files that must not be visible
	Share     string   `json:"share"`     // a --share'd host directory, inside path
	EnvCanary string   `json:"envCanary"` // a variable set in closet's environment
	Cap       int64    `json:"cap"`       // bound for the resource attacks (count or bytes)
	Chunk     int64    `json:"chunk"`     // write size for flood/fill
	Budget    int64    `json:"budget"`    // --tmp-size, for fill-scratch (0: Cap)
	HomeNames []string `json:"homeNames"` // entries of the caller's host home, which the job's own $HOME must not show
}

// attack is one attempt made inside the sandbox.
type attack struct {
	name, threat string
	fn           func(p *Params) Result
}

// batch holds the attacks one sandbox run makes in a row. Their order
// matters only for kill-all, which must come last.
var batch = []attack{
	{"store-enumerate", "FS-01", storeEnumerate},
	{"store-foreign", "FS-02", storeForeign},
	{"read-tenant", "FS-02", readTenant},
	{"store-links", "FS-03", storeLinks},
	{"nix-var", "FS-04", nixVar},
	{"nix-daemon-socket", "ND-01", nixDaemonSocket},
	{"pathname-sockets", "FS-05", pathnameSockets},
	{"host-files", "A1", hostFiles},
	{"mount-table", "FS-06", mountTable},
	{"store-write", "FS-07", storeWrite},
	{"store-remount", "FS-07", storeRemount},
	{"mount", "NS-04", mountAttempt},
	{"new-mount-api", "NS-04", newMountAPI},
	{"umount", "FS-08", umountAttempt},
	{"pivot-root", "NS-04", pivotRoot},
	{"chroot", "FS-11", chrootAttempt},
	{"cwd-root-leak", "FS-10", cwdRoot},
	{"launcher-write", "FS-12", launcherWrite},
	{"hardlink-store", "FS-13", hardlinkStore},
	{"dev-nodes", "FS-16", devNodes},
	{"sysfs", "FS-17", sysfs},
	{"proc-sys-write", "FS-18", procSysWrite},
	{"env-leak", "FS-19", envLeak},
	{"setuid-chmod", "FS-21", setuidChmod},
	{"setuid-create", "FS-21", setuidCreate},
	{"file-caps-xattr", "FS-22", fileCaps},
	{"proc-host-processes", "NS-01", procHost},
	{"ptrace-host", "NS-01", ptraceHost},
	{"ptrace-init", "NS-02", ptraceInit},
	{"proc-init", "NS-02", procInit},
	{"init-limits", "NS-02", initLimits},
	{"unshare", "NS-03", unshareAttempt},
	{"clone-newuser", "NS-03", cloneNewUser},
	{"setns", "NS-03", setnsAttempt},
	{"caps-every-thread", "NS-05", capsEveryThread},
	{"cgroup", "NS-08", cgroupAttempt},
	{"abstract-socket-host", "NS-09", abstractHost},
	{"tcp-host-loopback", "NS-09", tcpHost},
	{"net-interfaces", "NS-09", netInterfaces},
	{"set-time", "NS-11", setTime},
	{"inherited-fds", "FD-01", inheritedFDs},
	{"keyctl", "FD-06", keyctl},
	{"proc-keys", "FD-06", procKeys},
	{"af-vsock", "FD-07", afVsock},
	{"tiocsti", "TTY-01", tiocsti},
	{"tioclinux", "TTY-02", tioclinux},
	{"controlling-tty", "TTY-01", controllingTTY},
	{"host-ptys", "TTY-04", hostPtys},
	{"i386-int80", "K-01", childAttack("int80")},
	{"x32-syscall", "K-02", childAttack("x32")},
	{"unknown-syscall", "K-03", unknownSyscall},
	{"clone3", "K-04", clone3},
	{"io_uring", "K-05", ioUring},
	{"userfaultfd", "K-06", userfaultfd},
	{"bpf", "K-07", bpfAttempt},
	{"perf_event_open", "K-07", perfEventOpen},
	{"af-alg", "K-08", afAlg},
	{"socket-families", "K-08", socketFamilies},
	{"modules-kexec", "K-10", modules},
	{"reboot", "K-10", rebootAttempt},
	{"syslog-dmesg", "K-10", syslogAttempt},
	{"open-by-handle", "K-10", openByHandle},
	{"personality-ldt-iopl", "K-10", personalityLDT},
	{"sethostname", "K-10", sethostname},
	{"tiocsti-high-bits", "K-11", tiocstiHigh},
	{"no-new-privs", "P-01", noNewPrivs},
	{"setuid-root", "P-03", setuidRoot},
	{"fanotify", "FD-05", fanotify},
	{"seccomp-after-exec", "K-14", seccompAfterExec},
	{"kill-all", "NS-01", killAll}, // last: it kills the rest of the sandbox
}

// children are attacks run in a child process because the expected
// outcome is that the kernel kills the process making them.
var children = map[string]func(){
	"int80": func() { int80(20) },                     // i386 getpid
	"x32":   func() { rawSyscallNr(39 | 0x40000000) }, // x32 getpid
}

// Attacks lists the names of the attacks, in order, with their threat ids:
// the batch, then the ones that take a sandbox of their own.
func Attacks() [][2]string {
	var out [][2]string
	for _, a := range batch {
		out = append(out, [2]string{a.name, a.threat})
	}
	for _, a := range solo {
		out = append(out, [2]string{a.name, a.threat})
	}
	return append(out, hostJudged...)
}

// hostJudged are the attempts whose verdict only the host side can give.
var hostJudged = [][2]string{
	{"sysv-ipc-host", "NS-10"}, {"abstract-socket-inbound", "NS-09"}, {"cross-job-ipc", "FD-02"},
	{"daemon-outlives-job", "R-06"}, {"per-uid-quota", "R-08"}, {"persistence-next-job", "X-03"}, {"symlink-race-share", "FS-20"},
}

// Inside is the entry point of the hidden `closet __attack` command. args:
// MODE PARAMS-JSON [NAMES...]. It prints one result per line.
func Inside(args []string) int {
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}) // SIGSYS deaths must not dump core anywhere
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "usage: __attack MODE [PARAMS] [NAMES...]")
		return 2
	}
	mode := args[0]
	if mode == "canary" {
		// Ignore what a polite supervisor sends: only SIGKILL ends it.
		signal.Ignore(unix.SIGTERM, unix.SIGHUP, unix.SIGINT)
		for {
			time.Sleep(time.Hour)
		}
	}
	if mode == "status" {
		// K-14: the filter and the rest survive execve into a new image.
		var bad []string
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, t := range tasks {
			bad = append(bad, statusProblems(t.Name(), readStatus("/proc/self/task/"+t.Name()+"/status"))...)
		}
		if len(bad) > 0 {
			fmt.Println(strings.Join(bad, "; "))
			return 1
		}
		fmt.Printf("ok %d threads\n", len(tasks))
		return 0
	}
	if f, ok := children[mode]; ok {
		f()
		fmt.Println("survived")
		return 0
	}
	var p Params
	if len(args) > 1 {
		if err := json.Unmarshal([]byte(args[1]), &p); err != nil {
			fmt.Fprintln(os.Stderr, "bad params:", err)
			return 2
		}
	}
	only := map[string]bool{}
	for _, n := range args[min(2, len(args)):] {
		only[n] = true
	}
	switch mode {
	case "batch":
		for _, a := range batch {
			if len(only) > 0 && !only[a.name] {
				continue
			}
			r := a.fn(&p)
			r.Name, r.Threat = a.name, a.threat
			emit(r)
		}
		return 0
	case "hold", "hold-ipc", "hold-inotify":
		return hold(mode, &p)
	case "race-probe":
		return raceProbe(&p)
	case "starve-init":
		return starveInit(&p)
	case "daemonize":
		return daemonize(&p)
	case "persist-write":
		return persistWrite(&p)
	case "persist-read", "cross-job":
		r := Result{}
		if mode == "persist-read" {
			r = persistRead(&p)
			r.Name, r.Threat = "persistence-next-job", "X-03"
		} else {
			r = crossJob(&p)
			r.Name, r.Threat = "cross-job-ipc", "FD-02"
		}
		emit(r)
		return 0
	}
	for _, a := range solo {
		if a.name == mode {
			r := a.fn(&p)
			r.Name, r.Threat = a.name, a.threat
			if mode == "flood-output" {
				emitTo(os.Stderr, r)
			} else {
				emit(r)
			}
			return 0
		}
	}
	fmt.Fprintln(os.Stderr, "unknown mode", mode)
	return 2
}

func emit(r Result) { emitTo(os.Stdout, r) }

func emitTo(w *os.File, r Result) {
	b, _ := json.Marshal(r)
	w.Write(append(append([]byte(ResultPrefix), b...), '\n'))
}

// Verdict helpers.

func blocked(format string, a ...any) Result {
	return Result{Blocked: true, Evidence: fmt.Sprintf(format, a...)}
}

func escaped(format string, a ...any) Result {
	return Result{Evidence: fmt.Sprintf(format, a...)}
}

func skipped(format string, a ...any) Result {
	return Result{Skipped: true, Evidence: fmt.Sprintf(format, a...)}
}

// errName names an error by its errno when it has one.
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var en unix.Errno
	if errors.As(err, &en) {
		if n := unix.ErrnoName(en); n != "" {
			return n
		}
		return fmt.Sprintf("errno %d", int(en))
	}
	return err.Error()
}

// try is one refused call: its label and what it returned.
type try struct {
	what string
	err  error
}

// allFail is blocked when every call failed, escaped naming those that
// did not.
func allFail(tries ...try) Result {
	var got, ok []string
	for _, t := range tries {
		if t.err == nil {
			ok = append(ok, t.what)
		}
		got = append(got, t.what+": "+errName(t.err))
	}
	if len(ok) > 0 {
		return escaped("succeeded: %s (all: %s)", strings.Join(ok, ", "), strings.Join(got, "; "))
	}
	return blocked("%s", strings.Join(got, "; "))
}

func sysErr(r1 uintptr, e syscall.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

func raw(nr uintptr, a ...uintptr) error {
	var x [6]uintptr
	copy(x[:], a)
	_, _, e := unix.Syscall6(nr, x[0], x[1], x[2], x[3], x[4], x[5])
	if e != 0 {
		return e
	}
	return nil
}

func cstr(s string) uintptr {
	b, _ := unix.BytePtrFromString(s)
	return uintptr(unsafe.Pointer(b))
}

// storeFile finds a regular file inside the closure (for write, link and
// handle attacks).
func storeFile(p *Params) string {
	var found string
	for _, root := range p.Closure {
		filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || found != "" {
				return filepath.SkipDir
			}
			if d.Type().IsRegular() {
				found = path
				return filepath.SkipAll
			}
			return nil
		})
		if found != "" {
			break
		}
	}
	return found
}

// ---- the store and the filesystem view ----

func storeEnumerate(p *Params) Result {
	ents, err := os.ReadDir("/nix/store")
	if err != nil {
		return escaped("readdir /nix/store: %v", err)
	}
	want := map[string]bool{}
	for _, c := range p.Closure {
		want[filepath.Base(c)] = true
	}
	var extra []string
	for _, e := range ents {
		if !want[e.Name()] {
			extra = append(extra, e.Name())
		}
	}
	if len(extra) > 0 || len(ents) != len(want) {
		return escaped("%d entries, closure has %d; not in the closure: %s", len(ents), len(want), strings.Join(first(extra, 5), " "))
	}
	return blocked("/nix/store lists exactly the %d closure paths", len(ents))
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

func storeForeign(p *Params) Result {
	if len(p.Foreign) == 0 {
		return skipped("the host store has no path outside the closure")
	}
	for _, f := range p.Foreign {
		var st unix.Stat_t
		if err := unix.Lstat(f, &st); err == nil {
			return escaped("lstat %s: ok", f)
		} else if err != unix.ENOENT {
			return escaped("lstat %s: %v (want ENOENT)", f, errName(err))
		}
	}
	return blocked("%d store paths outside the closure: all ENOENT", len(p.Foreign))
}

func readTenant(p *Params) Result {
	var tenants []string
	for _, f := range p.Foreign {
		if strings.Contains(filepath.Base(f), "-tenant-") {
			tenants = append(tenants, f)
		}
	}
	// Also look by name, as an attacker who knows the naming scheme would.
	if ents, err := os.ReadDir("/nix/store"); err == nil {
		for _, e := range ents {
			if strings.Contains(e.Name(), "-tenant-") {
				tenants = append(tenants, "/nix/store/"+e.Name())
			}
		}
	}
	if len(tenants) == 0 {
		return skipped("no tenant-* path on this host to try")
	}
	for _, t := range tenants {
		if ents, err := os.ReadDir(t); err == nil {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			return escaped("read %s: %s", t, strings.Join(first(names, 5), " "))
		}
		if b, err := os.ReadFile(t); err == nil {
			return escaped("read %s: %d bytes", t, len(b))
		} else if !errors.Is(err, unix.ENOENT) {
			return escaped("open %s: %v (want ENOENT)", t, errName(err))
		}
	}
	return blocked("%d tenant paths: ENOENT", len(tenants))
}

func storeLinks(*Params) Result {
	return allFail(try{"stat /nix/store/.links", statErr("/nix/store/.links")})
}

func statErr(p string) error {
	var st unix.Stat_t
	return unix.Lstat(p, &st)
}

func nixVar(*Params) Result {
	var tries []try
	for _, p := range []string{"/nix/var", "/nix/var/nix/db", "/nix/var/nix/gcroots", "/nix/var/nix/profiles", "/nix/var/log/nix/drvs"} {
		tries = append(tries, try{"stat " + p, statErr(p)})
	}
	return allFail(tries...)
}

func nixDaemonSocket(*Params) Result {
	var tries []try
	for _, p := range []string{"/nix/var/nix/daemon-socket/socket", "/run/nix-daemon.socket"} {
		tries = append(tries, try{"connect " + p, dialUnix(p)})
	}
	return allFail(tries...)
}

func dialUnix(path string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrUnix{Name: path})
}

// pathnameSockets walks the whole view (but /proc) for sockets.
func pathnameSockets(*Params) Result {
	var socks []string
	n := 0
	filepath.WalkDir("/", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if path == "/proc" || path == "/sys" {
			return filepath.SkipDir
		}
		n++
		if d.Type()&os.ModeSocket != 0 {
			socks = append(socks, path)
		}
		return nil
	})
	if len(socks) > 0 {
		return escaped("sockets in the view: %s", strings.Join(first(socks, 5), " "))
	}
	return blocked("no pathname socket among %d files", n)
}

func hostFiles(p *Params) Result {
	var tries []try
	home := os.Getenv("HOME")
	for _, f := range append([]string{"/etc/shadow", "/root/.ssh", "/etc/nix/nix.conf", "/run/user", "/var"}, p.HostFiles...) {
		if f == home {
			// The job's own tmpfs $HOME, at the host home's path: what
			// counts is whether it shows anything of the host's home.
			tries = append(tries, try{"find the host home's entries in $HOME " + home, ownHome(home, p.HomeNames)})
			continue
		}
		_, err := os.ReadFile(f)
		if err != nil && errors.Is(err, unix.EISDIR) {
			err = nil
		}
		tries = append(tries, try{"read " + f, err})
	}
	// /home exists inside: it holds the job's own $HOME and must hold
	// nothing else, above all no host user's directory.
	own := filepath.Base(os.Getenv("HOME"))
	ents, err := os.ReadDir("/home")
	var others []string
	for _, e := range ents {
		if e.Name() != own {
			others = append(others, e.Name())
		}
	}
	if len(others) > 0 {
		return escaped("/home holds %s besides the job's own %s", strings.Join(others, " "), own)
	}
	tries = append(tries, try{"list /home beyond " + own, errOr(err, unix.ENOENT)})
	return allFail(tries...)
}

// ownHome is nil when home shows one of the host home's names (the host's
// home is in view), else ENOENT.
func ownHome(home string, hostNames []string) error {
	for _, n := range hostNames {
		if _, err := os.Lstat(filepath.Join(home, n)); err == nil {
			return nil
		}
	}
	return unix.ENOENT
}

func mountTable(p *Params) Result {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return escaped("read mountinfo: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var bad []string
	store := 0
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 7 {
			continue
		}
		mp, opts := f[4], f[5]
		for _, tag := range f[6:] {
			if tag == "-" {
				break
			}
			if strings.HasPrefix(tag, "shared:") || strings.HasPrefix(tag, "master:") {
				bad = append(bad, mp+" "+tag)
			}
		}
		if mp == "/nix/store" || strings.HasPrefix(mp, "/nix/store/") {
			store++
			o := "," + opts + ","
			for _, want := range []string{",ro,", ",nosuid,", ",nodev,"} {
				if !strings.Contains(o, want) {
					bad = append(bad, mp+" lacks "+strings.Trim(want, ","))
				}
			}
		}
		if mp == "/" && !strings.Contains(","+opts+",", ",ro,") {
			bad = append(bad, "/ is writable")
		}
	}
	if len(bad) > 0 {
		return escaped("%s", strings.Join(first(bad, 5), "; "))
	}
	return blocked("%d mounts; %d under /nix/store, all ro,nosuid,nodev; / ro; none shared with the host", len(lines), store)
}

func storeWrite(p *Params) Result {
	f := storeFile(p)
	if f == "" {
		return skipped("no regular file in the closure")
	}
	dir := filepath.Dir(f)
	tries := []try{
		{"open O_WRONLY " + f, openErr(f, unix.O_WRONLY, 0)},
		{"create in " + dir, openErr(dir+"/closet-check", unix.O_WRONLY|unix.O_CREAT, 0o644)},
		{"chmod", unix.Chmod(f, 0o777)},
		{"utimensat", unix.UtimesNano(f, []unix.Timespec{{}, {}})},
		{"rename", unix.Rename(f, f+".x")},
		{"unlink", unix.Unlink(f)},
		{"truncate", unix.Truncate(f, 0)},
	}
	return allFail(tries...)
}

func openErr(p string, flags int, mode uint32) error {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, mode)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

func storeRemount(p *Params) Result {
	target := "/nix/store"
	if len(p.Closure) > 0 {
		target = p.Closure[0]
	}
	return allFail(try{"mount MS_REMOUNT|MS_BIND rw " + target, unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND, "")})
}

func mountAttempt(*Params) Result {
	return allFail(
		try{"mount tmpfs /tmp", unix.Mount("tmpfs", "/tmp", "tmpfs", 0, "")},
		try{"mount proc /tmp", unix.Mount("proc", "/tmp", "proc", 0, "")},
		try{"bind / /tmp", unix.Mount("/", "/tmp", "", unix.MS_BIND, "")},
	)
}

func newMountAPI(*Params) Result {
	var tries []try
	fd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	tries = append(tries, try{"fsopen", err})
	fd, err = unix.OpenTree(unix.AT_FDCWD, "/nix/store", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	tries = append(tries, try{"open_tree", err})
	fd, err = unix.Fspick(unix.AT_FDCWD, "/", unix.FSPICK_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	tries = append(tries, try{"fspick", err})
	tries = append(tries, try{"mount_setattr / rw", unix.MountSetattr(unix.AT_FDCWD, "/", 0, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY})})
	tries = append(tries, try{"move_mount", unix.MoveMount(unix.AT_FDCWD, "/tmp", unix.AT_FDCWD, "/mnt", 0)})
	return allFail(tries...)
}

func umountAttempt(p *Params) Result {
	tries := []try{
		{"umount2 /proc", unix.Unmount("/proc", unix.MNT_DETACH)},
		{"umount2 /tmp", unix.Unmount("/tmp", unix.MNT_DETACH)},
	}
	if len(p.Closure) > 0 {
		tries = append(tries, try{"umount2 " + p.Closure[0], unix.Unmount(p.Closure[0], unix.MNT_DETACH)})
	}
	return allFail(tries...)
}

func pivotRoot(*Params) Result {
	return allFail(try{"pivot_root /tmp /tmp", unix.PivotRoot("/tmp", "/tmp")})
}

func chrootAttempt(*Params) Result {
	return allFail(try{"chroot /tmp", unix.Chroot("/tmp")}, try{"chroot .", unix.Chroot(".")})
}

func cwdRoot(*Params) Result {
	wd, err := os.Getwd()
	if err != nil || !strings.HasPrefix(wd, "/") {
		return escaped("getcwd %q: %v", wd, err)
	}
	root, _ := os.Readlink("/proc/self/root")
	cwd, _ := os.Readlink("/proc/self/cwd")
	if root != "/" || !strings.HasPrefix(cwd, "/") {
		return escaped("/proc/self/root -> %q, cwd -> %q", root, cwd)
	}
	var a, b unix.Stat_t
	unix.Stat("/", &a)
	unix.Stat("/../../..", &b)
	if a.Ino != b.Ino || a.Dev != b.Dev {
		return escaped("/.. is not /")
	}
	return blocked("cwd %s, root /, /.. is /", wd)
}

func launcherWrite(*Params) Result {
	tries := []try{{"open " + InsidePath + " O_WRONLY", openErr(InsidePath, unix.O_WRONLY, 0)}}
	pids, _ := procPids()
	for _, pid := range pids {
		exe := fmt.Sprintf("/proc/%d/exe", pid)
		if pid == os.Getpid() {
			continue
		}
		tries = append(tries, try{"open " + exe + " O_WRONLY", openErr(exe, unix.O_WRONLY, 0)})
		if pid == 1 {
			_, err := os.Readlink(exe)
			tries = append(tries, try{"readlink /proc/1/exe", err})
		}
	}
	tries = append(tries, try{"open /proc/self/exe O_WRONLY", openErr("/proc/self/exe", unix.O_WRONLY, 0)})
	return allFail(tries...)
}

func procPids() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

func hardlinkStore(p *Params) Result {
	f := storeFile(p)
	if f == "" {
		return skipped("no regular file in the closure")
	}
	tries := []try{{"link " + f + " /tmp/l", unix.Link(f, "/tmp/closet-check-link")}}
	if p.Share != "" {
		tries = append(tries, try{"link into the shared dir", unix.Link(f, p.Share+"/closet-check-link")})
	}
	return allFail(tries...)
}

func devNodes(*Params) Result {
	allowed := []string{"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd", "stdin", "stdout", "stderr"}
	ents, err := os.ReadDir("/dev")
	if err != nil {
		return escaped("readdir /dev: %v", err)
	}
	var extra []string
	for _, e := range ents {
		if !slices.Contains(allowed, e.Name()) {
			extra = append(extra, e.Name())
		}
	}
	if len(extra) > 0 {
		return escaped("unexpected in /dev: %s", strings.Join(extra, " "))
	}
	return allFail(
		try{"mknod char 1:3 in /tmp", unix.Mknod("/tmp/closet-null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))},
		try{"mknod block 8:0 in /dev/shm", unix.Mknod("/dev/shm/closet-sda", unix.S_IFBLK|0o666, int(unix.Mkdev(8, 0)))},
		try{"open /dev/kmsg", openErr("/dev/kmsg", unix.O_RDONLY, 0)},
		try{"open /dev/mem", openErr("/dev/mem", unix.O_RDONLY, 0)},
	)
}

func sysfs(*Params) Result {
	return allFail(
		try{"stat /sys/kernel", statErr("/sys/kernel")},
		try{"stat /sys/fs/cgroup", statErr("/sys/fs/cgroup")},
		try{"stat /sys/firmware", statErr("/sys/firmware")},
	)
}

func procSysWrite(*Params) Result {
	var tries []try
	for _, f := range []string{"/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger", "/proc/sys/kernel/hostname", "/proc/sys/user/max_user_namespaces"} {
		tries = append(tries, try{"write " + f, openErr(f, unix.O_WRONLY, 0)})
	}
	tries = append(tries, try{"read /proc/kcore", openErr("/proc/kcore", unix.O_RDONLY, 0)})
	return allFail(tries...)
}

func envLeak(p *Params) Result {
	keep := []string{"HOME", "USER", "LOGNAME", "PATH", "LANG", "TERM"}
	var extra []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(keep, k) {
			extra = append(extra, k)
		}
	}
	if p.EnvCanary != "" {
		if _, ok := os.LookupEnv(p.EnvCanary); ok {
			return escaped("the host's %s reached the job", p.EnvCanary)
		}
	}
	if len(extra) > 0 {
		return escaped("variables beyond the allowlist: %s", strings.Join(extra, " "))
	}
	return blocked("environment: only %s", strings.Join(keep, " "))
}

// setuidChmod tries to set setuid and setgid bits in a directory the host
// also sees: a file left there setuid to the operator's uid would run as
// the operator for anyone on the host.
func setuidChmod(p *Params) Result {
	if p.Share == "" {
		return skipped("no shared directory")
	}
	f := p.Share + "/suid-chmod"
	if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
		return skipped("create %s: %v", f, err)
	}
	fd, _ := unix.Open(f, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	defer unix.Close(fd)
	tries := []try{
		{"chmod 4755", unix.Chmod(f, 0o4755)},
		{"chmod 2755", unix.Chmod(f, 0o2755)},
		{"fchmod 4755", unix.Fchmod(fd, 0o4755)},
		{"fchmodat 6755", unix.Fchmodat(unix.AT_FDCWD, f, 0o6755, 0)},
		{"fchmodat2 4755", raw(452, atFDCWD, cstr(f), 0o4755, 0)},
		{"chmod 4755 (high bits)", raw(unix.SYS_CHMOD, cstr(f), 0o4755|1<<32)},
	}
	r := allFail(tries...)
	if r.Blocked {
		if m := modeOf(f); m&(unix.S_ISUID|unix.S_ISGID) != 0 {
			return escaped("mode is %#o after: %s", m, r.Evidence)
		}
	}
	return r
}

func modeOf(f string) uint32 {
	var st unix.Stat_t
	if unix.Lstat(f, &st) != nil {
		return 0
	}
	return st.Mode
}

// setuidCreate makes setuid files without chmod: the mode argument of
// open(O_CREAT), creat, mknod and mkdir. The host side looks for the
// result too.
func setuidCreate(p *Params) Result {
	if p.Share == "" {
		return skipped("no shared directory")
	}
	unix.Umask(0)
	defer unix.Umask(0o22)
	var got []string
	check := func(what, f string, err error) {
		if err == nil {
			if m := modeOf(f); m&(unix.S_ISUID|unix.S_ISGID) != 0 {
				got = append(got, fmt.Sprintf("%s -> mode %#o", what, m&0o7777))
			}
		}
	}
	f := p.Share + "/suid-open"
	check("open(O_CREAT, 04755)", f, openErr(f, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o4755))
	f = p.Share + "/suid-creat"
	fd, err := unix.Creat(f, 0o6755)
	if err == nil {
		unix.Close(fd)
	}
	check("creat(06755)", f, err)
	f = p.Share + "/suid-mknod"
	check("mknod(S_IFREG|04755)", f, unix.Mknod(f, unix.S_IFREG|0o4755, 0))
	f = p.Share + "/suid-openat2"
	fd, err = unix.Openat2(unix.AT_FDCWD, f, &unix.OpenHow{Flags: unix.O_WRONLY | unix.O_CREAT | unix.O_CLOEXEC, Mode: 0o4755})
	if err == nil {
		unix.Close(fd)
	}
	check("openat2(O_CREAT, 04755)", f, err)
	f = p.Share + "/sgid-dir"
	check("mkdir(02755)", f, unix.Mkdir(f, 0o2755))
	if len(got) > 0 {
		return escaped("setuid/setgid files made in the shared directory: %s", strings.Join(got, "; "))
	}
	return blocked("open, creat, mknod, openat2 and mkdir with set-id modes left no set-id file")
}

func fileCaps(p *Params) Result {
	f := "/tmp/closet-caps"
	os.WriteFile(f, nil, 0o755)
	// VFS_CAP_REVISION_2 with CAP_SETUID permitted and effective.
	capv := []byte{0x01, 0x00, 0x00, 0x02, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	tries := []try{{"setxattr security.capability", unix.Setxattr(f, "security.capability", capv, 0)}}
	if p.Share != "" {
		g := p.Share + "/caps"
		os.WriteFile(g, nil, 0o755)
		tries = append(tries, try{"setxattr security.capability (shared dir)", unix.Setxattr(g, "security.capability", capv, 0)})
	}
	tries = append(tries, try{"setxattr trusted.x", unix.Setxattr(f, "trusted.closet", []byte("x"), 0)})
	return allFail(tries...)
}

// ---- processes and namespaces ----

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

// ---- terminals ----

func tiocsti(*Params) Result {
	var tries []try
	c := byte('Z')
	for fd := 0; fd <= 2; fd++ {
		tries = append(tries, try{fmt.Sprintf("ioctl(%d, TIOCSTI)", fd), raw(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSTI, uintptr(unsafe.Pointer(&c)))})
	}
	if fd, err := unix.Open("/dev/tty", unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
		tries = append(tries, try{"ioctl(/dev/tty, TIOCSTI)", raw(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSTI, uintptr(unsafe.Pointer(&c)))})
		unix.Close(fd)
	}
	return allFail(tries...)
}

func tiocstiHigh(*Params) Result {
	c := byte('Z')
	var tries []try
	for fd := 0; fd <= 2; fd++ {
		tries = append(tries, try{fmt.Sprintf("ioctl(%d, TIOCSTI|1<<32)", fd), raw(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSTI|1<<32, uintptr(unsafe.Pointer(&c)))})
	}
	return allFail(tries...)
}

func tioclinux(*Params) Result {
	var tries []try
	sub := [2]byte{3, 0} // TIOCL_PASTESEL
	for fd := 0; fd <= 2; fd++ {
		tries = append(tries, try{fmt.Sprintf("ioctl(%d, TIOCLINUX)", fd), raw(unix.SYS_IOCTL, uintptr(fd), 0x541c, uintptr(unsafe.Pointer(&sub[0])))})
	}
	return allFail(tries...)
}

func controllingTTY(*Params) Result {
	sid, _ := unix.Getsid(0)
	pgid := unix.Getpgrp()
	err := openErr("/dev/tty", unix.O_RDWR, 0)
	if err == nil {
		return escaped("opened /dev/tty: the job has a controlling terminal (sid %d)", sid)
	}
	_, terr := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	return blocked("open /dev/tty: %s; session %d, pgrp %d; TIOCGPGRP on fd 0: %s", errName(err), sid, pgid, errName(terr))
}

func hostPtys(*Params) Result {
	ents, err := os.ReadDir("/dev/pts")
	if err != nil {
		return blocked("readdir /dev/pts: %s", errName(err))
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	for _, n := range names {
		if n != "ptmx" {
			return escaped("/dev/pts holds %s: ptys the sandbox did not make", strings.Join(names, " "))
		}
	}
	var tries []try
	for i := 0; i < 4; i++ {
		tries = append(tries, try{fmt.Sprintf("open /dev/pts/%d", i), openErr(fmt.Sprintf("/dev/pts/%d", i), unix.O_RDWR|unix.O_NOCTTY, 0)})
	}
	return allFail(tries...)
}

// ---- the syscall surface ----

// childAttack runs mode in a child process that the seccomp filter should
// kill with SIGSYS.
func childAttack(mode string) func(*Params) Result {
	return func(*Params) Result {
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
	var ldt [16]byte
	return allFail(
		try{"personality(ADDR_NO_RANDOMIZE)", raw(unix.SYS_PERSONALITY, 0x0040000)},
		try{"personality(MMAP_PAGE_ZERO)", raw(unix.SYS_PERSONALITY, 0x0100000)},
		try{"modify_ldt(write)", raw(unix.SYS_MODIFY_LDT, 1, uintptr(unsafe.Pointer(&ldt[0])), 16)},
		try{"iopl(3)", raw(unix.SYS_IOPL, 3)},
		try{"ioperm(0x80)", raw(unix.SYS_IOPERM, 0x80, 1, 1)},
	)
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

// ---- attacks that take a sandbox of their own ----

// solo attacks each run in a fresh sandbox, with the limit flags.
var solo = []attack{
	{"fork-bomb", "R-01", forkBomb},
	{"memory-bomb", "R-02", memoryBomb},
	{"memory-bomb-memfd", "R-02", memfdBomb},
	{"sysv-shm-bomb", "R-02", sysvShmBomb},
	{"fill-tmp", "R-03", fillTmp},
	{"fill-dev-shm", "R-03", fillDir("/dev/shm")},
	{"fill-home", "R-03", fillDir("")},
	{"fill-scratch", "R-03", fillScratch},
	{"inotify-store", "FD-05", inotifyStore},
	{"flood-output", "R-05", floodOutput},
}

// forkBomb forks children that pause until it has p.Cap of them or a
// fork fails. Reaching the cap means the sandbox did not bound it.
func forkBomb(p *Params) Result {
	var pids []int
	var ferr error
	for int64(len(pids)) < p.Cap {
		r := forkPause()
		if r < 0 {
			ferr = unix.Errno(-r)
			break
		}
		pids = append(pids, int(r))
	}
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGKILL)
	}
	for range pids {
		var ws unix.WaitStatus
		unix.Wait4(-1, &ws, 0, nil)
	}
	if ferr != nil {
		return blocked("fork failed with %s after %d processes", errName(ferr), len(pids))
	}
	return escaped("made %d processes without a refusal; the attack stopped itself (no pids limit)", len(pids))
}

// memoryBomb maps and touches memory in 16 MiB steps up to p.Cap bytes.
// The cgroup's OOM killer ending the process is the blocked outcome; the
// host sees that as the job killed by SIGKILL.
func memoryBomb(p *Params) Result {
	const step = 16 << 20
	var total int64
	for total < p.Cap {
		b, err := unix.Mmap(-1, 0, step, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return blocked("mmap failed with %s after %d MiB", errName(err), total>>20)
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		total += step
	}
	return escaped("touched %d MiB without a refusal; the attack stopped itself (no memory limit)", total>>20)
}

// memfdBomb grows a memfd by write(2) up to p.Cap bytes: memory that is
// in no process's address space, so RLIMIT_AS does not bound it; only a
// memory cgroup does.
func memfdBomb(p *Params) Result {
	fd, err := unix.MemfdCreate("closet-check", unix.MFD_CLOEXEC)
	if err != nil {
		return blocked("memfd_create: %s", errName(err))
	}
	defer unix.Close(fd)
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = 1
	}
	var total int64
	for total < p.Cap {
		n, err := unix.Write(fd, buf)
		total += int64(max(n, 0))
		if err != nil {
			return blocked("write memfd failed with %s after %d MiB", errName(err), total>>20)
		}
	}
	return escaped("filled a memfd with %d MiB without a refusal; the attack stopped itself (memory outside the address space is not limited)", total>>20)
}

// fillDir writes a file in dir ("" = $HOME) until an error or p.Cap
// bytes: the other tmpfs mounts besides /tmp.
func fillDir(dir string) func(*Params) Result {
	return func(p *Params) Result {
		d := dir
		if d == "" {
			d = os.Getenv("HOME")
		}
		f, err := os.Create(d + "/closet-fill")
		if err != nil {
			return blocked("create in %s: %s", d, errName(err))
		}
		defer os.Remove(f.Name())
		defer f.Close()
		buf := make([]byte, 1<<20)
		var total int64
		for total < p.Cap {
			n, err := f.Write(buf)
			total += int64(n)
			if err != nil {
				return blocked("write %s failed with %s after %d MiB", d, errName(err), total>>20)
			}
		}
		return escaped("wrote %d MiB to %s without a refusal; the attack stopped itself (no size or memory limit)", total>>20, d)
	}
}

// fillTmp writes /tmp until ENOSPC or p.Cap bytes; a marker file lets the
// host check its own /tmp got none of it.
func fillTmp(p *Params) Result {
	os.WriteFile("/tmp/"+p.EnvCanary, []byte("x"), 0o644)
	f, err := os.Create("/tmp/fill")
	if err != nil {
		return escaped("create /tmp/fill: %v", err)
	}
	defer os.Remove("/tmp/fill")
	defer f.Close()
	buf := make([]byte, 1<<20)
	var total int64
	for total < p.Cap {
		n, err := f.Write(buf)
		total += int64(n)
		if err != nil {
			return blocked("write /tmp failed with %s after %d MiB", errName(err), total>>20)
		}
	}
	return escaped("wrote %d MiB to /tmp without a refusal; the attack stopped itself (no /tmp size limit)", total>>20)
}

// floodOutput writes p.Cap bytes to stdout; the host counts what reached
// it. The result line goes to stderr, which the host keeps apart.
func floodOutput(p *Params) Result {
	buf := bytes.Repeat([]byte("flood "), int(p.Chunk)/6+1)[:p.Chunk]
	var total int64
	for total < p.Cap {
		n, err := os.Stdout.Write(buf)
		total += int64(n)
		if err != nil {
			return blocked("write stdout failed with %s after %d bytes", errName(err), total)
		}
	}
	return escaped("wrote %d bytes to stdout without a refusal", total)
}

// ---- helpers for host-side checks ----

// hold prints a ready line and waits until stdin closes: the host reads
// the posture of this process meanwhile. hold-ipc first makes a SysV
// shared memory segment and an abstract socket, which the host must not
// see.
func hold(mode string, p *Params) int {
	if mode == "hold-ipc" {
		if _, err := unix.SysvShmGet(0x0c105e7, 4096, unix.IPC_CREAT|0o600); err != nil {
			fmt.Fprintln(os.Stderr, "shmget:", err)
		}
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrUnix{Name: "@" + p.Abstract + "-inside"})
		}
		if err == nil {
			err = unix.Listen(fd, 1)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "abstract listen:", err)
		}
		os.WriteFile("/dev/shm/closet-hold", []byte("x"), 0o666)
	}
	if mode == "hold-inotify" {
		// a per-uid kernel quota, counted for the host uid too.
		n := 0
		for ; n < 100000; n++ {
			if _, err := unix.InotifyInit1(0); err != nil {
				fmt.Fprintf(os.Stderr, "inotify instances: %d, then %v\n", n, err)
				break
			}
		}
	}
	os.Stdout.WriteString("ready\n")
	var b [1]byte
	for {
		n, _, e := unix.Syscall(unix.SYS_READ, 0, uintptr(unsafe.Pointer(&b[0])), 1)
		if n == 0 || (e != 0 && e != unix.EINTR) {
			return 0
		}
	}
}

// raceProbe reports what the shared directory holds: the host flips it
// between a real directory and a symlink to a secret one while sandboxes
// start.
func raceProbe(p *Params) int {
	for _, sub := range []string{"", "/sub"} {
		if _, err := os.Stat(p.Share + sub + "/SECRET"); err == nil {
			fmt.Printf("race: SECRET visible at %s\n", p.Share+sub)
			return 0
		}
	}
	if link, err := os.Readlink(p.Share); err == nil {
		_, serr := os.Stat(p.Share)
		fmt.Printf("race: symlink -> %s; following it inside: %v\n", link, errName(serr))
		return 0
	}
	ents, err := os.ReadDir(p.Share)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	fmt.Printf("%s%s %v\n", "race: ", strings.Join(names, ","), err)
	return 0
}

// atFDCWD is AT_FDCWD as a raw syscall argument.
var atFDCWD = func() uintptr { v := unix.AT_FDCWD; return uintptr(v) }()

// errOr is err, or alt when err is nil: for a look that found nothing,
// which counts as refused.
func errOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}
