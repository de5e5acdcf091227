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
)

func init() { register(newRunCmd) }

// runOpts are the flags run and shell share; limitOpts (limits.go) the
// limit and report flags.
type runOpts struct {
	req     job.Request // filled straight from flags where it can be
	tty     string
	dryRun  bool
	verbose bool
	limits  limitOpts
	relay   *ptyRelay

	drv, develop string // shell only
}

func (o *runOpts) addFlags(cmd *cobra.Command) {
	r, f := &o.req, cmd.Flags()
	f.StringVar(&r.CwdMode, "cwd", "rw", "share the current directory at the same path: `rw`, ro, or none (then the job starts in $HOME)")
	f.StringArrayVar(&r.Expose, "expose", nil, "bind host path `SRC[=DST]` read-only (repeatable; never the store, /nix/var or the daemon's socket)")
	f.StringArrayVar(&r.Share, "share", nil, "bind host path `SRC[=DST]` read-write (repeatable)")
	f.BoolVar(&r.Network, "network", false, "share the host's network (default: an own network namespace with only lo)")
	f.StringArrayVar(&r.SetEnv, "env", nil, "set `NAME=VALUE` in the job's environment (repeatable)")
	f.StringArrayVar(&r.Preserve, "preserve", nil, "keep the caller's variables whose names match `REGEX` (anchored; repeatable)")
	f.StringVar(&r.Hostname, "hostname", "closet", "the sandbox's host name (letters, digits, '-', '.', '_')")
	f.IntVar(&r.UID, "uid", 1000, "the job's uid inside the sandbox")
	f.IntVar(&r.GID, "gid", 100, "the job's gid inside the sandbox")
	f.StringVar(&r.Store, "store", "", "use the chroot store below `ROOT` (ROOT/nix/store, ROOT/nix/var/nix/db)")
	f.StringVar(&r.Seccomp, "seccomp", "default", "syscall filter: default, grading (default without inotify; chosen by itself for --cwd none or ro with limits), or off (shows in --dry-run and reports)")
	f.StringVar(&r.Landlock, "landlock", "best-effort", "Landlock filesystem fence: best-effort, or off")
	f.BoolVar(&r.NoGCRoot, "no-gc-root", false, "do not register the roots as Nix GC roots while the job runs")
	f.StringVar(&r.HostUID, "host-uid", "auto", "who the job is on the host: auto (a subordinate uid and gid of its own, no supplementary groups, when every bind is read-only and /etc/subuid allows it), caller, or subordinate (refuse otherwise); root's jobs never run as host uid 0")
	ins := &r.Installables
	f.StringVarP(&ins.File, "file", "f", "", "realise attributes of the Nix expression in `FILE` (with -A; nix-build's -f) and add them to the roots")
	f.StringArrayVarP(&ins.Attrs, "attr", "A", nil, "the `ATTR` of -f FILE or --expr to realise (repeatable)")
	f.StringVar(&ins.Expr, "expr", "", "realise the Nix expression `EXPR` (with -A to pick attributes) and add it to the roots")
	f.StringVar(&ins.Nix, "nix-bin", "", "the nix `PATH` that realises installables (default: nix, nix-build, nix-store on your PATH)")
	f.BoolVar(&r.Nix, "nix", false, "give the job a nix-daemon socket: closet's filtering proxy, which answers only for paths in the job's view and adds what the job builds or adds to it (refused where the daemon's builds are not sandboxed; the nix client comes from the roots)")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the sandbox spec as JSON and run nothing")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "say on stderr what closet does and how long each phase takes")
	o.limits.addFlags(cmd)
}

func newRunCmd() *cobra.Command {
	o := &runOpts{}
	cmd := &cobra.Command{
		Use:   "run [flags] [ROOT...] -- CMD [ARGS...]",
		Short: "Run a command with /nix/store narrowed to the closure of ROOTs",
		Long: `Run CMD in a rootless sandbox whose /nix/store holds exactly the closure of
the ROOTs: nothing else of the store, no /nix/var, no nix-daemon socket.

  closet run ROOT... -- CMD [ARGS...]   CMD is looked up in the ROOTs' bin
                                        directories (or give a path)
  closet run -- CMD [ARGS...]           CMD is looked up on your PATH; its real
                                        file must be in the store; its own
                                        closure is the view

ROOTs are what 'closet closure' takes: store paths, links into the store
(./result, profiles), or command names; a .drv stands for its inputs. They may
also be what Nix users name, realised with your own nix (so the daemon's rules
for you apply) before the sandbox starts: flake installables (anything with a
'#', such as .#app or path:/dir#pkg), DRV^OUT, -f FILE -A ATTR, --expr EXPR.

Inside: a read-only tmpfs root; the closure at /nix/store, read-only; a fresh
/proc; /dev with null, zero, full, random, urandom, tty, a new pts instance and
shm; tmpfs /tmp and $HOME; /etc with passwd, group, hosts and nsswitch.conf
(resolv.conf only with --network); the current directory at the same path.
The job gets a clean environment: PATH from the roots' bin directories, HOME,
USER, TERM, LANG, plus --env and --preserve. It runs in a new session, in its
own user, mount, pid, ipc, uts, net and cgroup namespaces, with no
capabilities, no_new_privs, a seccomp allowlist and a Landlock fence. It never
holds your terminal: with --tty auto it gets a pty of its own when stdin is a
terminal, and any other terminal among its stdin, stdout and stderr is relayed
through a pipe.

Exit status: the command's own, or 128+N when signal N ended it. closet's
own failures never look like the command's: 125 closet failed (bad flags or
roots, an unreadable store, a sandbox that could not be set up: nothing ran),
126 the command could not be executed, 127 the command was not found.`,
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
	req, err := o.request()
	if err != nil {
		return o.limits.refused(err)
	}
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
	stop := forwardSignals(j)
	defer stop()
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

// callerName is the calling user's name: the job's $USER and the Nix GC
// root directory are named after it.
func callerName() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return os.Getenv("USER")
}

// forwardSignals passes the signals a terminal or a supervisor sends
// closet on to the job, until stop is called.
func forwardSignals(j *job.Job) (stop func()) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
	go func() {
		for s := range sigs {
			j.Signal(s)
		}
	}()
	return func() { signal.Stop(sigs); close(sigs) }
}

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
