package check

import (
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Attacks on terminals: input injection and the host's ttys.

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
