package check

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// archAsm says the attacks written in assembly (asm_amd64.s) exist here.
const archAsm = true

// Implemented in asm_amd64.s: raw instructions an attack needs and Go
// cannot express, and forks whose child must never run Go code.
func int80(nr uintptr) uintptr
func rawSyscallNr(nr uintptr) uintptr
func forkPause() int64
func rawClone(flags uintptr) int64
func orphan() int64

// chmodHighBits is chmod(2) with a mode that has bits above 32 set, as
// the filter must read only the low half (CVE-2019-10063's shape).
func chmodHighBits(f string) error { return raw(unix.SYS_CHMOD, cstr(f), 0o4755|1<<32) }

// x86PortTries are the x86-only ways to 16-bit segments and I/O ports.
func x86PortTries() []try {
	var ldt [16]byte
	return []try{
		{"modify_ldt(write)", raw(unix.SYS_MODIFY_LDT, 1, uintptr(unsafe.Pointer(&ldt[0])), 16)},
		{"iopl(3)", raw(unix.SYS_IOPL, 3)},
		{"ioperm(0x80)", raw(unix.SYS_IOPERM, 0x80, 1, 1)},
	}
}
