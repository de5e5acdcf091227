package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ErrNoNewPrivs is returned by Install when the calling thread has not set
// no_new_privs: without it the kernel only accepts a filter from a privileged
// caller, and the policy relies on it anyway.
var ErrNoNewPrivs = errors.New("seccomp: no_new_privs is not set on this thread (set PR_SET_NO_NEW_PRIVS first)")

// Program compiles the policy for opts into the filter Install loads, for this
// binary's architecture (x86_64 or aarch64); on any other Program fails rather
// than return a filter that would kill every call.
func Program(opts Options) ([]unix.SockFilter, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	insns, err := compileFor(archFor(runtime.GOARCH), opts)
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(insns)
	if err != nil {
		return nil, fmt.Errorf("seccomp: assemble: %w", err)
	}
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return prog, nil
}

// Supported is nil where the policy can be compiled for this binary's
// architecture, and otherwise says so and what to do, in one line: closet
// refuses to run a job rather than run it unfiltered unasked.
func Supported() error {
	if archFor(runtime.GOARCH) == nil {
		return fmt.Errorf("seccomp: closet has no syscall table for %s, only for amd64 and arm64, so it cannot filter the job's system calls here; refusing to run (add --seccomp off to run without a syscall filter)", runtime.GOARCH)
	}
	return nil
}

// Install loads prog as a seccomp filter on the calling thread only (no TSYNC).
//
// Preconditions: the goroutine is locked to its OS thread (runtime.LockOSThread),
// no_new_privs is set on that thread, and nothing but execve is left to do: the
// filter confines every later call of this thread and of whatever it executes.
// Errors wrap the kernel's errno, so errors.Is(err, unix.EINVAL) works.
func Install(prog []unix.SockFilter) error {
	if len(prog) == 0 || len(prog) > maxInstructions {
		return fmt.Errorf("seccomp: program has %d instructions, want 1 to %d: %w", len(prog), maxInstructions, unix.EINVAL)
	}
	nnp, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("seccomp: read no_new_privs: %w", err)
	}
	if nnp != 1 {
		return ErrNoNewPrivs
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("seccomp: install filter (%d instructions): %w", len(prog), errno)
	}
	return nil
}
