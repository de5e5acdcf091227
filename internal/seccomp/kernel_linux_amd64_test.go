package seccomp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The real-kernel tests re-execute the test binary as a helper: the filter stays
// with a thread and is inherited across execve, so it must never be installed in
// the process that runs the tests.
const (
	helperEnv = "CLOSET_SECCOMP_TEST_HELPER" // helper mode; set means "be the helper"
	thenEnv   = "CLOSET_SECCOMP_TEST_THEN"   // exec mode: helper mode for the program it runs
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	os.Exit(m.Run())
}

// helper runs in the child. It prints one line per finding and exits non-zero
// when the setup itself fails.
func helper(mode string) int {
	switch mode {
	case "probe":
		return probeHelper()
	case "x32":
		confine()
		_, _, errno := unix.RawSyscall(unix.SYS_GETPID|x32Bit, 0, 0, 0)
		fmt.Printf("survived x32 call: errno %d\n", errno)
		return 0
	case "exec":
		confine()
		env := withoutEnv(os.Environ(), helperEnv+"=", thenEnv+"=")
		if then := os.Getenv(thenEnv); then != "" {
			env = append(env, helperEnv+"="+then)
		}
		err := syscall.Exec(os.Args[1], os.Args[1:], env)
		fmt.Printf("exec %s: %v\n", os.Args[1], err)
		return 2
	case "profile":
		return profileHelper()
	case "gochild":
		return goChild()
	case "hello":
		fmt.Println("hello from a filtered child")
		return 0
	}
	fmt.Printf("unknown helper mode %q\n", mode)
	return 2
}

// confine does what the target's child does last: lock the thread, set
// no_new_privs, install the filter. On failure it exits.
func confine() { confineWith(Options{}) }

// confineWith is confine with the policy for opts.
func confineWith(opts Options) {
	runtime.LockOSThread()
	prog, err := Program(opts)
	if err != nil {
		fail(err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fail(err)
	}
	if err := Install(prog); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Printf("setup: %v\n", err)
	os.Exit(2)
}

// withoutEnv returns env without the variables whose "NAME=" prefixes are given.
func withoutEnv(env []string, prefixes ...string) []string {
	var out []string
outer:
	for _, e := range env {
		for _, p := range prefixes {
			if strings.HasPrefix(e, p) {
				continue outer
			}
		}
		out = append(out, e)
	}
	return out
}

// probe is one raw system call made under the filter.
type probe struct {
	name string
	call func() unix.Errno
	want unix.Errno // 0: must succeed
}

func sys(n uintptr, args ...uintptr) func() unix.Errno {
	return func() unix.Errno {
		var a [6]uintptr
		copy(a[:], args)
		r, _, errno := unix.Syscall6(n, a[0], a[1], a[2], a[3], a[4], a[5])
		if errno == 0 && (n == unix.SYS_SOCKET || n == unix.SYS_SOCKETPAIR) {
			unix.Close(int(r))
		}
		return errno
	}
}

// probes lists calls whose answer under the filter differs from the unfiltered
// kernel's where that can be arranged, so a filter that failed to load cannot
// pass.
func probes(pipeR int, file string, fd int) []probe {
	path, err := unix.BytePtrFromString(file)
	if err != nil {
		fail(err)
	}
	p := uintptr(unsafe.Pointer(path))
	var buf [128]byte
	b := uintptr(unsafe.Pointer(&buf[0]))
	atFDCWD := uintptr(0xffffff9c)
	return []probe{
		{"getpid", sys(unix.SYS_GETPID), 0},
		{"unshare CLONE_NEWUSER", sys(unix.SYS_UNSHARE, unix.CLONE_NEWUSER), unix.EPERM},
		{"setns", sys(unix.SYS_SETNS, 0, 0), unix.EPERM},
		{"clone CLONE_NEWUSER|CLONE_FS", sys(unix.SYS_CLONE, unix.CLONE_NEWUSER|unix.CLONE_FS), unix.EPERM}, // EINVAL unfiltered
		{"clone3", sys(unix.SYS_CLONE3, 0, 0), unix.ENOSYS},                                                 // EINVAL unfiltered
		{"io_uring_setup", sys(unix.SYS_IO_URING_SETUP, 1, b), unix.EPERM},
		{"userfaultfd", sys(unix.SYS_USERFAULTFD, 0), unix.EPERM},
		{"bpf", sys(unix.SYS_BPF, 0, b, 0), unix.EPERM},
		{"perf_event_open", sys(unix.SYS_PERF_EVENT_OPEN, b, 0, ^uintptr(0), ^uintptr(0), 0), unix.EPERM},
		{"keyctl", sys(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, ^uintptr(2), 0), unix.EPERM}, // succeeds unfiltered
		{"mount", sys(unix.SYS_MOUNT, 0, 0, 0, 0, 0), unix.EPERM},
		{"ptrace", sys(unix.SYS_PTRACE, unix.PTRACE_PEEKDATA, uintptr(os.Getppid()), 0, 0), unix.EPERM}, // ESRCH unfiltered
		{"modify_ldt", sys(unix.SYS_MODIFY_LDT, 0, b, uintptr(len(buf))), unix.EPERM},
		{"ustat (unlisted)", sys(unix.SYS_USTAT, 0, b), unix.EPERM},
		{"ioctl TIOCSTI|1<<32", sys(unix.SYS_IOCTL, uintptr(pipeR), 1<<32|unix.TIOCSTI, b), unix.EPERM}, // ENOTTY unfiltered
		{"ioctl TIOCLINUX", sys(unix.SYS_IOCTL, uintptr(pipeR), unix.TIOCLINUX, b), unix.EPERM},
		{"ioctl FIONREAD", sys(unix.SYS_IOCTL, uintptr(pipeR), 0x541b, b), 0}, // FIONREAD
		{"chmod 04755", sys(unix.SYS_CHMOD, p, 0o4755), unix.EPERM},
		{"chmod 0755", sys(unix.SYS_CHMOD, p, 0o755), 0},
		{"fchmod 02755", sys(unix.SYS_FCHMOD, uintptr(fd), 0o2755), unix.EPERM},
		{"fchmod 0644", sys(unix.SYS_FCHMOD, uintptr(fd), 0o644), 0},
		{"fchmodat 04700", sys(unix.SYS_FCHMODAT, atFDCWD, p, 0o4700), unix.EPERM},
		{"fchmodat2 02700", sys(unix.SYS_FCHMODAT2, atFDCWD, p, 0o2700, 0), unix.EPERM},
		{"fchmodat2 0600", sys(unix.SYS_FCHMODAT2, atFDCWD, p, 0o600, 0), 0},
		{"socket AF_INET", sys(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM, 0), 0},
		{"socket AF_INET6", sys(unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_DGRAM, 0), 0},
		{"socket AF_UNIX", sys(unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM, 0), 0},
		{"socket AF_NETLINK route", sys(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE), 0},
		{"socket AF_NETLINK audit", sys(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT), unix.EAFNOSUPPORT},
		{"socket AF_ALG", sys(unix.SYS_SOCKET, unix.AF_ALG, unix.SOCK_SEQPACKET, 0), unix.EAFNOSUPPORT},
		{"socket AF_VSOCK", sys(unix.SYS_SOCKET, unix.AF_VSOCK, unix.SOCK_STREAM, 0), unix.EAFNOSUPPORT},
		{"socket AF_PACKET", sys(unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_RAW, 0), unix.EAFNOSUPPORT},
		{"socketpair AF_UNIX", sys(unix.SYS_SOCKETPAIR, unix.AF_UNIX, unix.SOCK_STREAM, 0, b), 0},
		{"socketpair AF_INET", sys(unix.SYS_SOCKETPAIR, unix.AF_INET, unix.SOCK_STREAM, 0, b), unix.EAFNOSUPPORT},
		{"personality query", sys(unix.SYS_PERSONALITY, 0xffffffff), 0},
		{"personality ADDR_NO_RANDOMIZE", sys(unix.SYS_PERSONALITY, 0x0040000), unix.EPERM},
		{"syscall 1000", sys(1000), unix.ENOSYS},
		{"syscall 400 (gap)", sys(400), unix.ENOSYS},
	}
}

// probeHelper checks the install preconditions, confines itself and prints
// "name errno" for every probe, then the thread's seccomp mode.
func probeHelper() int {
	runtime.LockOSThread()
	f, err := os.CreateTemp("", "closet-seccomp-*")
	if err != nil {
		fail(err)
	}
	defer os.Remove(f.Name())
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		fail(err)
	}
	prog, err := Program(Options{})
	if err != nil {
		fail(err)
	}
	fmt.Printf("instructions %d\n", len(prog))
	if nnp, _ := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); nnp == 0 {
		fmt.Printf("install without no_new_privs: %v\n", errors.Is(Install(prog), ErrNoNewPrivs))
	}
	fmt.Printf("install empty: %v\n", errors.Is(Install(nil), unix.EINVAL))
	ps := probes(fds[0], f.Name(), int(f.Fd()))
	confine()
	out := bufio.NewWriter(os.Stdout)
	for _, p := range ps {
		fmt.Fprintf(out, "probe %s: %d\n", p.name, int(p.call()))
	}
	status, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		fail(err)
	}
	for line := range strings.Lines(string(status)) {
		if strings.HasPrefix(line, "Seccomp:") || strings.HasPrefix(line, "NoNewPrivs:") {
			fmt.Fprint(out, strings.Join(strings.Fields(line), " ")+"\n")
		}
	}
	out.Flush()
	return 0
}

// goChild runs as a whole Go program under the inherited filter: runtime
// start-up, threads, timers, files, loopback TCP, the interface list over
// NETLINK_ROUTE and a child process.
func goChild() int {
	check := func(what string, err error) {
		if err != nil {
			fmt.Printf("gochild %s: %v\n", what, err)
			os.Exit(1)
		}
	}
	var wg sync.WaitGroup
	sums := make([]int, 16)
	for i := range sums {
		wg.Go(func() {
			for j := range 200000 {
				sums[i] += j % (i + 1)
			}
			time.Sleep(time.Millisecond)
		})
	}
	wg.Wait()
	_, err := os.ReadDir("/")
	check("readdir", err)
	status, err := os.ReadFile("/proc/self/status")
	check("status", err)
	if !strings.Contains(string(status), "Seccomp:\t2") {
		check("status", errors.New("not in seccomp filter mode"))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check("listen", err)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	check("dial", err)
	_, err = c.Write([]byte("ping"))
	check("write", err)
	var got [4]byte
	_, err = io.ReadFull(c, got[:])
	check("read", err)
	c.Close()
	_, err = net.Interfaces()
	check("interfaces", err)
	if err := unix.Unshare(unix.CLONE_NEWUSER); !errors.Is(err, unix.EPERM) {
		check("unshare", fmt.Errorf("got %v, want EPERM", err))
	}
	self, err := os.Executable()
	check("executable", err)
	cmd := exec.Command(self)
	cmd.Env = append(withoutEnv(os.Environ(), helperEnv+"="), helperEnv+"=hello")
	out, err := cmd.Output()
	check("exec", err)
	fmt.Printf("gochild ok: %s", out)
	return 0
}

// runHelper runs the test binary in helper mode and returns its output.
func runHelper(t *testing.T, bin, mode string, cred *syscall.Credential, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), helperEnv+"="+mode), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestKernelProbes installs the filter for real and checks each probe's errno,
// as the invoking user and, when that is root, as nobody too: with
// no_new_privs, installing needs no privilege.
func TestKernelProbes(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]*syscall.Credential{"self": nil}
	if os.Geteuid() == 0 {
		users["nobody"] = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	for who, cred := range users {
		t.Run(who, func(t *testing.T) {
			exe := bin
			if cred != nil {
				exe = worldExecutableCopy(t, bin)
			}
			out, err := runHelper(t, exe, "probe", cred, nil)
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			t.Logf("helper output:\n%s", out)
			got := map[string]string{}
			for line := range strings.Lines(out) {
				if k, v, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "probe "), ": "); ok {
					got[k] = v
				}
			}
			for _, want := range []string{"Seccomp: 2", "NoNewPrivs: 1", "install empty: true"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			if strings.Contains(out, "install without no_new_privs: false") {
				t.Error("Install without no_new_privs did not return ErrNoNewPrivs")
			}
			for _, p := range probes(-1, "/", -1) {
				want := strconv.Itoa(int(p.want))
				if got[p.name] != want {
					t.Errorf("%s: errno %s, want %s (%v)", p.name, got[p.name], want, p.want)
				}
			}
		})
	}
}

// worldExecutableCopy copies the test binary where another user can run it.
func worldExecutableCopy(t *testing.T, bin string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "closet-seccomp-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "seccomp.test")
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

// TestKernelX32Killed checks that an x32 call kills the process with SIGSYS.
func TestKernelX32Killed(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := runHelper(t, bin, "x32", nil, nil)
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("helper was not killed: %v\n%s", err, out)
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
		t.Fatalf("helper ended with %v, want SIGSYS\n%s", exit, out)
	}
}

// TestKernelPrograms execs real programs under the filter: a Go program (the
// test binary itself), and, where installed, busybox, a glibc shell with
// coreutils, and CPython.
func TestKernelPrograms(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	scratch := t.TempDir()
	cases := []struct {
		name string
		argv []string
		then string
		want string
	}{
		{"go", []string{bin}, "gochild", "gochild ok: hello from a filtered child"},
		{"busybox", []string{"busybox", "sh", "-c", `
			cd "$1" && ls / >/dev/null && cat /proc/self/status | grep -q '^Seccomp:.*2' &&
			echo x > f && chmod 0755 f && ! chmod 4755 f 2>/dev/null && ls -l f | grep -q '^-rwxr-xr-x' &&
			echo busybox ok`, "sh", scratch}, "", "busybox ok"},
		{"sh", []string{"sh", "-c", `ls / >/dev/null && cat /proc/self/status | grep -q '^Seccomp:.*2' && echo sh ok`}, "", "sh ok"},
		{"python3", []string{"python3", "-c", `
import os, socket, subprocess, sys, tempfile, threading, hashlib, json
out = []
t = [threading.Thread(target=lambda: out.append(hashlib.sha256(b"x").hexdigest())) for _ in range(4)]
[x.start() for x in t]; [x.join() for x in t]
assert len(out) == 4
r = subprocess.run([sys.executable, "-c", "print(6*7)"], capture_output=True, text=True, check=True)
assert r.stdout.strip() == "42", r
a, b = socket.socketpair(); a.send(b"hi"); assert b.recv(2) == b"hi"
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.close()
try:
    socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET)
    raise SystemExit("AF_ALG allowed")
except OSError as e:
    assert e.errno == 97, e
with tempfile.NamedTemporaryFile() as f:
    try:
        os.chmod(f.name, 0o4755)
        raise SystemExit("setuid chmod allowed")
    except PermissionError:
        pass
    os.chmod(f.name, 0o700)
os.listdir("/"); json.dumps(socket.if_nameindex())
print("python ok")
`}, "", "python ok"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			argv := c.argv
			if argv[0] != bin {
				path, err := exec.LookPath(argv[0])
				if err != nil {
					t.Skipf("%s not installed", argv[0])
				}
				argv = append([]string{realPath(t, path, c.name)}, argv[1:]...)
			}
			var env []string
			if c.then != "" {
				env = append(env, thenEnv+"="+c.then)
			}
			out, err := runHelper(t, bin, "exec", nil, env, argv...)
			if err != nil || !strings.Contains(out, c.want) {
				t.Fatalf("%v: %v\n%s", argv, err, out)
			}
		})
	}
}

// realPath resolves interpreters behind wrapper scripts (pyenv shims), so the
// test runs the program itself rather than a shell script chain.
func realPath(t *testing.T, path, name string) string {
	t.Helper()
	if name != "python3" {
		return path
	}
	out, err := exec.Command(path, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		t.Skipf("%s does not run: %v", path, err)
	}
	return strings.TrimSpace(string(out))
}
