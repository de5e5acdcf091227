package check

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Modes the host side runs to judge what only it can see.

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
