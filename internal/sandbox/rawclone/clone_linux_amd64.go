package rawclone

import "golang.org/x/sys/unix"

// VforkFlags make the child share the caller's memory, and the calling
// thread wait, until the child's execve or exit: no copy of the caller's
// page tables, no copy-on-write faults in either process, and nothing to
// tear down at the execve. Clone's trampoline (clone_linux_amd64.s) makes
// that safe here.
const VforkFlags uintptr = unix.CLONE_VM | unix.CLONE_VFORK

// Clone is in clone_linux_amd64.s.
//
//go:noescape
func Clone(trap, a1, a2 uintptr) (pid uintptr, errno uintptr)
