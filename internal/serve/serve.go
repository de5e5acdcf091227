// Package serve owns `closet serve`: a grading and CI service on a real queue.
// Submissions come in over an HTTP API (/v1, bearer tokens, one tenant per
// token), are queued in River (on an embedded SQLite file, or on Postgres
// shared by several machines), run one by one in closet's sandbox through a
// Runner, and end with exactly one verdict each, written in the transaction
// that completes the River job. It also serves the operator's web page and
// Prometheus metrics. Nothing here reads the process environment: the
// command line fills a Config.
package serve

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"golang.org/x/sys/unix"
	"modernc.org/sqlite"
)

// Config is everything the server needs; cmd/closet fills it from flags.
type Config struct {
	Listen   string // ADDR for the API, the page and /metrics ("" with WorkerOnly: none)
	DataDir  string // where the SQLite queue lives (and the lock)
	Database string // postgres://... puts the queue on Postgres; "" = SQLite in DataDir
	// WorkerOnly runs jobs from the shared queue and serves no API (only
	// /healthz and /metrics when Listen is given).
	WorkerOnly bool
	Workers    int   // jobs run at once (default 2)
	MaxQueue   int64 // queued+running past which submissions get 429 (default 10000)
	MaxBody    int64 // largest request body (default 16 MiB)
	Files      FileLimits
	Keep       int           // bytes of stdout and of stderr kept per job (default 64 KiB)
	WallTime   time.Duration // default wall time of a job (default 10s)
	MaxWall    time.Duration // largest wall time a job may ask for (default 5m)
	MaxRuns    int           // runs of one job before a crash-looping job gets XX (default 3)
	Poll       time.Duration // how often events and cancels are looked for (default 200ms)
	// Heartbeat: how often a server says it is alive; after 5 silent
	// heartbeats its running jobs go back to the queue (default 2s).
	Heartbeat time.Duration
	Runner    Runner
	Logf      func(format string, args ...any)
}

func (c *Config) defaults() {
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 10000
	}
	if c.MaxBody <= 0 {
		c.MaxBody = 16 << 20
	}
	if c.Files.MaxBytes <= 0 {
		c.Files.MaxBytes = 8 << 20
	}
	if c.Files.MaxEntries <= 0 {
		c.Files.MaxEntries = 1000
	}
	if c.Keep <= 0 {
		c.Keep = 64 << 10
	}
	if c.WallTime <= 0 {
		c.WallTime = 10 * time.Second
	}
	if c.MaxWall <= 0 {
		c.MaxWall = 5 * time.Minute
	}
	if c.MaxRuns <= 0 {
		c.MaxRuns = 3
	}
	if c.Poll <= 0 {
		c.Poll = 200 * time.Millisecond
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 2 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// DB is the database the queue and the server's tables live in.
type DB struct {
	SQL      *sql.DB
	Driver   riverdriver.Driver[*sql.Tx]
	Postgres bool
}

// OpenDB opens (and migrates: River's tables and the server's) the database
// that cfg names: Postgres when Database is set, else DataDir/closet.db.
func OpenDB(ctx context.Context, cfg Config) (*DB, error) {
	d := &DB{}
	var err error
	switch {
	case strings.HasPrefix(cfg.Database, "postgres://") || strings.HasPrefix(cfg.Database, "postgresql://"):
		if d.SQL, err = sql.Open("pgx", cfg.Database); err != nil {
			return nil, fmt.Errorf("open %s: %w", redact(cfg.Database), err)
		}
		// Keep the connections open: database/sql keeps 2 idle by default
		// and closes the rest, and every new one is a fork of a Postgres
		// backend that parses and plans its statements afresh. In a burst
		// that churn cost more CPU than the queries themselves.
		d.SQL.SetMaxOpenConns(20)
		d.SQL.SetMaxIdleConns(20)
		d.SQL.SetConnMaxIdleTime(5 * time.Minute)
		// riverdatabasesql, not riverpgxv5: both drivers then work on
		// *sql.Tx, so one code path writes the verdict and completes the
		// River job in the same transaction on either database.
		d.Driver, d.Postgres = riverdatabasesql.New(d.SQL), true
	case cfg.Database != "":
		return nil, fmt.Errorf("--database %q: want postgres://USER@HOST/DB (or leave it out for SQLite in --data)", redact(cfg.Database))
	default:
		if cfg.DataDir == "" {
			return nil, errors.New("no --data DIR (or --database postgres://...) given: where should the queue live?")
		}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("make the data directory: %w", err)
		}
		p := filepath.Join(cfg.DataDir, "closet.db")
		// WAL with synchronous=FULL: a commit (an accepted job, a verdict)
		// is on disk before the API answers; busy_timeout rides out the
		// token commands writing while the server runs.
		dsn := "file:" + p + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"
		// Each statement's text is prepared once per connection, not per
		// query (stmtCacheConnector).
		d.SQL = sql.OpenDB(stmtCacheConnector{dsn: dsn, d: &sqlite.Driver{}})
		// SQLite allows one writer; River's driver wants one connection.
		d.SQL.SetMaxOpenConns(1)
		d.Driver = riversqlite.New(d.SQL)
	}
	if err := d.SQL.PingContext(ctx); err != nil {
		d.SQL.Close()
		return nil, fmt.Errorf("reach the database: %w", err)
	}
	mig, err := rivermigrate.New(d.Driver, &rivermigrate.Config{Logger: quietLogger()})
	if err != nil {
		d.SQL.Close()
		return nil, fmt.Errorf("river migrations: %w", err)
	}
	if _, err := mig.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		d.SQL.Close()
		return nil, fmt.Errorf("river migrations: %w", err)
	}
	if err := migrateOwn(ctx, d.SQL); err != nil {
		d.SQL.Close()
		return nil, err
	}
	return d, nil
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// redact drops a password from a database URL for messages.
func redact(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if at := strings.LastIndex(u, "@"); at > i {
			if c := strings.Index(u[i+3:at], ":"); c >= 0 {
				return u[:i+3+c] + ":***" + u[at:]
			}
		}
	}
	return u
}

// Server is a running closet serve.
type Server struct {
	cfg      Config
	db       *DB
	client   *river.Client[*sql.Tx]
	metrics  *metrics
	lock     *os.File
	queueLen queueLen
	running  runningJobs
	states   stateWatch
	// workerID names this server in closet_workers and on the jobs it runs.
	workerID string
	// runs holds the submissions being run: mode 0711, so that a job's
	// host uid (nobody, a subordinate uid of its own) can reach its own
	// randomly named directory while no other user can list them.
	runs string
}

// New opens the database, recovers what a crash left and prepares the
// queue; Serve starts it.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.defaults()
	if cfg.Runner == nil {
		return nil, errors.New("serve: no Runner configured")
	}
	s := &Server{cfg: cfg, workerID: newJobID()[1:]}
	if cfg.Database == "" && cfg.DataDir != "" {
		// One server per data directory: the lock is what lets a restart
		// treat every job it finds running as orphaned.
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("make the data directory: %w", err)
		}
		lp := filepath.Join(cfg.DataDir, "serve.lock")
		f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", lp, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			return nil, fmt.Errorf("another closet serve holds %s (%w): stop it first, or give another --data", lp, err)
		}
		s.lock = f
	}
	var err error
	if s.runs, err = os.MkdirTemp("", "closet-serve-runs-"); err == nil {
		err = os.Chmod(s.runs, 0o711)
	}
	if err != nil {
		s.closeLock()
		return nil, fmt.Errorf("make the directory for submissions: %w", err)
	}
	db, err := OpenDB(ctx, cfg)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.db = db
	if !db.Postgres {
		if err := s.recoverOrphans(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &worker{s: s})
	jobTimeout := cfg.MaxWall + time.Minute
	s.client, err = river.NewClient(db.Driver, &river.Config{
		// River records the client that fetched a job in attempted_by:
		// named after this server, a silent server's fetched jobs can be
		// found (reap).
		ID:                riverClientID(s.workerID),
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.Workers}},
		Workers:           workers,
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
		JobTimeout:        jobTimeout,
		// On Postgres other machines may be running jobs; a job is only
		// taken back from a machine that has been silent past any job's
		// longest life.
		RescueStuckJobsAfter: jobTimeout + time.Minute,
		Logger:               quietLogger(),
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("start the queue: %w", err)
	}
	s.metrics = newMetrics(s)
	return s, nil
}

// recoverOrphans puts back the jobs a killed server left running. Only the
// holder of the data directory's lock calls it, so nothing else can be
// running them: every River job in state running is an orphan, including one
// River had fetched but the server had not yet marked. They run again (see
// docs/grading.md, "Crash safety").
func (s *Server) recoverOrphans(ctx context.Context) error {
	res, err := s.db.SQL.ExecContext(ctx, `UPDATE river_job SET state = 'available' WHERE state = 'running'`)
	if err != nil {
		return fmt.Errorf("recover the jobs a stopped server left running: %w", err)
	}
	if _, err := s.db.SQL.ExecContext(ctx, `UPDATE closet_jobs SET state = $1 WHERE state = $2`, StateQueued, StateRunning); err != nil {
		return fmt.Errorf("recover the jobs a stopped server left running: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		s.cfg.Logf("put back %d job(s) left running by a stopped server", n)
	}
	return nil
}

// heartbeat says this server is alive, then puts back the running jobs of
// servers that have been silent for five heartbeats (on Postgres, where
// several machines share the queue). A server that was only slow and comes
// back may still finish such a job: its verdict then loses to the rerun's
// on the verdict table's primary key, so there is still one.
func (s *Server) heartbeat(ctx context.Context) {
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	for {
		now := time.Now()
		if _, err := s.db.SQL.ExecContext(ctx, `INSERT INTO closet_workers (id, seen_ns) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET seen_ns = excluded.seen_ns`, s.workerID, now.UnixNano()); err != nil && ctx.Err() == nil {
			s.cfg.Logf("heartbeat: %v", err)
		}
		if err := s.reap(ctx, now.Add(-5*s.cfg.Heartbeat)); err != nil && ctx.Err() == nil {
			s.cfg.Logf("put back a silent server's jobs: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// riverClientID names this server's River client after its worker id.
func riverClientID(worker string) string { return "closet-" + worker }

func (s *Server) reap(ctx context.Context, cutoff time.Time) error {
	if s.db.Postgres {
		// A job River had fetched for a server that died before marking
		// it running: still queued for closet, running for River, fetched
		// long ago by a client whose server is silent.
		res, err := s.db.SQL.ExecContext(ctx, `UPDATE river_job SET state = 'available'
			WHERE state = 'running' AND attempted_at < $1
			AND attempted_by[array_length(attempted_by, 1)] <> $2
			AND NOT EXISTS (SELECT 1 FROM closet_workers w
				WHERE 'closet-' || w.id = river_job.attempted_by[array_length(river_job.attempted_by, 1)] AND w.seen_ns >= $3)
			AND EXISTS (SELECT 1 FROM closet_jobs j WHERE j.river_id = river_job.id AND j.state = $4)`,
			cutoff, riverClientID(s.workerID), cutoff.UnixNano(), StateQueued)
		if err != nil {
			return fmt.Errorf("put back a silent server's fetched jobs: %w", err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			s.cfg.Logf("put back %d job(s) fetched by a server that went silent before starting them", n)
		}
	}
	rows, err := s.db.SQL.QueryContext(ctx, `SELECT j.id, j.river_id, j.worker FROM closet_jobs j
		LEFT JOIN closet_workers w ON w.id = j.worker
		WHERE j.state = $1 AND j.worker <> $2 AND (w.seen_ns IS NULL OR w.seen_ns < $3)`,
		StateRunning, s.workerID, cutoff.UnixNano())
	if err != nil {
		return err
	}
	type orphan struct {
		id     string
		river  int64
		worker string
	}
	var orphans []orphan
	for rows.Next() {
		var o orphan
		if err := rows.Scan(&o.id, &o.river, &o.worker); err != nil {
			rows.Close()
			return err
		}
		orphans = append(orphans, o)
	}
	rows.Close()
	for _, o := range orphans {
		tx, err := s.db.SQL.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE closet_jobs SET state = $1 WHERE id = $2 AND state = $3 AND worker = $4`, StateQueued, o.id, StateRunning, o.worker)
		if err == nil {
			if n, _ := res.RowsAffected(); n == 1 {
				_, err = tx.ExecContext(ctx, `UPDATE river_job SET state = 'available' WHERE id = $1 AND state = 'running'`, o.river)
			}
		}
		if err == nil {
			err = tx.Commit()
		}
		tx.Rollback()
		if err != nil {
			return fmt.Errorf("put back job %s: %w", o.id, err)
		}
		s.cfg.Logf("put back job %s: its server %s went silent", o.id, o.worker)
	}
	return nil
}

func (s *Server) closeLock() {
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// Close releases the database and the lock.
func (s *Server) Close() error {
	var err error
	if s.db != nil {
		err = s.db.SQL.Close()
	}
	s.closeLock()
	if s.runs != "" {
		os.RemoveAll(s.runs)
	}
	return err
}

// Handler is the HTTP side: API, page, /healthz, /metrics.
func (s *Server) Handler() http.Handler { return s.routes() }

// Serve runs the queue and, with cfg.Listen, the HTTP server until ctx ends;
// then it stops taking work, gives running jobs a grace period and returns.
// A job it had to cancel runs again at the next start.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := s.client.Start(ctx); err != nil {
		return fmt.Errorf("start the queue: %w", err)
	}
	hbCtx, hbStop := context.WithCancel(ctx)
	defer hbStop()
	go s.heartbeat(hbCtx)
	go s.watchCancels(hbCtx)
	go s.watchStates(hbCtx)
	var hs *http.Server
	errc := make(chan error, 1)
	if ln != nil {
		hs = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- hs.Serve(ln) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if hs != nil {
		hs.Shutdown(stopCtx)
	}
	if serr := s.client.Stop(stopCtx); serr != nil {
		s.client.StopAndCancel(context.Background())
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
