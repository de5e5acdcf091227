package sandbox

import (
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The /proc walker finds every process below a root, through each of
// its tasks' children lists, reads files longer than its first buffer
// whole, and reads VmHWM; a gone process reads as nothing.
func TestProcReaderWalksTheTree(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30 & sleep 30 & (sleep 30 & wait) & wait")
	// An environment longer than the reader's first 4 KiB buffer.
	big := "BIG=" + string(bytes.Repeat([]byte("x"), 10000))
	cmd.Env = append(os.Environ(), big)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the group is ours alone
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer cmd.Wait()
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)

	var p procReader
	var pids []int
	// sh, two sleeps, a subshell and its sleep: five processes once all
	// have started.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		pids = pids[:0]
		p.walk(cmd.Process.Pid, func(pid int) { pids = append(pids, pid) })
		if len(pids) >= 5 {
			break
		}
	}
	if len(pids) != 5 || pids[0] != cmd.Process.Pid {
		t.Fatalf("walk from %d found %v, want the shell and its 4 descendants", cmd.Process.Pid, pids)
	}
	slices.Sort(pids)
	if len(slices.Compact(slices.Clone(pids))) != 5 {
		t.Errorf("walk visited a process twice: %v", pids)
	}
	want, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.read(cmd.Process.Pid, "environ"); !bytes.Equal(got, want) || !bytes.Contains(got, []byte(big)) {
		t.Errorf("read of a %d-byte environ: %d bytes, not the same", len(want), len(got))
	}
	for _, pid := range pids {
		if kib := p.vmHWM(pid); kib <= 0 {
			t.Errorf("VmHWM of %d: %d KiB", pid, kib)
		}
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	if kib, b := p.vmHWM(cmd.Process.Pid), p.read(cmd.Process.Pid, "status"); kib != 0 || b != nil {
		t.Errorf("a reaped process: VmHWM %d, status %q", kib, b)
	}
	n := 0
	p.walk(cmd.Process.Pid, func(int) { n++ })
	if n != 1 {
		t.Errorf("walk from a reaped process visited %d, want only the root", n)
	}
}
