package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// kcmpFile is KCMP_FILE: kcmp compares two descriptors' open files.
const kcmpFile = 0

// fileID is the file a descriptor refers to.
type fileID struct{ dev, ino uint64 }

// inodeOf is the file f's descriptor refers to.
func inodeOf(t *testing.T, f *os.File) fileID {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return fileID{st.Dev, st.Ino}
}

// TestLaunchedInitState: the init Launch starts for a job run as the
// caller (the init's own clone where rawclone shares memory, os/exec
// elsewhere) is what os/exec made of it: fds 0-5 and the control socket,
// each the parent's file and blocking; nothing else of this process's
// but what it holds without close-on-exec above the layout (a nil
// ExtraFiles entry is closed even where this process has that fd open
// without close-on-exec);
// the maps from the sandbox's ids to the caller's alone, setgroups
// denied; the five capabilities inheritable and ambient and no others; a
// session of its own. (Files the init's runtime opens itself once it
// starts are no one's leak.)
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
	er, ew, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer er.Close()
	defer ew.Close()
	// fds 6 and 7, nil entries of the init's layout (no console, no
	// identity), open here without close-on-exec while the init is
	// launched: the init must not get them.
	for _, fd := range []int{stage.ConsoleFD, stage.SlotLockFD} {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err == unix.EBADF {
			if err := unix.Dup3(int(er.Fd()), fd, 0); err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags&^unix.FD_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags)
	}
	in, err := Launch(LaunchOptions{UID: 1000, GID: 100, Stdio: Stdio{Stdin: stdin, Stdout: w, Stderr: ew}})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	pid := in.Pid()

	// What the init must hold, by fd, and what it may (what this process
	// holds without close-on-exec above the layout, at the same fd).
	want := map[int]fileID{0: inodeOf(t, stdin), 1: inodeOf(t, w), 2: inodeOf(t, ew),
		stage.SpecFD: inodeOf(t, in.specW), stage.StatusFD: inodeOf(t, in.statusR), stage.ResultFD: inodeOf(t, in.resultR)}
	mine := openFiles(t, "/proc/self/fd")
	for _, fd := range inheritedAbove(t, stage.ControlFD) {
		want[fd] = mine[fd]
	}
	theirs := openFiles(t, "/proc/"+strconv.Itoa(pid)+"/fd")
	for fd, ino := range want {
		if fd != stage.ControlFD && theirs[fd] != ino {
			t.Errorf("the init's fd %d is %v, want the parent's file %v", fd, theirs[fd], ino)
		}
	}
	kcmp := func(mine, theirs int) bool {
		r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(os.Getpid()), uintptr(pid), kcmpFile, uintptr(mine), uintptr(theirs), 0)
		return errno == 0 && r == 0
	}
	if !kcmp(int(stdin.Fd()), 0) {
		t.Fatal("kcmp does not see the init's stdin as this process's: the leak check below would see nothing")
	}
	for fd := range theirs {
		link, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + strconv.Itoa(fd))
		if fd == stage.ControlFD && !strings.HasPrefix(link, "socket:") {
			t.Errorf("the init's fd %d is %s, want the control socket", fd, link)
		}
		if _, ok := want[fd]; !ok && fd != stage.ControlFD {
			// The same open file as one of this process's: a leak.
			for mfd := range mine {
				if kcmp(mfd, fd) {
					t.Errorf("the init's fd %d is %s, this process's fd %d: a leak", fd, link, mfd)
				}
			}
		}
		if fd > stage.ControlFD {
			continue // the init's own, or inherited above the layout
		}
		info := procOf(t, pid, "fdinfo/"+strconv.Itoa(fd))
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(l, "flags:"); ok {
				flags, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				if _, given := want[fd]; (given || fd == stage.ControlFD) && flags&unix.O_NONBLOCK != 0 {
					t.Errorf("the init's fd %d (%s) is nonblocking", fd, link)
				}
			}
		}
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
		if kids := testutil.Children(t); len(kids) > 0 {
			t.Errorf("children left behind: %v", kids)
		}
		if left := ownCgroups(); len(left) > 0 {
			t.Errorf("cgroups left behind: %v", left)
		}
	}
}

// openFiles maps each fd listed in dir (a /proc fd directory) to the
// file it refers to.
func openFiles(t *testing.T, dir string) map[int]fileID {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]fileID{}
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		var st unix.Stat_t
		if unix.Stat(dir+"/"+e.Name(), &st) == nil {
			m[fd] = fileID{st.Dev, st.Ino}
		}
	}
	return m
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

// TestReadParent: the init's child learns its parent's pid from
// /proc/self/stat as the kernel gives it, here this process's parent.
func TestReadParent(t *testing.T) {
	path, _ := syscall.BytePtrFromString("/proc/self/stat")
	got, errno := readParent(path, make([]byte, 512))
	if errno != 0 || int(got) != os.Getppid() {
		t.Errorf("readParent: %d, %v; want %d", got, errno, os.Getppid())
	}
}

// cgroup2Env carries TestInitCloneIntoCgroup2 into its private mount
// namespace: the cgroup v2 directory to clone into.
const cgroup2Env = "CLOSET_TEST_INIT_CGROUP2"

// TestInitCloneIntoCgroup2: the init's own clone with a cgroup v2 fd is a
// clone3 with CLONE_INTO_CGROUP: the child is in that cgroup from its
// birth. Hosts with cgroup v1 only (as this test's first host) never take
// that path in the other tests, so as root it mounts cgroup2 in a mount
// namespace of its own (unshare -m) and clones into a cgroup it makes
// there and removes afterwards (the hierarchy is the host's one: only the
// mount is private).
func TestInitCloneIntoCgroup2(t *testing.T) {
	dir := os.Getenv(cgroup2Env)
	if dir == "" {
		if os.Geteuid() != 0 || !useInitClone(LaunchOptions{}) {
			t.Skip("needs root (to mount cgroup2 in a mount namespace of its own) and the init's own clone")
		}
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			t.Skip("no unshare(1)")
		}
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		mnt := t.TempDir()
		name := fmt.Sprintf("closet-test-%d", os.Getpid())
		script := `mount -t cgroup2 none "$1" && mkdir "$1/$3" || exit 1
"$2" -test.run='^TestInitCloneIntoCgroup2$' -test.count=1 -test.v; rc=$?
rmdir "$1/$3" && exit $rc`
		cmd := exec.Command(unshare, "-m", "--propagation", "private", "sh", "-c", script, "sh", mnt, self, name)
		cmd.Env = append(os.Environ(), cgroup2Env+"="+filepath.Join(mnt, name))
		out, err := cmd.CombinedOutput()
		t.Logf("%s", out)
		if err != nil {
			t.Fatalf("in a mount namespace with cgroup2: %v", err)
		}
		if !strings.Contains(string(out), "--- PASS: TestInitCloneIntoCgroup2") {
			t.Fatal("the test did not run in its mount namespace")
		}
		return
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	cmd := &exec.Cmd{Path: "/bin/cat", Args: []string{"cat"}, Env: []string{}, Stdin: r,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 1000, HostID: os.Getuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 100, HostID: os.Getgid(), Size: 1}},
			UseCgroupFD: true, CgroupFD: fd,
		}}
	p, err := startInit(cmd)
	if err != nil {
		t.Fatal(err)
	}
	cg := procOf(t, p.Pid, "cgroup")
	w.Close()
	p.Wait()
	if want := "0::/" + filepath.Base(dir) + "\n"; !strings.Contains(cg, want) {
		t.Errorf("the init's cgroups:\n%s\nwant %s", cg, want)
	}
}
