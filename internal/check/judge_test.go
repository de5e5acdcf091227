package check

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestJudgeControlledNotApplicable simulates a kernel without IA32
// emulation: int 0x80 faults outside the sandbox too (Go's "unexpected
// fault address" crash, exit 2), so the attack is not applicable, never
// ESCAPED; where the control survives, the inside verdict stands.
func TestJudgeControlledNotApplicable(t *testing.T) {
	inside := escaped("the child survived the call: %q (exit status 2)", "unexpected fault address")
	crash := errors.New("exit status 2")
	r := judgeControlled(inside, "unexpected fault address 0x0\nfatal error: fault\n", crash)
	if !r.Skipped || r.Blocked || !strings.Contains(r.Evidence, "not applicable") {
		t.Errorf("no IA32 emulation: got %s: %s", r.Verdict(), r.Evidence)
	}
	r = judgeControlled(inside, "", errors.New("signal: segmentation fault"))
	if r.Verdict() != "SKIPPED" {
		t.Errorf("control killed by SIGSEGV: got %s", r.Verdict())
	}
	// IA32 emulation on: the control survives, the inside verdict stands.
	if r := judgeControlled(inside, "survived\n", nil); r.Verdict() != "ESCAPED" {
		t.Errorf("control survived, inside survived: got %s, want ESCAPED", r.Verdict())
	}
	b := blocked("the child was killed by SIGSYS")
	if r := judgeControlled(b, "survived\n", nil); r.Verdict() != "BLOCKED" {
		t.Errorf("control survived, inside killed: got %s, want BLOCKED", r.Verdict())
	}
}

func TestJudgeInotify(t *testing.T) {
	in := blocked("inotify_init1: EPERM")
	if r := judgeInotify(in, nil); r.Verdict() != "BLOCKED" {
		t.Errorf("kernel with inotify: %s", r.Verdict())
	}
	if r := judgeInotify(in, unix.ENOSYS); r.Verdict() != "SKIPPED" || !strings.Contains(r.Evidence, "not applicable") {
		t.Errorf("kernel without inotify: %s: %s", r.Verdict(), r.Evidence)
	}
}

// TestOwnHome: the job's own tmpfs $HOME at the host home's path is not
// the host's home; showing one of its entries is.
func TestOwnHome(t *testing.T) {
	home := t.TempDir()
	if err := ownHome(home, []string{".ssh", "notes.txt"}); err == nil {
		t.Error("an empty home of the job's own counted as the host's")
	}
	os.WriteFile(filepath.Join(home, "notes.txt"), nil, 0o600)
	if err := ownHome(home, []string{".ssh", "notes.txt"}); err != nil {
		t.Error("a home showing the host's notes.txt was not noticed")
	}
}

func TestParseBytes(t *testing.T) {
	for v, want := range map[string]int64{"64M": 64 << 20, "64MiB": 64 << 20, "67108864": 67108864, "1G": 1 << 30, "x": 0} {
		if got := parseBytes(v); got != want {
			t.Errorf("%s: %d, want %d", v, got, want)
		}
	}
}
