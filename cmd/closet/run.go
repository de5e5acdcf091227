package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/idmap"
	"github.com/closet-sandbox/closet/internal/job"
	"github.com/closet-sandbox/closet/internal/report"
	"github.com/closet-sandbox/closet/internal/sandbox"
)

func init() { register("run", newRunCmd) }

func newRunCmd() *cobra.Command {
	o := &runOpts{}
	cmd := &cobra.Command{
		Use:   "run [flags] [ROOT...] -- CMD [ARGS...]",
		Short: "Run a command with /nix/store narrowed to the closure of ROOTs",
		Long:  runLong,
		Example: `  closet run ./result -- hello --greeting hi
  closet run -- python3 -c 'import os; print(os.listdir("/nix/store"))'
  closet run --cwd ro --expose ~/data=/data $(nix-build -A jq) -- jq . /data/x.json
  closet run --dry-run ./result -- hello
  closet run .#tests -- run-tests
  closet run -f default.nix -A hello -- hello`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if dash < 0 || dash == len(args) {
				return withCode(exitcode.Sandbox, errors.New("run needs a command after --: closet run [ROOT...] -- CMD [ARGS...]"))
			}
			o.req.Roots, o.req.Command = args[:dash], args[dash:]
			return o.run(cmd.Context())
		},
	}
	o.addFlags(cmd)
	cmd.Flags().StringVar(&o.tty, "tty", "auto", "give the job a pty closet relays: auto (when stdin is a terminal), always, never")
	return cmd
}

// run is flags -> Request -> Job -> exit code.
func (o *runOpts) run(ctx context.Context) error {
	roomyGC()
	// Caught until closet exits: no signal.Stop on the way out (its
	// handshake with the signal goroutine cost a third of a millisecond
	// after the job had ended). A signal caught after the job ended is
	// passed to nothing (Job.Signal: ErrEnded) and closet exits with the
	// job's status as planned.
	sigs := catchSignals()
	req, err := o.request()
	if err != nil {
		return o.limits.refused(err)
	}
	// The sandbox's init starts while the closure is read; --dry-run
	// starts nothing.
	req.EarlyInit = !o.dryRun
	j, err := job.Prepare(ctx, req)
	if err != nil {
		return o.limits.refused(err)
	}
	defer j.Close()
	for _, w := range j.Warnings() {
		fmt.Fprintf(os.Stderr, "closet: warning: %s\n", w)
	}
	if o.dryRun {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(j.Spec())
	}
	relay := o.relay
	if relay != nil {
		defer relay.finish()
	}
	sigs.forwardTo(j)
	j.Start(ctx) // its failure is the report's XX
	return o.limits.conclude(j.Wait())
}

// request is the Request for the flags: the caller's process state enters
// here, and only here.
func (o *runOpts) request() (job.Request, error) {
	req := o.req
	req.TTY = o.tty
	req.Env = os.Environ()
	req.UserName = callerName()
	req.CallerUID, req.CallerGID = os.Getuid(), os.Getgid()
	req.SlotDir = idmap.DefaultStateDir(os.Getenv("XDG_RUNTIME_DIR"), req.CallerUID)
	req.Stdin, req.Stdout, req.Stderr = os.Stdin, os.Stdout, os.Stderr
	req.StageBinary = stageBinary()
	if v := os.Getenv("CLOSET_DB_READER"); v != "" {
		req.DBReader = v // sqlite: skip the direct b-tree reader
	}
	if req.CwdMode != "none" {
		// The kernel's name for the directory, not $PWD's: a bind source
		// is opened without following symlinks, and $PWD may hold some.
		wd, err := unix.Getwd()
		if err != nil {
			return req, fmt.Errorf("current directory: %w (use --cwd none)", err)
		}
		req.Cwd = wd
	} else {
		req.Cwd, _ = unix.Getwd()
	}
	if o.verbose {
		req.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "closet: "+format+"\n", args...) }
	}
	if o.tty != "never" {
		o.relay = &ptyRelay{}
		req.Console = o.relay.attach
	}
	err := o.limits.apply(&req)
	return req, err
}

// stageBinary is closet-stage beside this binary, when it is there and
// safe (a smaller binary starts faster as the sandbox's init and exec
// stages), else "": this binary re-executes itself.
func stageBinary() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return sandbox.StageBinaryBeside(exe)
}

// callerName is the calling user's name: the job's $USER and the Nix GC
// root directory are named after it.
func callerName() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return os.Getenv("USER")
}

// forwarded are the signals a terminal or a supervisor sends closet that
// it passes on to the job.
var forwarded = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

// signals catches the forwarded signals from the start of a run and
// passes them on to its job once there is one.
type signals struct {
	c   chan os.Signal
	job chan *job.Job
}

// catchSignals starts catching at once, on a goroutine of its own: the
// first signal.Notify starts the runtime's signal thread, about 0.4 ms
// that now overlap with preparing the job instead of coming after it.
// Until forwardTo, a caught signal does what it did uncaught: closet dies
// of it (there is no job to pass it to, and nothing of one to clean up).
// The catching lasts as long as the process.
func catchSignals() *signals {
	s := &signals{c: make(chan os.Signal, 8), job: make(chan *job.Job, 1)}
	go signal.Notify(s.c, forwarded...)
	go func() {
		var j *job.Job
		for sig := range s.c {
			if j == nil {
				select {
				case j = <-s.job:
				default:
					signal.Reset(sig)
					unix.Kill(os.Getpid(), sig.(unix.Signal))
					continue
				}
			}
			j.Signal(sig)
		}
	}()
	return s
}

// forwardTo passes every signal caught from now on, and any caught since
// the job was made, to j.
func (s *signals) forwardTo(j *job.Job) { s.job <- j }

// exitFor is closet's exit status for a report, after saying on stderr
// what the status alone does not.
func exitFor(r *report.Report) error {
	if r.Status == report.XX {
		fmt.Fprintf(os.Stderr, "closet: %s\n", r.Message)
	} else if r.Status != report.OK && r.Status != report.RE && r.Status != report.SG {
		fmt.Fprintf(os.Stderr, "closet: %s: %s\n", r.Status, r.Message)
	}
	for name, lim := range r.Limits {
		if strings.HasPrefix(lim.Mechanism, "rlimit-as") {
			fmt.Fprintf(os.Stderr, "closet: --%s was enforced as RLIMIT_AS (each process's address space), not as the job's memory: no cgroup could hold it here\n", name)
		}
	}
	if r.ClosetExit == 0 {
		return nil
	}
	return &exitError{code: r.ClosetExit, quiet: true}
}
