package job_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/job"
	"github.com/closet-sandbox/closet/internal/report"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// earlyPids makes req launch its init early and collects the host pids
// of the inits it launched, from the -v line that names each.
func earlyPids(req *job.Request) (pids func() []int) {
	var mu sync.Mutex
	var got []int
	req.EarlyInit = true
	req.Logf = func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		if rest, ok := strings.CutPrefix(line, "sandbox init launched early: pid "); ok {
			n, _ := strconv.Atoi(strings.Fields(rest)[0])
			mu.Lock()
			got = append(got, n)
			mu.Unlock()
		}
	}
	return func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), got...)
	}
}

// waitPid waits for the one early init's pid.
func waitPid(t *testing.T, pids func() []int) int {
	t.Helper()
	for t0 := time.Now(); time.Since(t0) < 10*time.Second; time.Sleep(time.Millisecond) {
		if p := pids(); len(p) > 0 {
			if len(p) != 1 {
				t.Fatalf("inits launched: %v, want one", p)
			}
			return p[0]
		}
	}
	t.Fatal("no init was launched early")
	return 0
}

// isChild: pid is a child of this process (alive or a zombie).
func isChild(t *testing.T, pid int) bool {
	for _, c := range testutil.Children(t) {
		if c == strconv.Itoa(pid) {
			return true
		}
	}
	return false
}

// TestEarlyInitClosedUnstarted: a job prepared with EarlyInit has its
// init launched, waiting for the spec; closed without Start, the init is
// killed and reaped (its host pid is gone, no zombie), and no cgroup and
// no GC root is left. Capture and a memory limit make it a job with
// cgroups where the host gives any.
func TestEarlyInitClosedUnstarted(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	ctx := context.Background()
	req := baseRequest([]string{bb}, bb+"/bin/true")
	req.Capture = true
	req.Limits.Memory = 64 << 20
	pids := earlyPids(&req)
	j, err := job.Prepare(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	pid := waitPid(t, pids)
	// The control: the init exists, is this process's child, and waits.
	if !testutil.ProcessExists(pid) || !isChild(t, pid) {
		t.Fatalf("the early init %d is not a live child of this process", pid)
	}
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	t.Logf("init %d, cgroups:\n%s", pid, b)
	if roots := gcRoots(); len(roots) != 0 {
		t.Errorf("GC roots registered by Prepare: %v", roots)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if testutil.ProcessExists(pid) {
		t.Errorf("the early init %d is still there (alive or a zombie) after Close", pid)
	}
	if err := j.Start(ctx); err == nil {
		t.Error("Start after Close succeeded")
	}
	assertReaped(t)
	assertNoGCRoots(t)
}

// TestEarlyInitPrepareFails: a Prepare that fails after the early init was
// launched (the root is not in the store) kills and reaps it and leaves
// nothing.
func TestEarlyInitPrepareFails(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	missing := "/nix/store/" + strings.Repeat("0", 32) + "-not-in-the-store"
	req := baseRequest([]string{bb, missing}, bb+"/bin/true")
	req.Capture = true
	pids := earlyPids(&req)
	j, err := job.Prepare(context.Background(), req)
	if err == nil {
		j.Close()
		t.Fatal("Prepare of a root that is not in the store succeeded")
	}
	t.Logf("refused: %v", err)
	p := pids()
	if len(p) != 1 {
		t.Fatalf("inits launched: %v, want one (the test cannot fail otherwise)", p)
	}
	if testutil.ProcessExists(p[0]) {
		t.Errorf("the early init %d is still there after Prepare failed", p[0])
	}
	assertReaped(t)
	assertNoGCRoots(t)
}

// TestEarlyInitRuns: a job whose init was launched early runs as one
// launched by Start: its closure, its ids, its captured output, its
// report; the init is the one launched early.
func TestEarlyInitRuns(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := baseRequest([]string{bb}, bb+"/bin/sh", "-c", "ls /nix/store; id -u; id -g; exit 4")
	req.Capture = true
	pids := earlyPids(&req)
	out, err := runJob(ctx, t, req)
	if err != nil {
		t.Fatal(err)
	}
	if p := pids(); len(p) != 1 {
		t.Errorf("inits launched early: %v, want one", p)
	}
	want := strings.TrimPrefix(bb, "/nix/store/") + "\n1000\n100\n"
	if out.stdout != want {
		t.Errorf("stdout %q, want %q (stderr %q)", out.stdout, want, out.stderr)
	}
	r := out.report
	if r.Status != report.RE || r.ExitCode != 4 || r.Output != uint64(len(want)) {
		t.Errorf("report: status %s exit %d output %d, want RE 4 %d (%s)", r.Status, r.ExitCode, r.Output, len(want), r.Message)
	}
	assertReaped(t)
	assertNoGCRoots(t)
}
