package main

import (
	"github.com/spf13/cobra"

	"github.com/closet-sandbox/closet/internal/job"
)

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
