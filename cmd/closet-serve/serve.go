package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/idmap"
	"github.com/closet-sandbox/closet/internal/sandbox"
	"github.com/closet-sandbox/closet/internal/serve"
	"github.com/closet-sandbox/closet/internal/serve/servebin"
	"github.com/closet-sandbox/closet/internal/viewcache"
)

// serveFlags: flags -> serve.Config; the service itself is internal/serve.
type serveFlags struct {
	cfg     serve.Config
	runAs   string
	runner  string
	hostUID string
	verbose bool
}

func (f *serveFlags) addDBFlags(fl *pflag.FlagSet) {
	fl.StringVar(&f.cfg.DataDir, "data", "", "directory of the embedded SQLite queue (`DIR`)")
	fl.StringVar(&f.cfg.Database, "database", "", "put the queue on Postgres (`postgres://...`) so several machines share it")
}

func newServeCmd() *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve --data DIR [--listen ADDR]",
		Short: "Run the grading and CI service: an HTTP API over a job queue (see docs/api.md)",
		Long: `Run jobs submitted over HTTP (docs/api.md) in closet's sandbox, each with a
verdict that survives a crash. The queue is River on SQLite in --data DIR, or
on Postgres with --database, where several machines may run
'closet serve --worker-only --database ...'. Tokens: 'closet serve token'.
A guide from nothing to a graded burst: docs/grading.md.

The service is the closet-serve binary ('closet serve ARGS' runs
closet-serve ARGS, found beside closet or on PATH); it starts each job's
init from closet-stage beside it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run(cmd.Context()) },
	}
	f.addDBFlags(cmd.Flags())
	fl := cmd.Flags()
	fl.StringVar(&f.cfg.Listen, "listen", "127.0.0.1:8080", "serve the API, the page and /metrics on `ADDR`")
	fl.BoolVar(&f.cfg.WorkerOnly, "worker-only", false, "run jobs from the shared queue; serve no API (only /healthz and /metrics)")
	fl.IntVar(&f.cfg.Workers, "workers", 2, "jobs run at once on this machine")
	fl.Int64Var(&f.cfg.MaxQueue, "max-queue", 10000, "answer 429 past `N` jobs queued or running")
	fl.DurationVar(&f.cfg.WallTime, "wall-time", 10*time.Second, "a job's wall time when it gives none")
	fl.DurationVar(&f.cfg.MaxWall, "max-wall-time", 5*time.Minute, "the longest wall time a job may ask for")
	fl.StringVar(&f.runAs, "run-as", "nobody", "with --runner exec as root, the unprivileged `USER` jobs run as")
	fl.StringVar(&f.runner, "runner", "job", "how jobs run: job (in this process, through internal/job; each job a host uid of its own where the host allows, never root), or exec (a closet run process per job, as --run-as when root)")
	fl.DurationVar(&f.cfg.Heartbeat, "heartbeat", 2*time.Second, "how often this server says it is alive; a server silent for 5 heartbeats loses its running jobs to the others")
	fl.StringVar(&f.hostUID, "host-uid", "auto", "who each job is on the host (in-process runner): auto (a subordinate uid of its own where /etc/subuid allows it), caller, or subordinate")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log what the server does on stderr")
	cmd.AddCommand(newServeTokenCmd())
	return cmd
}

func (f *serveFlags) run(ctx context.Context) error {
	if f.runner != "exec" && f.runner != "job" {
		return withCode(exitcode.BadInput, fmt.Errorf("--runner %q: want job or exec", f.runner))
	}
	if f.runner == "exec" {
		r, err := f.execRunner()
		if err != nil {
			return withCode(exitcode.BadInput, err)
		}
		f.cfg.Runner = r
	} else {
		// Jobs run in this process through internal/job, each with a host
		// uid of its own where /etc/subuid allows it.
		jr := &serve.JobRunner{User: currentUser(), UID: os.Getuid(), GID: os.Getgid(), HostUID: f.hostUID,
			SlotDir:     idmap.DefaultStateDir(os.Getenv("XDG_RUNTIME_DIR"), os.Getuid()),
			StageBinary: stageBinary(),
			// The closures of the last 256 root sets: every job still
			// looks its roots up in the Nix database.
			Closures: closure.NewCache(256)}
		// Warm starts: built store views kept by closure hash (jobs that
		// run as the server's own uid; the rest build their view).
		// The holder runs from this binary: closet-stage is the init alone.
		views, err := viewcache.New(viewcache.Options{})
		if err != nil {
			fmt.Fprintf(os.Stderr, "closet serve: no cached views, every job builds its own: %v\n", err)
		} else {
			defer views.Close()
			jr.Views = views
		}
		f.cfg.Runner = jr
	}
	if f.verbose {
		f.cfg.Logf = func(format string, a ...any) { fmt.Fprintf(os.Stderr, "closet serve: "+format+"\n", a...) }
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := serve.New(ctx, f.cfg)
	if err != nil {
		return withCode(exitcode.BadInput, err)
	}
	defer s.Close()
	var ln net.Listener
	if f.cfg.Listen != "" {
		if ln, err = net.Listen("tcp", f.cfg.Listen); err != nil {
			return withCode(exitcode.BadInput, fmt.Errorf("--listen %s: %w", f.cfg.Listen, err))
		}
		fmt.Fprintf(os.Stderr, "closet serve: listening on http://%s\n", ln.Addr())
	}
	return s.Serve(ctx, ln)
}

// execRunner runs each job as a closet run process; as root, as the
// unprivileged --run-as user (jobs never run as root, and closet holds no
// GC roots for root).
func (f *serveFlags) execRunner() (*serve.ExecRunner, error) {
	// closet run, from the same build: beside closet-serve, or on PATH.
	bin, err := servebin.Find(servebin.Closet)
	if err != nil {
		return nil, fmt.Errorf("--runner exec: %w", err)
	}
	r := &serve.ExecRunner{Binary: bin, User: currentUser()}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(f.runAs)
		if err != nil {
			return nil, fmt.Errorf("--run-as %s: %w (jobs never run as root)", f.runAs, err)
		}
		r.UID, _ = strconv.Atoi(u.Uid)
		r.GID, _ = strconv.Atoi(u.Gid)
		r.User = u.Username
	}
	return r, nil
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}

// stageBinary is closet-stage beside this binary, when it is there and
// safe, else "": this binary re-executes itself as the stages.
func stageBinary() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return sandbox.StageBinaryBeside(exe)
}
