package job

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/idmap"
	"github.com/closet-sandbox/closet/internal/nixproxy"
	"github.com/closet-sandbox/closet/internal/resolve"
	"github.com/closet-sandbox/closet/internal/seccomp"
	"github.com/closet-sandbox/closet/internal/spec"
	"github.com/closet-sandbox/closet/internal/viewcache"
)

// Request is everything a run needs, the calling process's state included:
// nothing under internal/ reads the environment, the working directory, the
// terminal or the user from the process, so that one process can run many
// jobs for many callers at once.
type Request struct {
	// Roots are what the user named: store paths, paths inside them, links
	// into the store (result links, profiles), or command names.
	Roots []string
	// Command is the target's argv. Empty means an interactive shell: Shell,
	// or bash or sh from the roots' bin directories.
	Command []string
	Shell   string
	// Installables are realised with the caller's own nix (so the daemon's
	// trust rules apply to the caller) and join the roots: -f FILE -A
	// ATTR, --expr; flake references and drv^out among Roots are found by
	// resolve.IsInstallable and realised the same way.
	Installables resolve.Installables
	// Develop gives the job a build environment, as nix develop would:
	// the derivation's input closure and its environment variables.
	Develop *resolve.Installables

	// The caller.
	Env      []string // its environment: PATH for command names, LANG, TERM, Preserve
	Cwd      string   // its working directory, the kernel's name for it
	UserName string   // its user name: the GC-root directory, the job's $USER
	// CallerUID and CallerGID are its ids, SlotDir where per-job host ids
	// are locked (idmap.DefaultStateDir).
	CallerUID, CallerGID int
	SlotDir              string

	// The sandbox.
	CwdMode  string   // "rw" (default), "ro" or "none"
	Expose   []string // SRC[=DST], read-only binds
	Share    []string // SRC[=DST], read-write binds
	SetEnv   []string // NAME=VALUE for the job
	Preserve []string // regexes of the caller's variables the job keeps
	Hostname string   // default "closet"
	UID, GID int      // the job's ids inside the sandbox (0 is root there; the CLI's default is 1000:100)
	Network  bool     // share the host's network
	Store    string   // a chroot store's root ("" = the host's store)
	Seccomp  string   // "default", "grading" (default without inotify; chosen by itself for a grading configuration) or "off"
	Landlock string   // "best-effort" or "off"
	NoGCRoot bool     // do not register the closure as GC roots
	// HostUID chooses who the job is on the host: "auto" (a subordinate
	// uid of its own when every bind is read-only and the host allows it,
	// else the caller), "caller", or "subordinate" (refuse otherwise).
	// Root's jobs always get ids of their own, never host uid 0.
	HostUID string
	// Nix gives the job a nix-daemon socket (closet run --nix): closet's
	// filtering proxy of NixDaemonSocket ("" = the standard path), which
	// answers only for paths in the job's view and adds what the job
	// builds to it. Refused where the daemon's builds are not sandboxed.
	Nix             bool
	NixDaemonSocket string
	DBReader        string // "" (the direct reader, then SQLite) or "sqlite"

	// TTY chooses the job's terminal: "auto" (a pty when Stdin is a
	// terminal and nothing needs the output through pipes), "always" or
	// "never". Whatever is chosen, no fd of the job is ever a terminal of
	// the caller: a terminal among Stdin, Stdout and Stderr that does not
	// get the pty is relayed through a pipe.
	TTY string
	// Interactive is closet shell: a pty is wanted even under "auto" when
	// Stdin is a terminal (as for run).
	Interactive bool
	// Stdin, Stdout and Stderr become the job's fds 0-2 (nil: /dev/null
	// for Stdin, discarded output).
	Stdin, Stdout, Stderr *os.File
	// Console receives the job's pty master when the job has a pty; the
	// caller relays it and closes it. Required when TTY is "always".
	Console func(master *os.File)

	Limits Limits
	// Capture carries stdout and stderr through closet's pipes, counted,
	// even without an output limit (reports need the counts).
	Capture bool

	// EarlyInit launches the sandbox's init (its clone into fresh
	// namespaces and the job's cgroups, its ids mapped) during Prepare,
	// while the roots are resolved and their closure read, so that Start
	// finds it waiting for its spec: for callers that Start what they
	// Prepare (closet run), not for --dry-run. Nothing of the job runs
	// before Start sends the spec; a Prepare that fails, or a Close
	// before Start, kills and reaps the init and removes its cgroups. It
	// is ignored where a cached view may serve the job (Views, a job that
	// runs as the caller and does not grow: its closure decides) and
	// where nix must build roots first.
	EarlyInit bool

	// StageBinary is the static closet binary started as the sandbox's
	// stages ("": this process's own executable, which must then call
	// sandbox.RunStageIfAny first thing in main).
	StageBinary string

	// Views, when set, gives the job a copy of a cached store view
	// (warm start) instead of one bind per path; the caller creates the
	// cache once (viewcache.New) and closes it after its jobs. A cache
	// that cannot serve makes the job build its view as without one.
	Views *viewcache.Cache

	// Closures, when set, answers the closure of store-path roots from
	// closures read before (a service's jobs run the same roots again
	// and again). The roots are still looked up in the database for
	// every job: a collected root fails the job as without a cache (see
	// closure.Cache). Installables are resolved every time. nil reads
	// every closure.
	Closures *closure.Cache

	// Logf receives -v progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Limits are the job's resource limits; zero means none. Values are
// already parsed (see ParseSize, ParseDuration).
type Limits struct {
	WallTime, CPUTime, SilentTime time.Duration
	Memory, Output, FileSize      uint64
	TmpSize                       uint64 // each writable tmpfs; default Memory
	Pids, OpenFiles               uint64
	// RequireCgroup refuses to run when no cgroup can hold Memory or Pids,
	// instead of the rlimit stand-ins.
	RequireCgroup bool
}

// ErrBadRequest marks a request closet refuses before anything runs:
// errors.Is(err, ErrBadRequest) holds for every such error.
var ErrBadRequest = errors.New("bad request")

// badRequest is a refusal whose text is the reason alone.
type badRequest struct{ error }

func (badRequest) Is(target error) bool { return target == ErrBadRequest }
func (e badRequest) Unwrap() error      { return e.error }

func badf(format string, args ...any) error {
	return badRequest{fmt.Errorf(format, args...)}
}

// withDefaults fills what the caller left out.
func (r Request) withDefaults() Request {
	if r.CwdMode == "" {
		r.CwdMode = "rw"
	}
	if r.Hostname == "" {
		r.Hostname = "closet"
	}
	if r.Seccomp == "" {
		r.Seccomp = "default"
	}
	if r.Landlock == "" {
		r.Landlock = "best-effort"
	}
	if r.TTY == "" {
		r.TTY = "auto"
	}
	if r.HostUID == "" {
		r.HostUID = idmap.Auto
	}
	if r.NixDaemonSocket == "" {
		r.NixDaemonSocket = nixproxy.DaemonSocket
	}
	if r.Logf == nil {
		r.Logf = func(string, ...any) {}
	}
	return r
}

// check refuses nonsense before any file is opened. Every message names
// the flag as the CLI spells it: the CLI is the common caller, and the
// service maps its fields onto the same names.
func (r *Request) check() error {
	var errs []error
	oneOf := func(flag, v string, ok ...string) {
		for _, o := range ok {
			if v == o {
				return
			}
		}
		errs = append(errs, fmt.Errorf("--%s %q: want %s or %s", flag, v, strings.Join(ok[:len(ok)-1], ", "), ok[len(ok)-1]))
	}
	oneOf("cwd", r.CwdMode, "rw", "ro", "none")
	oneOf("tty", r.TTY, "auto", "always", "never")
	oneOf("seccomp", r.Seccomp, seccomp.ProfileDefault, seccomp.ProfileGrading, seccomp.ProfileOff)
	if r.Seccomp != seccomp.ProfileOff {
		if err := seccomp.Supported(); err != nil {
			errs = append(errs, err) // fail closed, in one line
		}
	}
	oneOf("landlock", r.Landlock, "best-effort", "off")
	oneOf("host-uid", r.HostUID, idmap.Modes...)
	if r.DBReader != "" && r.DBReader != "sqlite" {
		errs = append(errs, fmt.Errorf("database reader %q: want sqlite, or leave it unset (CLOSET_DB_READER)", r.DBReader))
	}
	if r.UID < 0 || r.GID < 0 || r.UID > 65535 || r.GID > 65535 {
		errs = append(errs, fmt.Errorf("--uid %d --gid %d: want ids from 0 to 65535", r.UID, r.GID))
	}
	if err := spec.ValidHostname(r.Hostname); err != nil {
		errs = append(errs, fmt.Errorf("--%w", err))
	}
	for _, e := range r.SetEnv {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" || strings.ContainsAny(k, " \t\n") {
			errs = append(errs, fmt.Errorf("--env %q: want NAME=VALUE", e))
		}
	}
	for _, p := range r.Preserve {
		if _, err := regexp.Compile("^(?:" + p + ")$"); err != nil {
			errs = append(errs, fmt.Errorf("--preserve %q: %v", p, err))
		}
	}
	if r.CwdMode != "none" && r.Cwd == "" {
		errs = append(errs, errors.New("no working directory given to share (use --cwd none)"))
	}
	if r.TTY == "always" && r.Console == nil {
		errs = append(errs, errors.New("--tty always: nothing relays the job's terminal here"))
	}
	if r.TTY == "always" && r.capture() {
		errs = append(errs, errors.New("--tty always cannot be combined with --output, --silent-time or --report (they read the job's output through pipes)"))
	}
	if err := errors.Join(errs...); err != nil {
		return badRequest{err}
	}
	return nil
}

// capture: the job's output must go through closet's pipes.
func (r *Request) capture() bool {
	return r.Capture || r.Limits.Output > 0 || r.Limits.SilentTime > 0
}

// lookupEnv finds name in env, the last one winning as in a shell.
func lookupEnv(env []string, name string) (string, bool) {
	v, ok := "", false
	for _, kv := range env {
		if k, val, found := strings.Cut(kv, "="); found && k == name {
			v, ok = val, true
		}
	}
	return v, ok
}
