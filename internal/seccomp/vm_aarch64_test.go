package seccomp

import (
	"testing"

	"golang.org/x/net/bpf"
)

// filterFor is the compiled policy for a in the BPF VM.
func filterFor(t testing.TB, a *arch, opts Options) filter {
	t.Helper()
	prog, err := compileFor(a, opts)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	return filter{vm}
}

func numbers(a *arch) map[string]uint32 {
	m := map[string]uint32{}
	for _, s := range a.table {
		m[s.name] = s.nr
	}
	return m
}

// TestAArch64SamePolicy runs the aarch64 filter in the VM and wants, for
// every syscall both architectures have and for argument values that every
// argument check looks at, the answer the x86_64 filter gives: one policy,
// two numberings. Calls only aarch64 has answer EPERM (not on the allowlist),
// as unlisted x86_64 ones do.
func TestAArch64SamePolicy(t *testing.T) {
	for _, opts := range []Options{{}, {MemoryByRlimit: true, Grading: true}} {
		x86, a64 := filterFor(t, archX86_64, opts), filterFor(t, archAArch64, opts)
		xn := numbers(archX86_64)
		args := [][6]uint64{
			{},
			{cloneNewUser}, {cloneNewNS | 17}, // clone flags
			{38 /* AF_ALG */, 5, 0}, {afNetlink, 3, 4}, {afUnix, 1, 0}, // socket families
			{0, tiocsti}, {1, tioclinux | 1<<32}, // ioctl requests
			{0, 0o4755, 0o4755, 0o4755}, // set-id modes in every position
			{0x0040000}, {1},            // personality, prlimit64 of another pid
		}
		common := 0
		for _, s := range archAArch64.table {
			nx, ok := xn[s.name]
			if !ok {
				if got := a64.run(t, auditArchAARCH64, s.nr, [6]uint64{}); got != ActionEPERM {
					t.Errorf("%+v: aarch64-only %s answers %v, want EPERM", opts, s.name, got)
				}
				continue
			}
			common++
			for _, v := range args {
				want := x86.run(t, auditArchX86_64, nx, v)
				if got := a64.run(t, auditArchAARCH64, s.nr, v); got != want {
					t.Errorf("%+v: %s%v answers %v on aarch64, %v on x86_64", opts, s.name, v, got, want)
				}
			}
		}
		if common < 250 {
			t.Errorf("only %d syscalls in common: is the aarch64 table right?", common)
		}
	}
}

// TestAArch64ABIs: any other ABI (x86_64, 32-bit ARM compat) dies, an
// unknown number answers ENOSYS, and the refusals that matter are there by
// number.
func TestAArch64ABIs(t *testing.T) {
	f := filterFor(t, archAArch64, Options{})
	for _, a := range []uint32{auditArchX86_64, 0x40000028 /* ARM */, auditArchI386, 0} {
		if got := f.run(t, a, 63, [6]uint64{}); got != ActionKillProcess {
			t.Errorf("arch %#x: %v, want kill", a, got)
		}
	}
	for _, nr := range []uint32{1000, 4095, 0x40000000 | 63} {
		if got := f.run(t, auditArchAARCH64, nr, [6]uint64{}); got != ActionENOSYS {
			t.Errorf("unknown %d: %v, want ENOSYS", nr, got)
		}
	}
	for nr, want := range map[uint32]Action{
		63: ActionAllow, 64: ActionAllow, // read, write
		425: ActionEPERM, 97: ActionEPERM, 282: ActionEPERM, 280: ActionEPERM, // io_uring_setup, unshare, userfaultfd, bpf
		435: ActionENOSYS, 437: ActionENOSYS, // clone3, openat2
	} {
		if got := f.run(t, auditArchAARCH64, nr, [6]uint64{}); got != want {
			t.Errorf("aarch64 %d: %v, want %v", nr, got, want)
		}
	}
}
