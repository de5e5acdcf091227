package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// procOf reads /proc/pid/name.
func procOf(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// inodeOf is the inode f's descriptor refers to.
func inodeOf(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestLaunchedInitState: the init Launch starts for a job run as the
// caller (the init's own clone where rawclone shares memory, os/exec
// elsewhere) is what os/exec made of it: exactly fds 0-5 and the control
// socket, each the parent's file and blocking, a nil stdio file closed;
// the maps from the sandbox's ids to the caller's alone, setgroups
// denied; the five capabilities inheritable and ambient and no others; a
// session of its own.
func TestLaunchedInitState(t *testing.T) {
	if !asNobody(t) {
		return
	}
	t.Logf("the init's own clone: %v", useInitClone(LaunchOptions{}))
	stdin, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	in, err := Launch(LaunchOptions{UID: 1000, GID: 100, Stdio: Stdio{Stdin: stdin, Stdout: w}})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	pid := in.Pid()

	want := map[int]uint64{0: inodeOf(t, stdin), 1: inodeOf(t, w), stage.SpecFD: inodeOf(t, in.specW),
		stage.StatusFD: inodeOf(t, in.statusR), stage.ResultFD: inodeOf(t, in.resultR)}
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		fds = append(fds, fd)
		link, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + e.Name())
		var st unix.Stat_t
		if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/fd/"+e.Name(), &st); err != nil {
			t.Fatal(err)
		}
		if ino, ok := want[fd]; ok && st.Ino != ino {
			t.Errorf("the init's fd %d is %s (inode %d), not the parent's file (inode %d)", fd, link, st.Ino, ino)
		}
		if fd == stage.ControlFD && !strings.HasPrefix(link, "socket:") {
			t.Errorf("the init's fd %d is %s, want the control socket", fd, link)
		}
		info := procOf(t, pid, "fdinfo/"+e.Name())
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(l, "flags:"); ok {
				flags, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				if flags&unix.O_NONBLOCK != 0 {
					t.Errorf("the init's fd %d (%s) is nonblocking", fd, link)
				}
			}
		}
	}
	// Above the layout, what this process holds without close-on-exec
	// (what the test was started with) is inherited, as by os/exec.
	wantFDs := append([]int{0, 1, 3, 4, 5, stage.ControlFD}, inheritedAbove(t, stage.ControlFD)...)
	slices.Sort(fds)
	if !slices.Equal(fds, wantFDs) {
		t.Errorf("the init's fds are %v, want %v (stderr was nil: closed)", fds, wantFDs)
	}

	field := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	if got, want := field(procOf(t, pid, "uid_map")), fmt.Sprintf("1000 %d 1", os.Geteuid()); got != want {
		t.Errorf("uid_map %q, want %q", got, want)
	}
	if got, want := field(procOf(t, pid, "gid_map")), fmt.Sprintf("100 %d 1", os.Getegid()); got != want {
		t.Errorf("gid_map %q, want %q", got, want)
	}
	if got := field(procOf(t, pid, "setgroups")); got != "deny" {
		t.Errorf("setgroups %q, want deny", got)
	}
	var five uint64
	for _, c := range []uint{unix.CAP_SYS_ADMIN, unix.CAP_NET_ADMIN, unix.CAP_SETPCAP, unix.CAP_SYS_CHROOT, unix.CAP_SYS_RESOURCE} {
		five |= 1 << c
	}
	for _, l := range strings.Split(procOf(t, pid, "status"), "\n") {
		k, v, _ := strings.Cut(l, ":")
		if k == "CapAmb" || k == "CapInh" {
			if got, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64); got != five {
				t.Errorf("the init's %s is %#x, want %#x", k, got, five)
			}
		}
	}
	stat := procOf(t, pid, "stat")
	f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
	if f[3] != strconv.Itoa(pid) {
		t.Errorf("the init's session is %s, want its own (%d)", f[3], pid)
	}
	if f[1] != strconv.Itoa(os.Getpid()) {
		t.Errorf("the init's parent is %s, want this process (%d)", f[1], os.Getpid())
	}
}

// launcherEnv makes the test binary a process that launches one init,
// prints its host pid and waits (see TestInitDiesWithCloset).
const launcherEnv = "CLOSET_TEST_LAUNCHER"

func runLauncher() int {
	in, err := Launch(LaunchOptions{UID: 1000, GID: 100})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The spec pipe stays open when the launcher dies (a sleep holds it):
	// the init does not end on its EOF.
	holder := exec.Command("/bin/sleep", "60")
	holder.ExtraFiles = []*os.File{in.specW}
	if err := holder.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(in.Pid(), holder.Process.Pid)
	os.Stdin.Read(make([]byte, 1))
	return 0
}

// TestInitDiesWithCloset: the init dies with the closet that launched it
// (the parent-death signal): a launcher is killed with SIGKILL, so nothing
// of it runs to close the init, and the init is gone, though its spec
// pipe is still open (the init does not end on its EOF). The control: it
// was alive while the launcher was.
func TestInitDiesWithCloset(t *testing.T) {
	if !asNobody(t) {
		return
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), launcherEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the launcher: %v", err)
	}
	var pid, holder int
	fmt.Sscan(line, &pid, &holder)
	defer syscall.Kill(holder, syscall.SIGKILL)
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("the init %d: %v", pid, err)
	}
	defer unix.Close(pidfd)
	exited := func(timeout time.Duration) bool {
		p := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, int(timeout/time.Millisecond))
		for err == unix.EINTR {
			n, err = unix.Poll(p, int(timeout/time.Millisecond))
		}
		return n == 1
	}
	if exited(50 * time.Millisecond) {
		t.Fatalf("control: the init %d is gone while its closet runs", pid)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if !exited(10 * time.Second) {
		unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		t.Fatalf("the init %d outlived its closet", pid)
	}
}

// TestLaunchFailsNamingStep: an init whose binary cannot be executed is a
// setup error that names the step and the path; no child of this process
// is left (not even a zombie), nor any cgroup.
func TestLaunchFailsNamingStep(t *testing.T) {
	if !asNobody(t) {
		return
	}
	dir := testutil.TempDir(t)
	unreadable := filepath.Join(dir, "closet-stage")
	if err := os.WriteFile(unreadable, []byte("#!/bin/sh\n"), 0o000); err != nil {
		t.Fatal(err)
	}
	for _, exe := range []string{filepath.Join(dir, "missing"), unreadable} {
		_, err := Launch(LaunchOptions{UID: 1000, GID: 100, Exe: exe, Limits: launchedLimits})
		t.Logf("%s: %v", exe, err)
		if !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), exe) {
			t.Errorf("launch of %s: %v, want a setup error naming it", exe, err)
		}
		if useInitClone(LaunchOptions{}) && (!strings.Contains(err.Error(), "could not execve "+exe) || strings.Contains(err.Error(), "user namespaces")) {
			t.Errorf("launch of %s: %v, want it to name the execve step, and no hint about user namespaces", exe, err)
		}
		if kids := childrenOfSelf(t); len(kids) > 0 {
			t.Errorf("children left behind: %v", kids)
		}
		if left := ownCgroups(); len(left) > 0 {
			t.Errorf("cgroups left behind: %v", left)
		}
	}
}

// inheritedAbove lists this process's descriptors above fd that are not
// close-on-exec.
func inheritedAbove(t *testing.T, fd int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		n, _ := strconv.Atoi(e.Name())
		if flags, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); n > fd && err == nil && flags&unix.FD_CLOEXEC == 0 {
			fds = append(fds, n)
		}
	}
	return fds
}

// childrenOfSelf lists this process's children, zombies included.
func childrenOfSelf(t *testing.T) []string {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/children")
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		kids = append(kids, strings.Fields(string(b))...)
	}
	return kids
}

// TestReadParent: the init's child learns its parent's pid from
// /proc/self/stat as the kernel gives it, here this process's parent.
func TestReadParent(t *testing.T) {
	path, _ := syscall.BytePtrFromString("/proc/self/stat")
	got, errno := readParent(path, make([]byte, 512))
	if errno != 0 || int(got) != os.Getppid() {
		t.Errorf("readParent: %d, %v; want %d", got, errno, os.Getppid())
	}
}
