package seccomp

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const profileEnv = "CLOSET_SECCOMP_TEST_PROFILE" // "PROFILE,rlimit" or "PROFILE" or "none"

// memoryCalls are the calls that make memory outside any address space,
// and inotify the side channel, each made for real.
func profileCalls() map[string]func() error {
	return map[string]func() error{
		"inotify_init1": func() error {
			fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
			if err == nil {
				unix.Close(fd)
			}
			return err
		},
		"memfd_create": func() error {
			fd, err := unix.MemfdCreate("closet-test", unix.MFD_CLOEXEC)
			if err == nil {
				unix.Close(fd)
			}
			return err
		},
		"shmget": func() error {
			id, err := unix.SysvShmGet(unix.IPC_PRIVATE, 1<<30, unix.IPC_CREAT|0o600)
			if err == nil {
				unix.SysvShmCtl(id, unix.IPC_RMID, nil)
			}
			return err
		},
		"msgget": func() error {
			r, _, e := unix.Syscall(unix.SYS_MSGGET, 0 /* IPC_PRIVATE */, unix.IPC_CREAT|0o600, 0)
			if e != 0 {
				return e
			}
			unix.Syscall(unix.SYS_MSGCTL, r, unix.IPC_RMID, 0)
			return nil
		},
	}
}

// profileHelper confines itself with the profile named in profileEnv
// ("none": no filter, the control) and prints "NAME: ERRNO" per call.
func profileHelper() int {
	profile, rl, _ := strings.Cut(os.Getenv(profileEnv), ",")
	if profile != "none" {
		opts, err := OptionsFor(profile, rl == "rlimit")
		if err != nil {
			fail(err)
		}
		confineWith(opts)
	}
	for name, call := range profileCalls() {
		errno := 0
		if err := call(); err != nil {
			errno = int(err.(unix.Errno))
		}
		fmt.Printf("%s: %d\n", name, errno)
	}
	return 0
}

// TestKernelProfiles makes each optional refusal's calls for real, as
// nobody when the test runs as root: refused under the profile that names
// them, and working both with no filter (the control: the kernel has the
// mechanism) and under the default profile.
func TestKernelProfiles(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		bin = worldExecutableCopy(t, bin)
	}
	eperm := int(unix.EPERM)
	for _, tc := range []struct {
		profile string
		want    map[string]int
	}{
		{"none", map[string]int{"inotify_init1": 0, "memfd_create": 0, "shmget": 0, "msgget": 0}},
		{"default", map[string]int{"inotify_init1": 0, "memfd_create": 0, "shmget": 0, "msgget": 0}},
		{"grading", map[string]int{"inotify_init1": eperm, "memfd_create": 0, "shmget": 0, "msgget": 0}},
		{"default,rlimit", map[string]int{"inotify_init1": 0, "memfd_create": eperm, "shmget": eperm, "msgget": eperm}},
		{"grading,rlimit", map[string]int{"inotify_init1": eperm, "memfd_create": eperm, "shmget": eperm, "msgget": eperm}},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			out, err := runHelper(t, bin, "profile", cred, []string{profileEnv + "=" + tc.profile})
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			for name, want := range tc.want {
				if !strings.Contains(out, fmt.Sprintf("%s: %d\n", name, want)) {
					t.Errorf("%s: want errno %d, got:\n%s", name, want, out)
				}
			}
		})
	}
}
