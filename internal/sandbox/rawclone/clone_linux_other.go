//go:build linux && !amd64

package rawclone

import "syscall"

// VforkFlags: where closet has no trampoline of its own, Clone must not
// be given CLONE_VM: the child would return on the caller's stack and
// overwrite it. Callers fork (a copy of their memory) or use os/exec.
const VforkFlags uintptr = 0

// Clone is the system call trap (clone or clone3) with arguments a1 and
// a2 and every other argument zero.
//
//go:nosplit
//go:norace
func Clone(trap, a1, a2 uintptr) (uintptr, uintptr) {
	r, _, e := syscall.RawSyscall6(trap, a1, a2, 0, 0, 0, 0)
	return r, uintptr(e)
}
