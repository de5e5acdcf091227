package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/closet-sandbox/closet/internal/job"
)

// JobRunner runs each job inside the server's process through internal/job:
// no closet process per job, only the sandbox's own stages. Jobs run as the
// server's user, so the server must not be root (closet serve picks
// ExecRunner with --run-as then). Per-job host uids (issue 9) will plug in
// here through the Request once the job layer has them.
type JobRunner struct {
	// StageBinary is the static closet binary started as the sandbox's
	// stages ("" = this process's executable).
	StageBinary string
	// User is the server's user name (GC-root directory, the job's $USER).
	User string
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
		CwdMode: "none", TTY: "never", Capture: true, StageBinary: r.StageBinary,
		Stdin: inR, Stdout: outW, Stderr: errW,
		Limits: job.Limits{
			WallTime: secs(s.Limits.WallTime), CPUTime: secs(s.Limits.CPUTime),
			Memory: uint64(s.Limits.Memory), Pids: uint64(s.Limits.Pids), Output: uint64(s.Limits.Output),
		},
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
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
