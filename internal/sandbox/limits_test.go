package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/cgroup"
	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/spec"
	"github.com/closet-sandbox/closet/internal/testutil"
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

// A job whose pids limit a v1 pids cgroup enforces joins the job's own
// cgroup first thing; when it cannot (here the job's cgroup is removed
// before the init forks it), nothing runs and the error names the step.
// The control run, with the cgroup in place, runs and gets its limit.
func TestPidsJoinFailsClosed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("cgroup v1 needs root")
	}
	own := ""
	b, _ := os.ReadFile("/proc/self/cgroup")
	for _, l := range strings.Split(string(b), "\n") {
		if p := strings.SplitN(l, ":", 3); len(p) == 3 && p[1] == "pids" {
			own = filepath.Join("/sys/fs/cgroup/pids", p[2])
		}
	}
	if st, err := os.Stat(own); own == "" || err != nil || !st.IsDir() {
		t.Skip("no cgroup v1 pids hierarchy")
	}
	bb := fixture.Path(t, "busybox")
	marker := filepath.Join(testutil.TempDir(t), "ran")
	run := func(ready func() error) (string, error) {
		s := &spec.Spec{
			Version: spec.Version, Path: bb + "/bin/sh",
			Args: []string{"sh", "-c", "echo ran > /w/ran; n=0; for i in 1 2 3 4; do sleep 1 & n=$((n+1)); echo $n; done"},
			Env:  []string{"PATH=" + bb + "/bin"}, Cwd: "/", UID: 1000, GID: 100, User: "u", Home: "/home/u",
			Hostname: "pids", Store: []string{bb}, Etc: map[string]string{}, Seccomp: "default",
			Mounts: []spec.Mount{{Source: filepath.Dir(marker), Target: "/w", Writable: true}},
			Limits: spec.Limits{Pids: 3},
		}
		var stdout lockedBuffer
		outR, outW, _ := os.Pipe()
		done := make(chan struct{})
		go func() { io.Copy(&stdout, outR); close(done) }()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := Run(ctx, s, LaunchOptions{Stdio: Stdio{Stdout: outW}}, Hooks{Ready: ready})
		outW.Close()
		<-done
		if err == nil {
			<-out.Gone // the job's cgroups are removed
		}
		return stdout.b.String(), err
	}
	out, err := run(nil)
	if err != nil || out != "1\n2\n" {
		t.Fatalf("control: stdout %q, err %v (sh and 2 sleepers are the job's 3)", out, err)
	}
	os.Remove(marker)
	out, err = run(func() error {
		// The init is in its part of the job's cgroup, blocked reading the
		// spec: the job's part is empty, and can go.
		jobs, _ := filepath.Glob(filepath.Join(own, fmt.Sprintf("closet-%d-*", os.Getpid()), cgroup.JobDir))
		if len(jobs) != 1 {
			return fmt.Errorf("job cgroups %v, want one", jobs)
		}
		return unix.Rmdir(jobs[0])
	})
	t.Logf("refused: %v", err)
	var se *stage.Error
	if !errors.As(err, &se) || !errors.Is(err, ErrSetup) || se.Op != "join the job's pids cgroup" {
		t.Errorf("without the job's cgroup: err %v, want the join step's failure", err)
	}
	if _, serr := os.Stat(marker); serr == nil || out != "" {
		t.Errorf("the job ran without its pids cgroup (stdout %q)", out)
	}
	if left, _ := filepath.Glob(filepath.Join(own, fmt.Sprintf("closet-%d-*", os.Getpid()))); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
