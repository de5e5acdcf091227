package seccomp

import (
	"fmt"
	"math"

	"golang.org/x/net/bpf"
)

// sysent is one entry of the syscall table.
type sysent struct {
	nr   uint32
	name string
}

// struct seccomp_data, as the kernel lays it out on x86_64 and aarch64 (both
// little endian).
const (
	offNr   = 0
	offArch = 4
	offArgs = 16 // args[i] at offArgs + 8*i; its low 32 bits come first

	auditArchX86_64  = 0xc000003e // AUDIT_ARCH_X86_64
	auditArchAARCH64 = 0xc00000b7 // AUDIT_ARCH_AARCH64
	x32Bit           = 0x40000000 // __X32_SYSCALL_BIT

	// maxInstructions is the kernel's BPF_MAXINSNS.
	maxInstructions = 4096
)

// decision is what one syscall number answers: action, unless a clause's
// conditions hold first.
type decision struct {
	clauses []clause
	action  Action
}

// leaf is a run of syscall numbers, from start up to the next leaf's start,
// that answer with the same code.
type leaf struct {
	start uint32
	code  []bpf.Instruction
}

// arch is one native ABI the policy can be compiled for. Both have the
// generic errno and ioctl numbers, and the same argument order for every call
// the policy inspects, so the rules hold unchanged; only the numbers differ.
type arch struct {
	name  string
	audit uint32   // AUDIT_ARCH_* of native calls; any other dies
	table []sysent // its syscalls, in number order
	x32   bool     // numbers with the x32 bit die too (x86_64 only)
}

var (
	archX86_64  = &arch{name: "x86_64", audit: auditArchX86_64, table: x86_64Syscalls, x32: true}
	archAArch64 = &arch{name: "aarch64", audit: auditArchAARCH64, table: aarch64Syscalls}
)

// archFor is the arch of a GOARCH, or nil where closet has no table.
func archFor(goarch string) *arch {
	switch goarch {
	case "amd64":
		return archX86_64
	case "arm64":
		return archAArch64
	}
	return nil
}

// compile builds the filter for native x86_64. It is portable Go: the program
// it returns is for an x86_64 kernel whatever the build host, which is what
// lets the tests run it in a BPF VM anywhere.
func compile(opts Options) ([]bpf.Instruction, error) { return compileFor(archX86_64, opts) }

// compileFor builds the filter for a's native calls.
func compileFor(a *arch, opts Options) ([]bpf.Instruction, error) {
	decisions, err := decideFor(a, policy(opts))
	if err != nil {
		return nil, err
	}
	leaves, err := layoutFor(a, decisions)
	if err != nil {
		return nil, err
	}
	prog := []bpf.Instruction{
		// Any ABI but the native one dies before its number is looked at.
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: a.audit, SkipTrue: 1},
		bpf.RetConstant{Val: uint32(ActionKillProcess)},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
	}
	if a.x32 {
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: x32Bit, SkipFalse: 1},
			bpf.RetConstant{Val: uint32(ActionKillProcess)})
	}
	prog = append(prog, search(leaves)...)
	if len(prog) > maxInstructions {
		return nil, fmt.Errorf("seccomp: program has %d instructions, the kernel takes at most %d", len(prog), maxInstructions)
	}
	return prog, nil
}

// decide is decideFor x86_64.
func decide(groups []group) (map[uint32]decision, error) { return decideFor(archX86_64, groups) }

// decideFor maps every syscall number of a to its decision, checking that each
// group names syscalls some architecture knows and that no syscall is in two
// groups. A name a lacks (open, fork, ... on aarch64) is skipped: there is no
// such call to decide.
func decideFor(a *arch, groups []group) (map[uint32]decision, error) {
	byName := make(map[string]uint32, len(a.table))
	for _, s := range a.table {
		byName[s.name] = s.nr
	}
	known := map[string]bool{}
	for _, t := range []*arch{archX86_64, archAArch64} {
		for _, s := range t.table {
			known[s.name] = true
		}
	}
	decisions := make(map[uint32]decision, len(a.table))
	owner := map[string]string{}
	for _, g := range groups {
		for _, name := range g.syscalls {
			if !known[name] {
				return nil, fmt.Errorf("seccomp: rule %s: unknown syscall %q", g.name, name)
			}
			if prev, dup := owner[name]; dup {
				return nil, fmt.Errorf("seccomp: syscall %s is in rules %s and %s", name, prev, g.name)
			}
			owner[name] = g.name
			if nr, ok := byName[name]; ok {
				decisions[nr] = decision{clauses: g.clauses, action: g.action}
			}
		}
	}
	for _, s := range a.table {
		if _, ok := decisions[s.nr]; !ok {
			decisions[s.nr] = decision{action: ActionEPERM}
		}
	}
	return decisions, nil
}

// layout turns the decisions into leaves covering every 32-bit number, merging
// neighbours that just return the same action. Numbers without a decision are
// unknown and answer ENOSYS.
func layout(decisions map[uint32]decision) ([]leaf, error) { return layoutFor(archX86_64, decisions) }

// layoutFor is layout over a's numbers.
func layoutFor(a *arch, decisions map[uint32]decision) ([]leaf, error) {
	maxNr := a.table[len(a.table)-1].nr
	var leaves []leaf
	last := Action(0) // the action of the previous leaf if it is a plain return
	for nr := uint32(0); nr <= maxNr+1; nr++ {
		d, known := decisions[nr]
		if !known {
			d = decision{action: ActionENOSYS}
		}
		if len(d.clauses) == 0 {
			if len(leaves) > 0 && last == d.action {
				continue
			}
			leaves = append(leaves, leaf{start: nr, code: []bpf.Instruction{bpf.RetConstant{Val: uint32(d.action)}}})
			last = d.action
			continue
		}
		code, err := checks(d)
		if err != nil {
			return nil, fmt.Errorf("seccomp: syscall %d: %w", nr, err)
		}
		leaves = append(leaves, leaf{start: nr, code: code})
		last = 0
	}
	return leaves, nil
}

// search emits a binary search over the leaves on the syscall number in A. Each
// leaf's code ends in a return, so subtrees are laid out one after the other and
// every jump is relative to its own subtree.
func search(leaves []leaf) []bpf.Instruction {
	if len(leaves) == 1 {
		return leaves[0].code
	}
	mid := len(leaves) / 2
	below, above := search(leaves[:mid]), search(leaves[mid:])
	pivot := leaves[mid].start
	var out []bpf.Instruction
	if len(below) <= math.MaxUint8 {
		out = append(out, bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: pivot, SkipTrue: uint8(len(below))})
	} else {
		// A conditional jump reaches 255 instructions at most; an unconditional
		// one reaches anywhere.
		out = append(out,
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: pivot, SkipFalse: 1},
			bpf.Jump{Skip: uint32(len(below))})
	}
	out = append(out, below...)
	return append(out, above...)
}

// checks emits the argument checks of one syscall: each clause in turn, and the
// decision's own action when none holds. It is built back to front, so that a
// failing condition knows how far the next clause is.
func checks(d decision) ([]bpf.Instruction, error) {
	tail := []bpf.Instruction{bpf.RetConstant{Val: uint32(d.action)}}
	for i := len(d.clauses) - 1; i >= 0; i-- {
		c := d.clauses[i]
		code := []bpf.Instruction{bpf.RetConstant{Val: uint32(c.action)}}
		for j := len(c.all) - 1; j >= 0; j-- {
			block, err := test(c.all[j], len(code))
			if err != nil {
				return nil, err
			}
			code = append(block, code...)
		}
		tail = append(code, tail...)
	}
	return tail, nil
}

// test emits one cond: fall through when it holds, skip fail instructions when
// it does not.
func test(c cond, fail int) ([]bpf.Instruction, error) {
	if c.arg < 0 || c.arg > 5 || len(c.in) == 0 {
		return nil, fmt.Errorf("bad condition on argument %d", c.arg)
	}
	if fail > math.MaxUint8 {
		return nil, fmt.Errorf("condition on argument %d: jump of %d is too long", c.arg, fail)
	}
	out := []bpf.Instruction{bpf.LoadAbsolute{Off: uint32(offArgs + 8*c.arg), Size: 4}}
	if c.mask != 0 && c.mask != math.MaxUint32 {
		out = append(out, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: c.mask})
	}
	for k, v := range c.in {
		left := len(c.in) - 1 - k // comparisons after this one
		j := bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipTrue: uint8(left)}
		if left == 0 {
			j.SkipFalse = uint8(fail)
		}
		out = append(out, j)
	}
	return out, nil
}
