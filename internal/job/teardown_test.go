package job_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/report"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// TestBackgroundProcessesEnd: a target that leaves processes running in
// the background ends the job with its own status, at once; none of those
// processes is alive by the time Wait returns (checked by host pid, from
// outside the sandbox), and the job's GC roots are held until they are
// all gone.
func TestBackgroundProcessesEnd(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	ctx := context.Background()
	// Distinct arguments, to find these processes from outside.
	arg := fmt.Sprintf("%d.%d", 100+os.Getpid()%800, time.Now().UnixNano()%1000)
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inW.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// 128 MB in the job's /tmp makes the init's exit slow (the kernel
	// frees the tmpfs then, before it kills what is left of the pid
	// namespace): a process that outlived the Result would still be alive
	// when Wait returns. (Without the init's kill before the Result, this
	// test fails.)
	req := baseRequest([]string{bb}, bb+"/bin/sh", "-c",
		fmt.Sprintf("dd if=/dev/zero of=/tmp/f bs=1M count=128 2>/dev/null; sleep %s </dev/null >/dev/null 2>&1 & sleep %s </dev/null >/dev/null 2>&1 & echo ready; read x; exit 3", arg, arg))
	req.Stdin, req.Stdout = inR, outW
	j := startJob(ctx, t, req)
	inR.Close()
	outW.Close()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("the job said %q (%v), want ready", line, err)
	}
	// Forked before the echo, but perhaps not yet through their execve.
	var pids []int
	for t0 := time.Now(); time.Since(t0) < 10*time.Second; time.Sleep(time.Millisecond) {
		if pids = findProcs(t, []byte("sleep\x00"+arg+"\x00")); len(pids) == 2 {
			break
		}
	}
	if len(pids) != 2 {
		t.Fatalf("found %d background processes (%v), want 2", len(pids), pids)
	}
	// While any of them is alive, the job's GC roots must be held.
	var early atomic.Bool
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// The roots first, then the processes: a process seen alive
			// before the roots were looked at may have been reaped, and
			// the roots released, in between (a false alarm under load);
			// one alive after the roots were seen gone is not.
			released := len(gcRoots()) == 0
			alive := anyAlive(pids)
			if alive && released {
				early.Store(true)
			}
			if !alive {
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	if len(gcRoots()) == 0 {
		t.Fatal("no GC root held while the job runs: the check below could not fail")
	}
	t0 := time.Now()
	inW.Close() // the target reads EOF and exits 3
	r := j.Wait()
	took := time.Since(t0)
	for _, p := range pids {
		if testutil.ProcessExists(p) {
			t.Errorf("background process %d is alive after Wait returned", p)
		}
	}
	close(stop)
	<-watched
	if early.Load() {
		t.Error("the GC roots were released while a background process was alive")
	}
	if r.Status != report.RE || r.ExitCode != 3 {
		t.Errorf("status %s exit %d (%s), want RE 3", r.Status, r.ExitCode, r.Message)
	}
	if took > 10*time.Second {
		t.Errorf("the job ended %v after its target did", took)
	}
	assertNoGCRoots(t)
}

// findProcs lists the host pids whose command line is cmdline.
func findProcs(t *testing.T, cmdline []byte) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Equal(b, cmdline) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func anyAlive(pids []int) bool {
	for _, p := range pids {
		if testutil.ProcessExists(p) {
			return true
		}
	}
	return false
}

// gcRoots lists the closet GC roots of this process.
func gcRoots() []string {
	dirs, _ := filepath.Glob("/nix/var/nix/gcroots/per-user/*")
	dirs = append(dirs, "/nix/var/nix/gcroots")
	prefix := fmt.Sprintf("closet-%d-", os.Getpid())
	var out []string
	for _, d := range dirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) {
				out = append(out, filepath.Join(d, e.Name()))
			}
		}
	}
	return out
}

// assertReaped: every init this process started is reaped soon after the
// jobs were closed (their exits go on in the background, see
// sandbox.Outcome.Gone, but no zombie stays), and no cgroup of this
// process is left.
func assertReaped(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		kids := testutil.Children(t)
		if len(kids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var states []string
			for _, k := range kids {
				b, _ := os.ReadFile("/proc/" + k + "/stat")
				states = append(states, strings.TrimSpace(string(b)))
			}
			t.Fatalf("%d children left 10 s after the jobs were closed: %v", len(kids), states)
		}
		time.Sleep(5 * time.Millisecond)
	}
	prefix := fmt.Sprintf("closet-%d-", os.Getpid())
	var left []string
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), prefix) {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("cgroups left behind: %v", left)
	}
}
