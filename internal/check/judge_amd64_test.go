package check

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestJudgeControlledReal runs the real control on this kernel: int 0x80
// outside any sandbox. Where IA32 emulation is on it survives and the
// judge keeps the inside verdict; where it is off, the judge says not
// applicable. Either way the judge must match what the kernel did.
func TestJudgeControlledReal(t *testing.T) {
	if os.Getenv("CLOSET_CHECK_INT80_CHILD") == "1" {
		int80(20)
		os.Stdout.WriteString("survived\n")
		os.Exit(0)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestJudgeControlledReal$")
	cmd.Env = append(os.Environ(), "CLOSET_CHECK_INT80_CHILD=1")
	out, err := cmd.CombinedOutput()
	r := judgeControlled(blocked("killed by SIGSYS"), string(out), err)
	survived := err == nil && strings.Contains(string(out), "survived")
	t.Logf("int 0x80 outside: survived=%v (%v); verdict %s", survived, err, r.Verdict())
	if survived != (r.Verdict() == "BLOCKED") {
		t.Errorf("control survived=%v but verdict %s", survived, r.Verdict())
	}
}
