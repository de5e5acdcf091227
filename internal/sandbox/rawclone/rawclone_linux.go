// Package rawclone is the clone shared by closet's two children that run
// Go's own way between fork and execve: the init, cloned by the parent
// (sandbox.Launch), and the target, cloned by the init (initstage). Each
// child is one nosplit function of raw system calls over data prepared
// before the clone, as in Go's syscall.forkAndExecInChild1; this package
// holds what they share: the clone itself (on amd64 a trampoline that
// lets the child share the caller's memory until its execve), the
// runtime's fork hooks, and the failure record a child writes on its
// error pipe (Fail) and its parent reads (ReadFailure).
package rawclone

import (
	"fmt"
	"syscall"
	"unsafe"

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

// Failure is what a child writes on its error pipe (close-on-exec, so EOF
// with nothing written means its execve succeeded) before it exits: the
// step that failed, its errno, and an index into the step's own list
// where it has one.
type Failure struct {
	Step, Errno, Index uint32
}

// Fail writes f on the error pipe fd and exits the child. It runs in a
// child between clone and execve: raw system calls only.
//
//go:nosplit
//go:norace
//go:nocheckptr
func Fail(fd int, f *Failure) {
	syscall.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(f)), unsafe.Sizeof(*f))
	for {
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, 253, 0, 0)
	}
}

// ReadFailure reads a child's error pipe to EOF: failed is false when the
// child wrote nothing (its execve succeeded); an error is a record that
// could not be read whole.
func ReadFailure(fd int) (f Failure, failed bool, err error) {
	buf := (*[unsafe.Sizeof(f)]byte)(unsafe.Pointer(&f))[:]
	n, err := ReadFull(fd, buf)
	switch {
	case err != nil:
		return f, true, err
	case n == 0:
		return f, false, nil
	case n != len(buf):
		return f, true, fmt.Errorf("short failure record (%d bytes)", n)
	}
	return f, true, nil
}
