package check

// Implemented in asm_amd64.s: raw instructions an attack needs and Go
// cannot express, and forks whose child must never run Go code.
func int80(nr uintptr) uintptr
func rawSyscallNr(nr uintptr) uintptr
func forkPause() int64
func rawClone(flags uintptr) int64
func orphan() int64
