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
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/serve"
)

func init() { register(newServeCmd) }

// serveFlags: flags -> serve.Config; the service itself is internal/serve.
type serveFlags struct {
	cfg     serve.Config
	runAs   string
	runner  string
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
A guide from nothing to a graded burst: docs/grading.md.`,
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
	fl.StringVar(&f.runAs, "run-as", "nobody", "when run as root, the unprivileged `USER` jobs run as")
	fl.StringVar(&f.runner, "runner", "auto", "how jobs run: auto (in this process; a closet run process per job as --run-as when root) or exec (always a process)")
	fl.DurationVar(&f.cfg.Heartbeat, "heartbeat", 2*time.Second, "how often this server says it is alive; a server silent for 5 heartbeats loses its running jobs to the others")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log what the server does on stderr")
	cmd.AddCommand(newServeTokenCmd())
	return cmd
}

func (f *serveFlags) run(ctx context.Context) error {
	if os.Geteuid() == 0 || f.runner == "exec" {
		r, err := f.execRunner()
		if err != nil {
			return withCode(exitcode.BadInput, err)
		}
		f.cfg.Runner = r
	} else {
		// Jobs run in this process through internal/job, as this user.
		f.cfg.Runner = &serve.JobRunner{User: currentUser()}
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
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find closet's own binary: %w", err)
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
		f.cfg.RunUID, f.cfg.RunGID = r.UID, r.GID
	}
	return r, nil
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}

func newServeTokenCmd() *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{Use: "token", Short: "Add, list and revoke tenants' bearer tokens"}
	f.addDBFlags(cmd.PersistentFlags())
	open := func(cmd *cobra.Command) (*serve.DB, error) {
		db, err := serve.OpenDB(cmd.Context(), f.cfg)
		if err != nil {
			return nil, withCode(exitcode.BadInput, err)
		}
		return db, nil
	}
	cmd.AddCommand(&cobra.Command{
		Use: "add TENANT", Short: "Make a token for TENANT; the token is the last line printed (only its hash is kept)",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.SQL.Close()
			tok, err := serve.AddToken(cmd.Context(), db.SQL, args[0])
			if err != nil {
				return withCode(exitcode.BadInput, err)
			}
			fmt.Printf("token for tenant %s (shown once; keep it secret):\n%s\n", args[0], tok)
			return nil
		},
	}, &cobra.Command{
		Use: "list", Short: "List tokens: id, tenant, created", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.SQL.Close()
			ts, err := serve.ListTokens(cmd.Context(), db.SQL)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTENANT\tCREATED")
			for _, t := range ts {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", t.ID, t.Tenant, t.Created.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}, &cobra.Command{
		Use: "revoke ID", Short: "Revoke the token with ID (from token list)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.SQL.Close()
			if err := serve.RevokeToken(cmd.Context(), db.SQL, args[0]); err != nil {
				return withCode(exitcode.BadInput, err)
			}
			return nil
		},
	})
	return cmd
}
