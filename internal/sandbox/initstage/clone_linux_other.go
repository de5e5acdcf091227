//go:build linux && !amd64

package initstage

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// cloneFlags: a plain fork where closet has no vfork trampoline of its
// own (see clone_linux_amd64.s): the child gets a copy of the init's
// memory.
const cloneFlags = uintptr(unix.SIGCHLD)

// rawClone is clone(flags, 0, 0, 0, 0).
//
//go:nosplit
//go:norace
func rawClone(flags uintptr) (uintptr, uintptr) {
	r, _, e := syscall.RawSyscall6(unix.SYS_CLONE, flags, 0, 0, 0, 0, 0)
	return r, uintptr(e)
}
