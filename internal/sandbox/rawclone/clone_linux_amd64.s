#include "textflag.h"

// func Clone(trap, a1, a2 uintptr) (pid uintptr, errno uintptr)
//
// The system call trap (clone or clone3) with arguments a1 and a2 and
// every other argument zero. With CLONE_VM|CLONE_VFORK the child runs on
// this very stack until its execve or exit, while the calling thread
// waits: the child returns into the caller, whose frame is above this
// one, and its deeper calls may overwrite the slot that held this
// function's return address. So the address is taken off the stack into
// R12 before the call, which the kernel keeps for the parent, and put back
// after; the arguments are read before the call and the results are
// written after it (as Go's own syscall.rawVforkSyscall does).
TEXT ·Clone(SB),NOSPLIT|NOFRAME,$0-40
	MOVQ	a1+8(FP), DI
	MOVQ	a2+16(FP), SI
	MOVQ	$0, DX
	MOVQ	$0, R10
	MOVQ	$0, R8
	MOVQ	$0, R9
	MOVQ	trap+0(FP), AX
	POPQ	R12
	SYSCALL
	PUSHQ	R12
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$0, pid+24(FP)
	NEGQ	AX
	MOVQ	AX, errno+32(FP)
	RET
ok:
	MOVQ	AX, pid+24(FP)
	MOVQ	$0, errno+32(FP)
	RET
