package sandbox

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func TestOutputsKeepExactlyTheLimit(t *testing.T) {
	var overs atomic.Int32
	o, err := newOutputs(1000, func() { overs.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	// Writers on both pipes, as a job's stdout and stderr.
	wOut, wErr := o.wOut, o.wErr
	dupOut, _ := dupFile(wOut)
	dupErr, _ := dupFile(wErr)
	var out, errb lockedBuffer
	o.start(&out, &errb)
	var wg sync.WaitGroup
	for _, w := range []*os.File{dupOut, dupErr} {
		wg.Add(1)
		go func(w *os.File) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				w.Write([]byte(strings.Repeat("x", 17)))
			}
			w.Close()
		}(w)
	}
	wg.Wait()
	total, kept := o.wait()
	if total != 3400 || kept != 1000 || out.b.Len()+errb.b.Len() != 1000 {
		t.Errorf("total %d kept %d passed on %d+%d", total, kept, out.b.Len(), errb.b.Len())
	}
	if overs.Load() == 0 {
		t.Error("over was never called")
	}
}

func TestOutputsWithinTheLimit(t *testing.T) {
	o, err := newOutputs(0, func() { t.Error("over without a limit") })
	if err != nil {
		t.Fatal(err)
	}
	w, _ := dupFile(o.wOut)
	var out lockedBuffer
	o.start(&out, nil)
	before := o.last.Load()
	time.Sleep(10 * time.Millisecond)
	w.Write([]byte("hello\n"))
	w.Close()
	total, kept := o.wait()
	if total != 6 || kept != 6 || out.b.String() != "hello\n" || o.last.Load() <= before {
		t.Errorf("total %d kept %d out %q", total, kept, out.b.String())
	}
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

func TestTreeCPU(t *testing.T) {
	cmd := exec.Command("sh", "-c", "while :; do :; done & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the group is ours alone
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	// The busy child is a grandchild of nothing closet knows but the
	// tree below the shell. A loaded machine gives it the CPU late, so
	// wait for the time to be spent rather than for the clock.
	var got time.Duration
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = treeCPU(cmd.Process.Pid); got >= 300*time.Millisecond {
			break
		}
	}
	if got < 300*time.Millisecond {
		t.Errorf("treeCPU = %v after 20s of a busy grandchild", got)
	}
	// The grandchild is killed with its group below, not left spinning.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
