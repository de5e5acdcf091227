package serve

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
)

// jobArgs is what River carries: only the id; the request lives in
// closet_jobs, beside the verdict.
type jobArgs struct {
	ID string `json:"id"`
}

func (jobArgs) Kind() string { return "closet_job" }

// Request is the body of POST /v1/jobs.
type Request struct {
	Roots          []string          `json:"roots"`
	Command        []string          `json:"command"`
	Stdin          string            `json:"stdin,omitempty"`
	Files          map[string]string `json:"files,omitempty"`
	Tar            string            `json:"tar,omitempty"` // base64 of a tar
	Limits         Limits            `json:"limits"`
	ExpectedStdout *string           `json:"expectedStdout,omitempty"`
}

type worker struct {
	river.WorkerDefaults[jobArgs]
	s *Server
}

// errAborted: the server is stopping; River keeps the job for the next start.
var errAborted = errors.New("server stopping: the job runs again at the next start")

func (w *worker) Work(ctx context.Context, rj *river.Job[jobArgs]) error {
	s := w.s
	id := rj.Args.ID
	dbctx := context.WithoutCancel(ctx)
	// Claim, in one statement: mark the job running unless it is done (its
	// River job was put back after a crash between our commit and River's),
	// cancelled, or was started MaxRuns times already.
	var reqJSON, tenant string
	var created int64
	err := s.db.SQL.QueryRowContext(dbctx, `UPDATE closet_jobs SET state = $1, runs = runs + 1, started_ns = $2, worker = $3
		WHERE id = $4 AND state <> $5 AND cancel_requested = 0 AND runs < $6 RETURNING request, tenant, created_ns`,
		StateRunning, time.Now().UnixNano(), s.workerID, id, StateDone, s.cfg.MaxRuns).Scan(&reqJSON, &tenant, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return s.unclaimed(dbctx, rj)
	}
	if err != nil {
		return fmt.Errorf("mark job %s running: %w", id, err)
	}
	var req Request
	var res Result
	if err := json.Unmarshal([]byte(reqJSON), &req); err != nil {
		res = Result{Verdict: "XX", Message: "stored request unreadable: " + err.Error()}
	} else {
		res = s.execute(ctx, id, req)
	}
	if ctx.Err() != nil && !s.cancelRequested(dbctx, id) {
		// Stopping (or River's job timeout): no verdict now.
		s.db.SQL.ExecContext(dbctx, `UPDATE closet_jobs SET state = $1 WHERE id = $2 AND state = $3`, StateQueued, id, StateRunning)
		return errAborted
	}
	if res.Verdict == "OK" && req.ExpectedStdout != nil && !sameOutput(res.Stdout, *req.ExpectedStdout) {
		res.Verdict, res.Message = "WA", "the output differs from the expected output"
	}
	return s.finish(dbctx, rj, tenant, created, res)
}

// unclaimed ends a job the claim did not take: done already (nothing to
// do), cancelled before it ran, or crash-looping (XX, not run again).
func (s *Server) unclaimed(ctx context.Context, rj *river.Job[jobArgs]) error {
	id := rj.Args.ID
	var state, tenant string
	var runs, created, cancel int64
	err := s.db.SQL.QueryRowContext(ctx, `SELECT state, tenant, runs, created_ns, cancel_requested FROM closet_jobs WHERE id = $1`, id).
		Scan(&state, &tenant, &runs, &created, &cancel)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // nothing to do: River completes it
	}
	if err != nil {
		return fmt.Errorf("read job %s: %w", id, err)
	}
	switch {
	case state == StateDone:
		return nil
	case cancel != 0:
		return s.finish(ctx, rj, tenant, created, Result{Verdict: "XX", Message: "cancelled"})
	default:
		// It was started MaxRuns times and never finished: each time the
		// server died under it. Running it again would likely kill the
		// server again.
		return s.finish(ctx, rj, tenant, created,
			Result{Verdict: "XX", Message: fmt.Sprintf("the server stopped %d times while this job ran; it is not run again", runs)})
	}
}

// finish writes the verdict and completes the River job in one
// transaction: either both happen or neither does. A cancel requested
// before this transaction makes the verdict XX "cancelled".
func (s *Server) finish(ctx context.Context, rj *river.Job[jobArgs], tenant string, created int64, res Result) error {
	id := rj.Args.ID
	tx, err := s.db.SQL.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("finish job %s: %w", id, err)
	}
	defer tx.Rollback()
	var cancel int64
	if err := tx.QueryRowContext(ctx, `UPDATE closet_jobs SET state = $1 WHERE id = $2 RETURNING cancel_requested`, StateDone, id).Scan(&cancel); err != nil {
		return fmt.Errorf("record the verdict of %s: %w", id, err)
	}
	if cancel != 0 {
		res.Verdict, res.Message = "XX", "cancelled"
	}
	raw, err := json.Marshal(res)
	if err != nil {
		return err
	}
	now := time.Now()
	if _, err := tx.ExecContext(ctx, `INSERT INTO closet_verdicts (job_id, tenant, verdict, result, finished_ns) VALUES ($1, $2, $3, $4, $5)`,
		id, tenant, res.Verdict, string(raw), now.UnixNano()); err != nil {
		return fmt.Errorf("record the verdict of %s: %w", id, err)
	}
	if _, err := river.JobCompleteTx[riverdriver.Driver[*sql.Tx]](ctx, tx, rj); err != nil {
		return fmt.Errorf("complete the queue's job for %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit the verdict of %s: %w", id, err)
	}
	s.metrics.done(tenant, res, now.Sub(time.Unix(0, created)))
	return nil
}

func (s *Server) cancelRequested(ctx context.Context, id string) bool {
	var c int64
	s.db.SQL.QueryRowContext(ctx, `SELECT cancel_requested FROM closet_jobs WHERE id = $1`, id).Scan(&c)
	return c != 0
}

// runningJobs are the jobs this server runs, with what stops each.
type runningJobs struct {
	mu sync.Mutex
	m  map[string]context.CancelFunc
}

func (r *runningJobs) add(id string, cancel context.CancelFunc) {
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]context.CancelFunc{}
	}
	r.m[id] = cancel
	r.mu.Unlock()
}

func (r *runningJobs) remove(id string) {
	r.mu.Lock()
	delete(r.m, id)
	r.mu.Unlock()
}

func (r *runningJobs) cancel(id string) {
	r.mu.Lock()
	if f := r.m[id]; f != nil {
		f()
	}
	r.mu.Unlock()
}

func (r *runningJobs) empty() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m) == 0
}

// watchCancels stops this server's running jobs whose cancel was requested
// (DELETE, on any machine): one query every Poll for all of them, none
// while nothing runs.
func (s *Server) watchCancels(ctx context.Context) {
	s.everyPoll(ctx, func() {
		if s.running.empty() {
			return
		}
		rows, err := s.db.SQL.QueryContext(ctx, `SELECT id FROM closet_jobs WHERE state = $1 AND worker = $2 AND cancel_requested <> 0`, StateRunning, s.workerID)
		if err != nil {
			if ctx.Err() == nil {
				s.cfg.Logf("look for cancelled jobs: %v", err)
			}
			return
		}
		var ids []string
		for rows.Next() {
			var id string
			if rows.Scan(&id) == nil {
				ids = append(ids, id)
			}
		}
		rows.Close()
		for _, id := range ids {
			s.running.cancel(id)
		}
	})
}

// execute unpacks the submission and runs the job; watchCancels stops it
// when a cancel is requested.
func (s *Server) execute(ctx context.Context, id string, req Request) Result {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.running.add(id, cancel)
	defer s.running.remove(id)
	spec := Spec{Roots: req.Roots, Command: req.Command, Stdin: []byte(req.Stdin), Limits: req.Limits, Keep: s.cfg.Keep}
	if spec.Limits.WallTime == 0 {
		spec.Limits.WallTime = s.cfg.WallTime.Seconds()
	}
	if len(req.Files) > 0 || req.Tar != "" {
		es, err := parseFiles(req.Files, req.Tar, s.cfg.Files)
		if err != nil {
			return Result{Verdict: "XX", Message: err.Error()}
		}
		dir, err := os.MkdirTemp(s.runs, "job-")
		if err != nil {
			return Result{Verdict: "XX", Message: "make the submission directory: " + err.Error()}
		}
		defer os.RemoveAll(dir)
		sub := filepath.Join(dir, "submission")
		if err = os.Chmod(dir, 0o755); err == nil {
			if err = os.Mkdir(sub, 0o755); err == nil {
				err = unpack(sub, es)
			}
		}
		if err != nil {
			return Result{Verdict: "XX", Message: err.Error()}
		}
		spec.Dir = sub
	}
	res, err := s.cfg.Runner.Run(ctx, spec)
	if err != nil {
		res.Verdict, res.Message = "XX", err.Error()
	}
	return res
}

// sameOutput compares outputs ignoring trailing whitespace on each line and
// trailing empty lines, as graders usually do.
func sameOutput(got, want string) bool {
	norm := func(s string) string {
		lines := strings.Split(s, "\n")
		for i, l := range lines {
			lines[i] = strings.TrimRight(l, " \t\r\f\v")
		}
		return strings.TrimRight(strings.Join(lines, "\n"), "\n")
	}
	return norm(got) == norm(want)
}
