package initstage

import "golang.org/x/sys/unix"

// cloneFlags make the target's child share the init's memory, and the
// init's calling thread wait, until the child's execve or exit: no copy of
// the init's page tables, no copy-on-write faults in either process, and
// nothing to tear down at the execve (see forkTarget).
const cloneFlags uintptr = unix.CLONE_VM | unix.CLONE_VFORK | uintptr(unix.SIGCHLD)

// rawClone is in clone_linux_amd64.s.
//
//go:noescape
func rawClone(flags uintptr) (pid uintptr, errno uintptr)
