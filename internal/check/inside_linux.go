package check

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
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
