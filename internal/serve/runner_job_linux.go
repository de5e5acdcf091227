package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/job"
	"github.com/closet-sandbox/closet/internal/viewcache"
)

// JobRunner runs each job inside the server's process through internal/job:
// no closet process per job, only the sandbox's own stages. With HostUID
// "auto" each job gets a host uid of its own where /etc/subuid allows it
// (its binds are read-only), else the server's.
type JobRunner struct {
	// StageBinary is the static closet binary started as the sandbox's
	// stages ("" = this process's executable).
	StageBinary string
	// User, UID and GID are the server's: the GC-root directory, the
	// owner of the jobs' subordinate ids.
	User     string
	UID, GID int
	// SlotDir is where per-job host ids are locked (idmap.DefaultStateDir).
	SlotDir string
	// HostUID is job.Request.HostUID: "auto", "caller" or "subordinate".
	HostUID string
	// Views, when set, starts jobs in cached store views (warm starts).
	Views *viewcache.Cache
	// Closures, when set, remembers the closures of the jobs' roots
	// (closure.Cache: each job still looks its roots up).
	Closures *closure.Cache
}

// Run implements Runner.
func (r *JobRunner) Run(ctx context.Context, s Spec) (Result, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return Result{}, err
	}
	defer inR.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		inW.Close()
		return Result{}, err
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		inW.Close()
		outW.Close()
		return Result{}, err
	}
	defer errR.Close()
	closeW := func() { inW.Close(); outW.Close(); errW.Close() }
	req := job.Request{
		Roots: s.Roots, Command: s.Command,
		Env: []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}, Cwd: "/", UserName: r.User,
		CallerUID: r.UID, CallerGID: r.GID, SlotDir: r.SlotDir, HostUID: r.HostUID,
		UID: 1000, GID: 100, // the job's ids inside, as closet run's defaults
		CwdMode: "none", TTY: "never", Capture: true, StageBinary: r.StageBinary, Views: r.Views, Closures: r.Closures,
		Stdin: inR, Stdout: outW, Stderr: errW,
		Limits: job.Limits{
			WallTime: secs(s.Limits.WallTime), CPUTime: secs(s.Limits.CPUTime),
			Memory: uint64(s.Limits.Memory), Pids: uint64(s.Limits.Pids), Output: uint64(s.Limits.Output),
		},
		// Every job prepared here is started at once: its init starts
		// while the closure is read (not with Views: the closure decides
		// which cached view serves it).
		EarlyInit: true,
	}
	if s.Dir != "" {
		req.Expose = []string{s.Dir + "=" + SubmissionPath}
	}
	t0 := time.Now()
	j, err := job.Prepare(ctx, req)
	if err != nil {
		closeW()
		if errors.Is(err, job.ErrBadRequest) {
			return Result{Verdict: "XX", Message: "closet refused the job: " + err.Error(), SetupTime: since(t0)}, nil
		}
		return Result{}, fmt.Errorf("prepare the job: %w", err)
	}
	defer j.Close()
	out, errb := &capBuffer{max: s.Keep}, &capBuffer{max: s.Keep}
	drained := make(chan struct{}, 2)
	go func() { io.Copy(out, outR); drained <- struct{}{} }()
	go func() { io.Copy(errb, errR); drained <- struct{}{} }()
	go func() { inW.Write(s.Stdin); inW.Close() }()
	if err := j.Start(ctx); err != nil {
		outW.Close()
		errW.Close()
		<-drained
		<-drained
		return Result{Verdict: "XX", Message: err.Error(), SetupTime: since(t0), Stdout: out.buf.String(), Stderr: errb.buf.String()}, nil
	}
	setup := since(t0)
	go func() {
		select {
		case <-ctx.Done():
			j.Kill()
		case <-j.Done():
		}
	}()
	rep := j.Wait()
	// The sandbox has copied the job's output into our pipes; our write
	// ends are the last ones.
	outW.Close()
	errW.Close()
	<-drained
	<-drained
	res := Result{
		Verdict: rep.Status, Message: rep.Message, ExitCode: rep.ExitCode, Signal: rep.Signal,
		CPUTime: rep.CPUTime, WallTime: rep.WallTime, MaxRSS: rep.MaxRSS, SetupTime: setup,
		Stdout: out.buf.String(), Stderr: errb.buf.String(), StdoutTruncated: out.more, StderrTruncated: errb.more,
		WarmView: rep.WarmView,
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
