package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/gcroot"
	"github.com/closet-sandbox/closet/internal/resolve"
	"github.com/closet-sandbox/closet/internal/sandbox"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/spec"
	"github.com/closet-sandbox/closet/internal/storepath"
)

func init() { register(newRunCmd) }

// runOpts are the flags run and shell share.
type runOpts struct {
	cwd       string
	expose    []string
	share     []string
	network   bool
	env       []string
	preserve  []string
	hostname  string
	uid, gid  int
	store     string
	dryRun    bool
	verbose   bool
	tty       string
	seccomp   string
	landlock  string
	noGCRoot  bool
	shellPath string    // shell only
	limits    limitOpts // limits.go
}

func (o *runOpts) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.cwd, "cwd", "rw", "share the current directory at the same path: `rw`, ro, or none (then the job starts in $HOME)")
	f.StringArrayVar(&o.expose, "expose", nil, "bind host path `SRC[=DST]` read-only (repeatable)")
	f.StringArrayVar(&o.share, "share", nil, "bind host path `SRC[=DST]` read-write (repeatable)")
	f.BoolVar(&o.network, "network", false, "share the host's network (default: an own network namespace with only lo)")
	f.StringArrayVar(&o.env, "env", nil, "set `NAME=VALUE` in the job's environment (repeatable)")
	f.StringArrayVar(&o.preserve, "preserve", nil, "keep the caller's variables whose names match `REGEX` (anchored; repeatable)")
	f.StringVar(&o.hostname, "hostname", "closet", "the sandbox's host name")
	f.IntVar(&o.uid, "uid", 1000, "the job's uid inside the sandbox")
	f.IntVar(&o.gid, "gid", 100, "the job's gid inside the sandbox")
	f.StringVar(&o.store, "store", "", "use the chroot store below `ROOT` (ROOT/nix/store, ROOT/nix/var/nix/db)")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the sandbox spec as JSON and run nothing")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "say on stderr what closet does and how long each phase takes")
	f.StringVar(&o.seccomp, "seccomp", "default", "syscall filter: default, or off (shows in --dry-run and reports)")
	f.StringVar(&o.landlock, "landlock", "best-effort", "Landlock filesystem fence: best-effort, or off")
	f.BoolVar(&o.noGCRoot, "no-gc-root", false, "do not register the roots as Nix GC roots while the job runs")
	o.limits.addFlags(cmd) // limits.go
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
(./result, profiles), or command names.

Inside: a read-only tmpfs root; the closure at /nix/store, read-only; a fresh
/proc; /dev with null, zero, full, random, urandom, tty, a new pts instance and
shm; tmpfs /tmp and $HOME; /etc with passwd, group, hosts and nsswitch.conf
(resolv.conf only with --network); the current directory at the same path.
The job gets a clean environment: PATH from the roots' bin directories, HOME,
USER, TERM, LANG, plus --env and --preserve. It runs in a new session, in its
own user, mount, pid, ipc, uts, net and cgroup namespaces, with no
capabilities, no_new_privs, a seccomp allowlist and a Landlock fence.

Exit status: the command's own, or 128+N when signal N ended it. closet's
own failures: 125 the sandbox could not be set up (nothing ran), 126 the
command could not be executed, 127 the command was not found, 1 bad input,
2 the store cannot be read.`,
		Example: `  closet run ./result -- hello --greeting hi
  closet run -- python3 -c 'import os; print(os.listdir("/nix/store"))'
  closet run --cwd ro --expose ~/data=/data $(nix-build -A jq) -- jq . /data/x.json
  closet run --dry-run ./result -- hello`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if dash < 0 || dash == len(args) {
				return withCode(exitBadInput, errors.New("run needs a command after --: closet run [ROOT...] -- CMD [ARGS...]"))
			}
			return o.run(cmd.Context(), args[:dash], args[dash:], false)
		},
	}
	o.addFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.tty, "tty", "auto", "give the job a pty closet relays: auto (when stdin is a terminal), always, never")
	return cmd
}

// run builds the spec and runs it; it returns an exitError carrying the
// target's status.
func (o *runOpts) run(ctx context.Context, rootArgs, command []string, interactive bool) error {
	t0 := time.Now()
	s, st, roots, err := o.buildSpec(ctx, rootArgs, command, interactive)
	if err != nil {
		return err
	}
	defer st.Close()
	o.logf("spec: %d store paths, %d binds (%v)", len(s.Store), len(s.Mounts), time.Since(t0).Round(time.Microsecond))
	if o.dryRun {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	out, err := o.launch(ctx, s, roots, t0)
	// limits.go: the verdict, the report, closet's exit status.
	return o.limits.conclude(ctx, o, st, roots, s, out, err)
}

// launch holds the closure alive and runs the sandbox. Its errors, like
// the sandbox's own, reach conclude, so a requested report says XX even
// when the sandbox never started.
func (o *runOpts) launch(ctx context.Context, s *spec.Spec, roots []storepath.Path, t0 time.Time) (*sandbox.Outcome, error) {
	if builtWithCgo {
		return nil, errors.New("this closet binary was built with cgo, so it needs the host's dynamic loader, which the sandbox does not have; rebuild it with CGO_ENABLED=0 go build ./cmd/closet")
	}
	if !o.noGCRoot {
		h, err := gcroot.Acquire(o.store, roots)
		if err != nil {
			return nil, err
		}
		defer h.Release()
	}
	stdio := sandbox.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	hooks := sandbox.Hooks{Started: func(int) {
		o.logf("target started (%v since closet began)", time.Since(t0).Round(time.Microsecond))
	}}
	var relay *ptyRelay
	if s.TTY {
		relay = &ptyRelay{}
		hooks.Console = relay.attach
	}
	out, err := sandbox.Run(ctx, s, stdio, hooks)
	if relay != nil {
		relay.finish()
	}
	return out, err
}

// setupErr maps a failed setup to closet's exit codes.
func setupErr(err error) error {
	var se *stage.Error
	if errors.As(err, &se) && se.Op == "execve" {
		if errors.Is(err, unix.ENOENT) {
			return withCode(exitNotFound, se)
		}
		return withCode(exitCannotExec, se)
	}
	return withCode(exitSandbox, err)
}

func (o *runOpts) logf(format string, args ...any) {
	if o.verbose {
		fmt.Fprintf(os.Stderr, "closet: "+format+"\n", args...)
	}
}

// buildSpec turns the flags, roots and command into the sandbox spec.
func (o *runOpts) buildSpec(ctx context.Context, rootArgs, command []string, interactive bool) (*spec.Spec, *closure.Store, []storepath.Path, error) {
	if err := o.check(); err != nil {
		return nil, nil, nil, withCode(exitBadInput, err)
	}
	st, err := openStore(o.store)
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(err error) (*spec.Spec, *closure.Store, []storepath.Path, error) {
		st.Close()
		return nil, nil, nil, err
	}
	r := &resolve.Resolver{Root: o.store, Path: os.Getenv("PATH")}
	roots, err := r.Roots(ctx, st, rootArgs)
	if err != nil {
		return fail(storeErrCode(err))
	}
	storeRoot := ""
	if o.store != "" {
		storeRoot, _ = filepath.Abs(o.store)
	}
	var exe string
	switch {
	case len(command) == 0:
		exe, err = o.findShell(storeRoot, roots)
		if err != nil {
			return fail(withCode(exitNotFound, err))
		}
		command = []string{exe}
	case len(roots) == 0:
		// closet run -- CMD: the command names its own closure.
		p, real, err := r.Command(command[0])
		if err != nil {
			return fail(withCode(exitNotFound, err))
		}
		if err := st.CheckValid(ctx, p); err != nil {
			return fail(storeErrCode(err))
		}
		roots, exe = []storepath.Path{p}, real
	case strings.Contains(command[0], "/"):
		exe = command[0]
	default:
		if exe = lookInRoots(storeRoot, roots, command[0]); exe == "" {
			return fail(withCode(exitNotFound, fmt.Errorf("%s: not found in the bin directories of the roots (%s); name it by its path, or add the root that provides it", command[0], strings.Join(pathStrings(roots), " "))))
		}
	}
	c, err := st.Closure(ctx, roots, false)
	if err != nil {
		return fail(storeErrCode(err))
	}

	s := &spec.Spec{
		Version: spec.Version, Path: exe, Args: command,
		UID: o.uid, GID: o.gid, Hostname: o.hostname, Network: o.network,
		StoreRoot: storeRoot, Seccomp: o.seccomp, Landlock: o.landlock,
		Mounts: []spec.Mount{},
	}
	for _, p := range c.Paths {
		s.Store = append(s.Store, string(p.Path))
	}
	s.ClosureHash = closureHash(s.Store)
	s.User, s.Home = o.identity()
	s.TTY = o.wantTTY(interactive)
	s.Cwd = s.Home
	if o.cwd != "none" {
		// The kernel's name for the directory, not $PWD's: a bind source
		// is opened without following symlinks, and $PWD may hold some.
		wd, err := unix.Getwd()
		if err != nil {
			return fail(withCode(exitBadInput, fmt.Errorf("current directory: %w (use --cwd none)", err)))
		}
		if wd == "/" || spec.IsReserved(wd) {
			return fail(withCode(exitBadInput, fmt.Errorf("the current directory %s cannot be shared (closet builds %s itself); cd elsewhere or use --cwd none", wd, wd)))
		}
		s.Mounts = append(s.Mounts, spec.Mount{Source: wd, Target: wd, Writable: o.cwd == "rw", Why: "cwd"})
		s.Cwd = wd
	}
	for _, b := range []struct {
		args     []string
		writable bool
		why      string
	}{{o.expose, false, "expose"}, {o.share, true, "share"}} {
		for _, a := range b.args {
			m, err := parseBind(a, b.writable, b.why)
			if err != nil {
				return fail(withCode(exitBadInput, err))
			}
			s.Mounts = append(s.Mounts, m)
		}
	}
	if s.Env, err = o.environment(s, storeRoot, roots); err != nil {
		return fail(withCode(exitBadInput, err))
	}
	s.Etc = etcFiles(s)
	s.Links = shebangLinks(storeRoot, roots)
	if err := o.limits.apply(s, o.tty); err != nil { // limits.go
		return fail(withCode(exitBadInput, err))
	}
	return s, st, roots, nil
}

func (o *runOpts) check() error {
	switch o.cwd {
	case "rw", "ro", "none":
	default:
		return fmt.Errorf("--cwd %q: want rw, ro or none", o.cwd)
	}
	switch o.tty {
	case "auto", "always", "never", "":
	default:
		return fmt.Errorf("--tty %q: want auto, always or never", o.tty)
	}
	switch o.seccomp {
	case "default", "off":
	default:
		return fmt.Errorf("--seccomp %q: want default or off", o.seccomp)
	}
	switch o.landlock {
	case "best-effort", "off":
	default:
		return fmt.Errorf("--landlock %q: want best-effort or off", o.landlock)
	}
	if o.uid < 0 || o.gid < 0 || o.uid > 65535 || o.gid > 65535 {
		return fmt.Errorf("--uid %d --gid %d: want ids from 0 to 65535", o.uid, o.gid)
	}
	if o.hostname == "" || len(o.hostname) > 64 || strings.ContainsAny(o.hostname, "/ \t\n") {
		return fmt.Errorf("--hostname %q: want 1 to 64 characters without spaces or slashes", o.hostname)
	}
	for _, e := range o.env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" || strings.ContainsAny(k, " \t\n") {
			return fmt.Errorf("--env %q: want NAME=VALUE", e)
		}
	}
	for _, p := range o.preserve {
		if _, err := regexp.Compile("^(?:" + p + ")$"); err != nil {
			return fmt.Errorf("--preserve %q: %v", p, err)
		}
	}
	return nil
}

// parseBind parses SRC[=DST]. The source is made absolute lexically: it is
// opened later, inside the sandbox's mount namespace, without following
// symlinks.
func parseBind(a string, writable bool, why string) (spec.Mount, error) {
	src, dst, hasDst := strings.Cut(a, "=")
	if src == "" || (hasDst && dst == "") {
		return spec.Mount{}, fmt.Errorf("--%s %q: want SRC or SRC=DST", why, a)
	}
	src, err := filepath.Abs(src)
	if err != nil {
		return spec.Mount{}, err
	}
	if !hasDst {
		dst = src
	}
	if !filepath.IsAbs(dst) {
		return spec.Mount{}, fmt.Errorf("--%s %q: DST must be an absolute path inside the sandbox", why, a)
	}
	dst = filepath.Clean(dst)
	if dst == "/" || spec.IsReserved(dst) {
		return spec.Mount{}, fmt.Errorf("--%s %q: closet builds %s itself; choose another DST", why, a, dst)
	}
	if _, err := os.Lstat(src); err != nil {
		return spec.Mount{}, fmt.Errorf("--%s %q: %w", why, a, err)
	}
	return spec.Mount{Source: src, Target: dst, Writable: writable, Why: why}, nil
}

func (o *runOpts) identity() (name, home string) {
	if o.uid == 0 {
		return "root", "/root"
	}
	name = os.Getenv("USER")
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" || name == "root" || strings.ContainsAny(name, ":/\n") {
		name = "closet"
	}
	return name, "/home/" + name
}

func (o *runOpts) wantTTY(interactive bool) bool {
	switch o.tty {
	case "always":
		return true
	case "never":
		return false
	}
	return (interactive || o.tty == "auto") && isTerminal(os.Stdin)
}

// environment is the job's clean environment.
func (o *runOpts) environment(s *spec.Spec, storeRoot string, roots []storepath.Path) ([]string, error) {
	env := map[string]string{
		"HOME": s.Home, "USER": s.User, "LOGNAME": s.User,
		"PATH": strings.Join(binDirs(storeRoot, roots), ":"),
		"LANG": "C.UTF-8",
	}
	if v, ok := os.LookupEnv("LANG"); ok {
		env["LANG"] = v
	}
	if v, ok := os.LookupEnv("TERM"); ok {
		env["TERM"] = v
	}
	var res []*regexp.Regexp
	for _, p := range o.preserve {
		res = append(res, regexp.MustCompile("^(?:"+p+")$"))
	}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		for _, re := range res {
			if re.MatchString(k) {
				env[k] = v
			}
		}
	}
	for _, kv := range o.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

func binDirs(storeRoot string, roots []storepath.Path) []string {
	var dirs []string
	for _, r := range roots {
		d := string(r) + "/bin"
		if st, err := os.Stat(filepath.Join("/", storeRoot, d)); err == nil && st.IsDir() {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// lookInRoots finds name in the roots' bin directories, in order.
func lookInRoots(storeRoot string, roots []storepath.Path, name string) string {
	for _, d := range binDirs(storeRoot, roots) {
		p := d + "/" + name
		if st, err := os.Stat(filepath.Join("/", storeRoot, p)); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

func (o *runOpts) findShell(storeRoot string, roots []storepath.Path) (string, error) {
	if o.shellPath != "" {
		return o.shellPath, nil
	}
	for _, sh := range []string{"bash", "sh"} {
		if p := lookInRoots(storeRoot, roots, sh); p != "" {
			return p, nil
		}
	}
	return "", fmt.Errorf("no bash or sh in the bin directories of the roots; add a root that provides a shell, or name one with --shell PATH")
}

func pathStrings(ps []storepath.Path) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p)
	}
	return out
}

func closureHash(paths []string) string {
	h := sha256.New()
	for _, p := range paths {
		h.Write([]byte(p))
		h.Write([]byte{'\n'})
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// shebangLinks points /bin/sh and /usr/bin/env at the first root that
// provides them, for scripts whose #! line names those paths. Only the
// roots' bin directories are looked at: a search of the whole closure
// would cost a stat per store path.
func shebangLinks(storeRoot string, roots []storepath.Path) map[string]string {
	links := map[string]string{}
	for link, name := range map[string]string{"/bin/sh": "sh", "/usr/bin/env": "env"} {
		if p := lookInRoots(storeRoot, roots, name); p != "" {
			links[link] = p
		}
	}
	return links
}

// etcFiles are the synthetic /etc files: the job's user and group, a
// nobody, and a hosts file with only localhost.
func etcFiles(s *spec.Spec) map[string]string {
	group := "users"
	if s.GID == 0 {
		group = "root"
	}
	passwd := fmt.Sprintf("%s:x:%d:%d:%s:%s:/bin/sh\n", s.User, s.UID, s.GID, s.User, s.Home)
	groups := fmt.Sprintf("%s:x:%d:\n", group, s.GID)
	if s.UID != 65534 {
		passwd += "nobody:x:65534:65534:nobody:/var/empty:/bin/false\n"
	}
	if s.GID != 65534 {
		groups += "nogroup:x:65534:\n"
	}
	return map[string]string{
		"passwd":        passwd,
		"group":         groups,
		"hosts":         "127.0.0.1 localhost\n::1 localhost\n",
		"nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nservices: files\nprotocols: files\n",
	}
}
