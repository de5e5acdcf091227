package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNoNewPrivs is returned by Install when the calling thread has not set
// no_new_privs: without it the kernel only accepts a filter from a privileged
// caller, and the policy relies on it anyway.
var ErrNoNewPrivs = errors.New("seccomp: no_new_privs is not set on this thread (set PR_SET_NO_NEW_PRIVS first)")

// Program returns the filter Install loads for opts, for this binary's
// architecture (x86_64 or aarch64); on any other Program fails rather than
// return a filter that would kill every call.
//
// The policy is compiled when closet is built, not when a job starts:
// compiling took 0.35 ms of CPU in every init, on a core the init's own
// steps and the parent need then. programs_linux_*.go hold the assembled
// filters, and TestProgramsCurrent fails, saying how to regenerate them,
// unless they are exactly what the compiler makes of today's policy.
func Program(opts Options) ([]unix.SockFilter, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	return unpack(programs[programIndex(opts)]), nil
}

// programIndex is opts' place in programs.
func programIndex(opts Options) int {
	i := 0
	if opts.MemoryByRlimit {
		i |= 1
	}
	if opts.Grading {
		i |= 2
	}
	return i
}

// pack and unpack turn an instruction into a uint64 and back: the code in
// the top 16 bits, then jt, jf and k.
func pack(f unix.SockFilter) uint64 {
	return uint64(f.Code)<<48 | uint64(f.Jt)<<40 | uint64(f.Jf)<<32 | uint64(f.K)
}

func unpack(p []uint64) []unix.SockFilter {
	prog := make([]unix.SockFilter, len(p))
	for i, x := range p {
		prog[i] = unix.SockFilter{Code: uint16(x >> 48), Jt: uint8(x >> 40), Jf: uint8(x >> 32), K: uint32(x)}
	}
	return prog
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
