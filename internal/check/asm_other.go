//go:build !amd64

package check

import "golang.org/x/sys/unix"

// archAsm is false: the attacks written in x86_64 assembly report "not
// applicable" on this architecture instead of calling these stubs.
const archAsm = false

func int80(uintptr) uintptr        { return ^uintptr(0) }
func rawSyscallNr(uintptr) uintptr { return ^uintptr(0) }
func forkPause() int64             { return -int64(unix.ENOSYS) }
func rawClone(uintptr) int64       { return -int64(unix.ENOSYS) }
func orphan() int64                { return -int64(unix.ENOSYS) }

// chmodHighBits has no chmod(2) here: fchmodat with the same mode.
func chmodHighBits(f string) error {
	return raw(unix.SYS_FCHMODAT, atFDCWD, cstr(f), 0o4755|1<<32)
}

// x86PortTries: no LDT or I/O ports outside x86.
func x86PortTries() []try { return nil }
