package job_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/idmap"
	"github.com/closet-sandbox/closet/internal/job"
	"github.com/closet-sandbox/closet/internal/report"
	"github.com/closet-sandbox/closet/internal/sandbox"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// TestMain: this test binary is also the sandbox's init
// (the parent re-executes itself), and runs its tests as nobody when
// started as root.
//
// The stages are the static closet binary, not this one: under -race this
// binary needs cgo and the host's dynamic loader, which a stage started
// inside the sandbox may no longer reach.
func TestMain(m *testing.M) {
	sandbox.RunStageIfAny()
	stageBinary = testutil.StagesUnprivileged()
	os.Exit(m.Run())
}

var stageBinary string

// requisites is the closure of roots, sorted.
func requisites(t *testing.T, roots ...string) []string {
	t.Helper()
	var out []string
	for _, p := range testutil.Closure(t, roots...).Paths {
		out = append(out, string(p.Path))
	}
	slices.Sort(out)
	return out
}

func callerName() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "nobody"
}

// baseRequest is a request as the CLI would make it for this process.
func baseRequest(roots []string, command ...string) job.Request {
	return job.Request{
		Roots: roots, Command: command,
		Env: []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}, UserName: callerName(),
		CwdMode: "none", UID: 1000, GID: 100, TTY: "never",
		StageBinary: stageBinary,
		CallerUID:   os.Getuid(), CallerGID: os.Getgid(),
		SlotDir: idmap.DefaultStateDir("", os.Getuid()),
	}
}

// startJob prepares and starts req, and closes the job when the test ends.
func startJob(ctx context.Context, t *testing.T, req job.Request) *job.Job {
	t.Helper()
	j, err := job.Prepare(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	if err := j.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return j
}

// output runs the job with stdout and stderr captured.
type output struct {
	stdout, stderr string
	report         *report.Report
}

func runJob(ctx context.Context, t *testing.T, req job.Request) (*output, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	req.Stdout, req.Stderr = outW, errW
	j, err := job.Prepare(ctx, req)
	if err != nil {
		outW.Close()
		errW.Close()
		return nil, err
	}
	defer j.Close()
	var so, se []byte
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); so, _ = io.ReadAll(outR) }()
	go func() { defer wg.Done(); se, _ = io.ReadAll(errR) }()
	startErr := j.Start(ctx)
	r := j.Wait()
	outW.Close()
	errW.Close()
	wg.Wait()
	if startErr != nil {
		return &output{string(so), string(se), r}, startErr
	}
	return &output{string(so), string(se), r}, nil
}

// TestConcurrentJobs starts 50 jobs at once from one process, each with a
// closure of its own (half with Request.EarlyInit): each sees exactly its closure, exits with its own
// code, and every GC root is released afterwards; no init is left a
// zombie, and no cgroup is left.
func TestConcurrentJobs(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	dag := fixture.Path(t, "dag-100")
	nodes := requisites(t, dag)
	if len(nodes) < 50 {
		t.Fatalf("dag-100 has %d paths", len(nodes))
	}
	const n = 50
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type result struct {
		out  *output
		err  error
		want []string
		code int
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		node := nodes[len(nodes)-1-i]
		results[i].want = requisites(t, bb, node)
		results[i].code = i % 7
		wg.Add(1)
		go func(i int, node string) {
			defer wg.Done()
			req := baseRequest([]string{bb, node}, bb+"/bin/sh", "-c", fmt.Sprintf("ls -1 /nix/store; exit %d", i%7))
			req.EarlyInit = i%2 == 0 // half of them launch their init while Prepare reads the closure
			results[i].out, results[i].err = runJob(ctx, t, req)
		}(i, node)
	}
	wg.Wait()
	distinct := map[string]bool{}
	for i, r := range results {
		if r.err != nil {
			t.Errorf("job %d: %v", i, r.err)
			continue
		}
		var got []string
		for _, name := range strings.Fields(r.out.stdout) {
			got = append(got, "/nix/store/"+name)
		}
		slices.Sort(got)
		if !slices.Equal(got, r.want) {
			t.Errorf("job %d sees %d paths, want its closure of %d:\n got %v\nwant %v\nstderr %s", i, len(got), len(r.want), got, r.want, r.out.stderr)
		}
		rep := r.out.report
		if rep.ExitCode != r.code || (r.code == 0) != (rep.Status == report.OK) {
			t.Errorf("job %d: status %s exit %d, want exit %d (%s)", i, rep.Status, rep.ExitCode, r.code, rep.Message)
		}
		distinct[rep.Closure.Hash] = true
	}
	if len(distinct) != n {
		t.Errorf("%d distinct closures among %d jobs", len(distinct), n)
	}
	assertNoGCRoots(t)
	assertReaped(t)
}

// assertNoGCRoots: no closet GC root of this process is left.
func assertNoGCRoots(t *testing.T) {
	t.Helper()
	for _, r := range gcRoots() {
		t.Errorf("GC root %s left behind", r)
	}
}

// TestSignalAndKill: Signal reaches the target; Kill ends the whole job
// with verdict XX; both after the job ended say so.
func TestSignalAndKill(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	ctx := context.Background()
	req := baseRequest([]string{bb}, bb+"/bin/sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.05; done")
	j := startJob(ctx, t, req)
	time.Sleep(300 * time.Millisecond) // the trap is set
	if err := j.Signal(os.Signal(sigterm)); err != nil {
		t.Fatal(err)
	}
	if r := j.Wait(); r.Status != report.RE || r.ExitCode != 42 {
		t.Errorf("after SIGTERM: %s exit %d (%s), want RE 42", r.Status, r.ExitCode, r.Message)
	}
	if err := j.Signal(os.Signal(sigterm)); err == nil {
		t.Error("Signal after the end: no error")
	}

	req = baseRequest([]string{bb}, bb+"/bin/sh", "-c", "sleep 60")
	k, err := job.Prepare(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	k.Kill()
	if r := k.Wait(); r.Status != report.XX || time.Since(t0) > 10*time.Second {
		t.Errorf("after Kill: %s (%s) after %v, want XX at once", r.Status, r.Message, time.Since(t0))
	}
}

// TestPrepareRefusals: bad requests are refused before anything runs, with
// errors a caller can classify.
func TestPrepareRefusals(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	ctx := context.Background()
	cases := []struct {
		name string
		mod  func(*job.Request)
		is   error
		msg  string
	}{
		{"cwd mode", func(r *job.Request) { r.CwdMode = "rx" }, job.ErrBadRequest, "--cwd"},
		{"hostname escape", func(r *job.Request) { r.Hostname = "a\x1b]0;x\x07" }, job.ErrBadRequest, "--hostname"},
		{"expose store", func(r *job.Request) { r.Expose = []string{"/nix/store=/s"} }, job.ErrBadRequest, "closet hides"},
		{"expose root", func(r *job.Request) { r.Expose = []string{"/=/s"} }, job.ErrBadRequest, "closet hides"},
		{"share nix var", func(r *job.Request) { r.Share = []string{"/nix/var/nix/db=/s"} }, job.ErrBadRequest, "closet hides"},
		{"not in store", func(r *job.Request) { r.Roots = []string{"/etc/passwd"} }, job.ErrBadRequest, "not in the Nix store"},
		{"no command", func(r *job.Request) { r.Command = []string{"no-such-command"} }, job.ErrNotFound, "no-such-command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := baseRequest([]string{bb}, "sh", "-c", "true")
			c.mod(&req)
			j, err := job.Prepare(ctx, req)
			if err == nil {
				j.Close()
				t.Fatal("prepared")
			}
			if !errorsIs(err, c.is) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q (is %v: %v), want one mentioning %q", err, c.is, errorsIs(err, c.is), c.msg)
			}
		})
	}
}

var sigterm = syscall.SIGTERM

func errorsIs(err, target error) bool { return errors.Is(err, target) }
