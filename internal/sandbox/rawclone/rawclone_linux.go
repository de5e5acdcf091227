// Package rawclone is the clone shared by closet's two children that run
// Go's own way between fork and execve: the init, cloned by the parent
// (sandbox.Launch), and the target, cloned by the init (initstage). Each
// child is one nosplit function of raw system calls over data prepared
// before the clone, as in Go's syscall.forkAndExecInChild1; this package
// holds what they share: the clone itself (on amd64 a trampoline that
// lets the child share the caller's memory until its execve) and the
// runtime's fork hooks.
package rawclone

import (
	_ "unsafe" // go:linkname

	"golang.org/x/sys/unix"
)

// The runtime's fork hooks, as package syscall uses them around its own
// fork: BeforeFork blocks every signal on this thread and keeps the
// runtime from preempting or growing its stack; AfterFork undoes that in
// the parent; AfterForkInChild resets the handlers the runtime installed
// to their defaults and restores the signal mask, which execve then hands
// the new program.

//go:linkname BeforeFork syscall.runtime_BeforeFork
func BeforeFork()

//go:linkname AfterFork syscall.runtime_AfterFork
func AfterFork()

//go:linkname AfterForkInChild syscall.runtime_AfterForkInChild
func AfterForkInChild()

// ReadFull reads fd until buf is full or EOF, retrying EINTR. On a
// child's error pipe, EOF with nothing read means its execve succeeded.
func ReadFull(fd int, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}
