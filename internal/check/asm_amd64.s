#include "textflag.h"

// func int80(nr uintptr) uintptr
// An i386 syscall from 64-bit code: the seccomp filter sees
// AUDIT_ARCH_I386 and must kill the process.
TEXT ·int80(SB),NOSPLIT,$0-16
	MOVQ nr+0(FP), AX
	XORQ BX, BX
	XORQ CX, CX
	XORQ DX, DX
	INT $0x80
	MOVQ AX, ret+8(FP)
	RET

// func rawSyscallNr(nr uintptr) uintptr
// A syscall with no arguments and an arbitrary number (x32 bit included).
TEXT ·rawSyscallNr(SB),NOSPLIT,$0-16
	MOVQ nr+0(FP), AX
	XORQ DI, DI
	XORQ SI, SI
	XORQ DX, DX
	SYSCALL
	MOVQ AX, ret+8(FP)
	RET

// func forkPause() int64
// fork(2); the child never returns to Go: it loops in pause(2) until
// killed. The parent gets the child's pid or -errno.
TEXT ·forkPause(SB),NOSPLIT,$0-8
	MOVQ $57, AX
	SYSCALL
	CMPQ AX, $0
	JNE parent
loop:
	MOVQ $34, AX
	SYSCALL
	JMP loop
parent:
	MOVQ AX, ret+0(FP)
	RET

// func rawClone(flags uintptr) int64
// clone(2) without CLONE_VM; the child exits at once with status 0.
// The parent gets the child's pid or -errno.
TEXT ·rawClone(SB),NOSPLIT,$0-16
	MOVQ flags+0(FP), DI
	XORQ SI, SI
	XORQ DX, DX
	XORQ R10, R10
	XORQ R8, R8
	MOVQ $56, AX
	SYSCALL
	CMPQ AX, $0
	JNE cparent
	XORQ DI, DI
	MOVQ $231, AX
	SYSCALL
cparent:
	MOVQ AX, ret+8(FP)
	RET

// func orphan() int64
// fork(2); the child forks again and both exit at once, so the grandchild
// is re-parented to the sandbox's init, which must reap it. The parent gets
// the child's pid or -errno.
TEXT ·orphan(SB),NOSPLIT,$0-8
	MOVQ $57, AX
	SYSCALL
	CMPQ AX, $0
	JNE oparent
	MOVQ $57, AX
	SYSCALL
	XORQ DI, DI
	MOVQ $231, AX
	SYSCALL
oparent:
	MOVQ AX, ret+0(FP)
	RET
