#include "textflag.h"

// func rawClone(flags uintptr) (pid uintptr, errno uintptr)
//
// clone(flags, 0, 0, 0, 0). With CLONE_VM|CLONE_VFORK (cloneFlags) the
// child runs on this very stack until its execve or exit, while the
// calling thread waits: the child returns into forkTarget, whose frame is
// above this one, and its deeper calls may overwrite the slot that held
// this function's return address. So the address is taken off the stack
// into R12 before the call, which the kernel keeps for the parent, and put
// back after; the argument is read before the call and the results are
// written after it.
TEXT ·rawClone(SB),NOSPLIT|NOFRAME,$0-24
	MOVQ	flags+0(FP), DI
	MOVQ	$0, SI
	MOVQ	$0, DX
	MOVQ	$0, R10
	MOVQ	$0, R8
	MOVQ	$0, R9
	MOVQ	$56, AX // SYS_clone
	POPQ	R12
	SYSCALL
	PUSHQ	R12
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$0, pid+8(FP)
	NEGQ	AX
	MOVQ	AX, errno+16(FP)
	RET
ok:
	MOVQ	AX, pid+8(FP)
	MOVQ	$0, errno+16(FP)
	RET
