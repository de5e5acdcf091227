package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// ExecRunner runs each job as a `closet run` process: the same sandbox, the
// same verdicts and the same report as the command line, one process per
// job. It is what the server uses until internal/job can run many jobs in
// one process; a crash of one job's closet cannot take the server with it.
type ExecRunner struct {
	// Binary is the closet executable (usually os.Executable()).
	Binary string
	// UID and GID, when UID > 0, are the unprivileged user jobs run as;
	// the server sets them when it runs as root (closet refuses to hold
	// root's GC roots and a sandbox is meant to be rootless).
	UID, GID int
	// User is the job user's name ($USER for closet run, GC-root dir).
	User string
}

// capBuffer keeps the first max bytes written and counts the rest.
type capBuffer struct {
	max  int
	buf  bytes.Buffer
	more bool
}

func (c *capBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		if len(p) > room {
			c.buf.Write(p[:room])
			c.more = true
		} else {
			c.buf.Write(p)
		}
	} else if len(p) > 0 {
		c.more = true
	}
	return len(p), nil
}

// runReport is the part of closet run's --report JSON the server uses.
type runReport struct {
	Status   string  `json:"status"`
	Message  string  `json:"message"`
	ExitCode int     `json:"exitCode"`
	Signal   int     `json:"signal"`
	CPUTime  float64 `json:"cpuTime"`
	WallTime float64 `json:"wallTime"`
	MaxRSS   uint64  `json:"maxRSS"`
}

// Run implements Runner.
func (r *ExecRunner) Run(ctx context.Context, s Spec) (Result, error) {
	work, err := os.MkdirTemp("", "closet-serve-run-")
	if err != nil {
		return Result{}, fmt.Errorf("make the run's directory: %w", err)
	}
	defer os.RemoveAll(work)
	if r.UID > 0 {
		if err := os.Chown(work, r.UID, r.GID); err != nil {
			return Result{}, fmt.Errorf("hand %s to uid %d: %w", work, r.UID, err)
		}
	}
	reportPath := filepath.Join(work, "report.json")
	args := []string{"run", "--cwd", "none", "--tty", "never", "--report", reportPath}
	if s.Dir != "" {
		args = append(args, "--expose", s.Dir+"="+SubmissionPath)
	}
	l := s.Limits
	secs := func(flag string, v float64) {
		if v > 0 {
			args = append(args, flag, strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	ints := func(flag string, v int64) {
		if v > 0 {
			args = append(args, flag, strconv.FormatInt(v, 10))
		}
	}
	secs("--wall-time", l.WallTime)
	secs("--cpu-time", l.CPUTime)
	ints("--memory", l.Memory)
	ints("--pids", l.Pids)
	ints("--output", l.Output)
	args = append(args, s.Roots...)
	args = append(args, "--")
	args = append(args, s.Command...)

	cmd := exec.Command(r.Binary, args...)
	cmd.Dir = work
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/nonexistent", "USER=" + r.User}
	cmd.Stdin = bytes.NewReader(s.Stdin)
	out, errb := &capBuffer{max: s.Keep}, &capBuffer{max: s.Keep}
	cmd.Stdout, cmd.Stderr = out, errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if r.UID > 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(r.UID), Gid: uint32(r.GID)}
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("start %s: %w", r.Binary, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var waitErr error
	cancelled := false
	select {
	case waitErr = <-done:
	case <-ctx.Done():
		// closet forwards SIGTERM to the job and reports; SIGKILL after a
		// grace period in case it cannot.
		cancelled = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case waitErr = <-done:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			waitErr = <-done
		}
	}
	total := since(t0)
	res := Result{
		Stdout: out.buf.String(), Stderr: errb.buf.String(),
		StdoutTruncated: out.more, StderrTruncated: errb.more,
	}
	if cancelled {
		return res, ctx.Err()
	}
	raw, err := os.ReadFile(reportPath)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) && ee.ExitCode() == 1 {
			// Bad input: closet refused the job before anything ran.
			res.Verdict, res.Message = "XX", "closet refused the job: "+lastLine(res.Stderr)
			res.SetupTime = total
			return res, nil
		}
		return res, fmt.Errorf("closet run wrote no report (%v): %s", waitErr, lastLine(res.Stderr))
	}
	var rep runReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		return res, fmt.Errorf("read closet's report %s: %w", reportPath, err)
	}
	res.Verdict, res.Message = rep.Status, rep.Message
	res.ExitCode, res.Signal = rep.ExitCode, rep.Signal
	res.CPUTime, res.WallTime, res.MaxRSS = rep.CPUTime, rep.WallTime, rep.MaxRSS
	res.SetupTime = max(0, total-rep.WallTime)
	return res, nil
}

func lastLine(s string) string {
	s = string(bytes.TrimSpace([]byte(s)))
	if i := bytes.LastIndexByte([]byte(s), '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
