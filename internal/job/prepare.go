package job

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/resolve"
	"github.com/closet-sandbox/closet/internal/seccomp"
	"github.com/closet-sandbox/closet/internal/spec"
	"github.com/closet-sandbox/closet/internal/storepath"
)

// Kinds of failure before anything runs, so that callers can map them to
// their own exit codes or HTTP statuses. Each error Prepare returns wraps
// one of these, or ErrBadRequest.
var (
	// ErrStore: the store or its database cannot be read.
	ErrStore = closure.ErrStoreUnreadable
	// ErrNotFound: the command is not in the roots, or not on PATH.
	ErrNotFound = errors.New("command not found")
)

// Prepare resolves the request's roots, reads their closure and builds the
// sandbox spec. Nothing of the job runs and nothing is registered: a
// prepared job can be printed (Spec) and dropped (Close). With
// Request.EarlyInit the sandbox's init is launched first and waits,
// blocked reading the spec, for Start; a Prepare that fails, or a Close
// before Start, kills and reaps it.
func Prepare(ctx context.Context, req Request) (*Job, error) {
	req = req.withDefaults()
	if err := req.check(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	storeRoot, err := storeRootOf(req.Store)
	if err != nil {
		return nil, err
	}
	j := &Job{req: req, storeRoot: storeRoot, done: make(chan struct{})}
	// What the init's clone needs comes from the request alone (the binds
	// decide the job's host identity), so it can start first: the store
	// is opened, the roots resolved and their closure read while it
	// execs and its runtime starts (Request.EarlyInit).
	mounts, err := j.binds()
	if err != nil {
		return nil, err
	}
	lim, err := j.limits()
	if err != nil {
		return nil, err
	}
	j.tty = j.wantTTY()
	if req.EarlyInit && !needsNix(&req) {
		j.early = j.launchEarly(mounts, lim)
	}
	st, err := closure.Open(closure.Options{Root: storeRoot, SQLOnly: req.DBReader == "sqlite", Env: req.Env, Cache: req.Closures})
	if err != nil {
		j.dropEarly()
		return nil, err
	}
	j.st = st
	if err := j.prepare(ctx, mounts, lim); err != nil {
		j.stopNix()
		j.dropEarly()
		if j.realiseDir != "" {
			os.RemoveAll(j.realiseDir)
		}
		st.Close()
		return nil, err
	}
	req.Logf("spec: %d store paths, %d binds (%v)", len(j.spec.Store), len(j.spec.Mounts), time.Since(t0).Round(time.Microsecond))
	return j, nil
}

// storeRootOf checks a chroot store's root and makes it absolute.
func storeRootOf(root string) (string, error) {
	if root == "" {
		return "", nil
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", badf("--store %s: %v", root, err)
	}
	if st, err := os.Stat(filepath.Join(abs, storepath.Dir)); err != nil || !st.IsDir() {
		return "", badf("--store %s: no %s below it (a chroot store has ROOT/nix/store and ROOT/nix/var/nix/db)", root, storepath.Dir)
	}
	return abs, nil
}

// prepare fills j.roots and j.spec from j.req, with the job's binds and
// limits.
func (j *Job) prepare(ctx context.Context, mounts []spec.Mount, lim spec.Limits) error {
	req := &j.req
	pathVar, _ := lookupEnv(req.Env, "PATH")
	r := &resolve.Resolver{Root: req.Store, Path: pathVar, Dir: req.Cwd}
	ins := req.Installables
	if ins.Env == nil {
		ins.Env = req.Env
	}
	if needsNix(req) {
		// What nix builds for the job is rooted here until Start holds
		// the closure itself; Close removes the links.
		dir, err := os.MkdirTemp("", "closet-realise-")
		if err != nil {
			return fmt.Errorf("make a directory for nix's result links: %w", err)
		}
		j.realiseDir, r.RootDir = dir, dir
	}
	roots, err := r.Resolve(ctx, j.st, req.Roots, ins)
	if err != nil {
		return inputErr(err)
	}
	if req.Develop != nil {
		dev := *req.Develop
		if dev.Env == nil {
			dev.Env = req.Env
		}
		de, err := r.DevEnv(ctx, dev)
		if err != nil {
			return inputErr(err)
		}
		roots = append(roots, de.Roots...)
		j.devEnv = de.Env
	}
	command := req.Command
	var exe string
	switch {
	case len(command) == 0:
		if exe, err = j.findShell(roots); err != nil {
			return err
		}
		command = []string{exe}
	case len(roots) == 0 && j.exposed(command[0]):
		// closet run --expose BIN=/p -- /p: a program brought in by
		// --expose (closet check's attacker, any static binary) runs in
		// an empty store view.
		exe = command[0]
	case len(roots) == 0:
		// closet run -- CMD: the command names its own closure.
		p, real, err := r.Command(command[0])
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		if err := j.st.CheckValid(ctx, p); err != nil {
			return inputErr(err)
		}
		roots, exe = []storepath.Path{p}, real
	case strings.Contains(command[0], "/"):
		exe = command[0]
	default:
		if exe = lookInRoots(j.storeRoot, roots, command[0]); exe == "" {
			return fmt.Errorf("%w: %s: not in the bin directories of the roots (%s); name it by its path, or add the root that provides it",
				ErrNotFound, command[0], strings.Join(pathStrings(roots), " "))
		}
	}
	c, err := j.st.Closure(ctx, roots, false)
	if err != nil {
		return inputErr(err)
	}
	j.roots = roots
	j.closureSize = c.NarSize()

	s := &spec.Spec{
		Version: spec.Version, Path: exe, Args: command,
		UID: req.UID, GID: req.GID, Hostname: req.Hostname, Network: req.Network,
		StoreRoot: j.storeRoot, Seccomp: req.Seccomp, Landlock: req.Landlock,
		Mounts: mounts, TTY: j.tty, Limits: lim,
	}
	s.Store = make([]string, 0, len(c.Paths))
	for _, p := range c.Paths {
		s.Store = append(s.Store, string(p.Path))
	}
	s.ClosureHash = ClosureHash(s.Store)
	s.User, s.Home = identity(req.UID, req.UserName)
	s.Cwd = s.Home
	if req.CwdMode != "none" {
		s.Cwd = req.Cwd // checked and bound by binds
	}
	s.Env = j.environment(s, roots)
	s.Etc = etcFiles(s)
	s.Links = shebangLinks(j.storeRoot, roots)
	if req.Nix {
		if err := j.prepareNix(ctx, s); err != nil {
			return err
		}
	}
	if s.Seccomp == seccomp.ProfileDefault && s.Grading() {
		s.Seccomp = seccomp.ProfileGrading // no inotify: see package seccomp
	}
	j.spec = s
	return nil
}

// binds are the job's binds of host directories: the working directory
// (--cwd) and --expose and --share, checked, in that order.
func (j *Job) binds() ([]spec.Mount, error) {
	req := &j.req
	mounts := []spec.Mount{}
	if req.CwdMode != "none" {
		wd := req.Cwd
		if !filepath.IsAbs(wd) || wd == "/" || spec.IsReserved(wd) {
			return nil, badf("the current directory %s cannot be shared (closet builds %s itself); cd elsewhere or use --cwd none", wd, wd)
		}
		if err := j.checkBindSource("cwd", wd, false); err != nil {
			return nil, err
		}
		mounts = append(mounts, spec.Mount{Source: wd, Target: wd, Writable: req.CwdMode == "rw", Why: "cwd"})
	}
	for _, b := range []struct {
		args     []string
		writable bool
		why      string
	}{{req.Expose, false, "expose"}, {req.Share, true, "share"}} {
		for _, a := range b.args {
			m, err := j.parseBind(a, b.writable, b.why)
			if err != nil {
				return nil, err
			}
			mounts = append(mounts, m)
		}
	}
	return mounts, nil
}

// exposed reports whether p is the target of an --expose.
func (j *Job) exposed(p string) bool {
	for _, a := range j.req.Expose {
		_, dst, hasDst := strings.Cut(a, "=")
		if !hasDst {
			dst = a
		}
		if filepath.IsAbs(dst) && filepath.Clean(dst) == p {
			return true
		}
	}
	return false
}

// needsNix: some root must be realised with nix.
func needsNix(req *Request) bool {
	if req.Develop != nil || req.Installables.File != "" || req.Installables.Expr != "" || len(req.Installables.Args) > 0 {
		return true
	}
	for _, a := range req.Roots {
		if resolve.IsInstallable(a) {
			return true
		}
	}
	return false
}

// inputErr keeps a store failure a store failure and makes anything else
// bad input.
func inputErr(err error) error {
	if errors.Is(err, closure.ErrStoreUnreadable) {
		return err
	}
	return badRequest{err}
}

// parseBind parses SRC[=DST]. The source is made absolute lexically: it is
// opened later, inside the sandbox's mount namespace, without following
// symlinks.
func (j *Job) parseBind(a string, writable bool, why string) (spec.Mount, error) {
	src, dst, hasDst := strings.Cut(a, "=")
	if src == "" || (hasDst && dst == "") {
		return spec.Mount{}, badf("--%s %q: want SRC or SRC=DST", why, a)
	}
	if !filepath.IsAbs(src) {
		src = filepath.Join(j.req.Cwd, src)
	}
	src = filepath.Clean(src)
	if !hasDst {
		dst = src
	}
	if !filepath.IsAbs(dst) {
		return spec.Mount{}, badf("--%s %q: DST must be an absolute path inside the sandbox", why, a)
	}
	dst = filepath.Clean(dst)
	if dst == "/" || spec.IsReserved(dst) {
		return spec.Mount{}, badf("--%s %q: closet builds %s itself; choose another DST", why, a, dst)
	}
	if _, err := os.Lstat(src); err != nil {
		return spec.Mount{}, badf("--%s %q: %v", why, a, err)
	}
	if err := j.checkBindSource(why, src, true); err != nil {
		return spec.Mount{}, err
	}
	return spec.Mount{Source: src, Target: dst, Writable: writable, Why: why}, nil
}

// guarded are the host directories whose exposure would undo the store
// view: the whole store, its database and GC roots, the daemon's socket.
var guarded = []string{"nix/store", "nix/var"}

// checkBindSource refuses a bind source that is, holds or lies inside the
// store, the Nix state directory or the daemon's socket (of the host's
// store and of a chroot store), and warns when a bound directory holds
// sockets, which the job could connect to (scan: the cwd is not scanned,
// it would cost every run a walk of the caller's directory).
func (j *Job) checkBindSource(why, src string, scan bool) error {
	roots := []string{"/"}
	if j.storeRoot != "" {
		roots = append(roots, j.storeRoot)
	}
	for _, root := range roots {
		for _, g := range guarded {
			p := filepath.Join(root, g)
			if src == p || within(p, src) || (g == "nix/var" && within(src, p)) {
				return badf("--%s %s: this would show the job %s, which closet hides (the whole store, the Nix database or the daemon's socket); bind a directory that holds none of them", why, src, p)
			}
		}
	}
	if !scan {
		return nil
	}
	if sock := findSocket(src, 2000); sock != "" {
		j.req.Logf("warning: --%s %s holds a socket (%s) the job can connect to", why, src, sock)
		j.warnings = append(j.warnings, fmt.Sprintf("--%s %s holds a socket (%s) the job can connect to", why, src, sock))
	}
	return nil
}

// within: p lies strictly below dir.
func within(p, dir string) bool {
	return dir != p && strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// findSocket returns the first socket beneath dir, looking at no more than
// limit entries: a warning, not a guarantee.
func findSocket(dir string, limit int) string {
	fi, err := os.Lstat(dir)
	if err != nil {
		return ""
	}
	if fi.Mode()&os.ModeSocket != 0 {
		return dir
	}
	if !fi.IsDir() {
		return ""
	}
	found, seen := "", 0
	errStop := errors.New("stop")
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if seen++; seen > limit {
			return errStop
		}
		if err == nil && d.Type()&os.ModeSocket != 0 {
			found = p
			return errStop
		}
		return nil
	})
	return found
}

// identity is the job's user name and home inside the sandbox.
func identity(uid int, caller string) (name, home string) {
	if uid == 0 {
		return "root", "/root"
	}
	name = caller
	if name == "" || name == "root" || !validUserName(name) {
		name = "closet"
	}
	return name, "/home/" + name
}

// validUserName keeps names that are safe in /etc/passwd and as a path
// component.
func validUserName(n string) bool {
	if len(n) > 32 {
		return false
	}
	for _, c := range []byte(n) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return n != "." && n != ".."
}

// environment is the job's clean environment: what a login would set, the
// variables the caller preserves, and --env.
func (j *Job) environment(s *spec.Spec, roots []storepath.Path) []string {
	req := &j.req
	env := map[string]string{
		"HOME": s.Home, "USER": s.User, "LOGNAME": s.User,
		"PATH": strings.Join(binDirs(j.storeRoot, roots), ":"),
		"LANG": "C.UTF-8",
	}
	for _, k := range []string{"LANG", "TERM"} {
		if v, ok := lookupEnv(req.Env, k); ok {
			env[k] = v
		}
	}
	var res []*regexp.Regexp
	for _, p := range req.Preserve {
		res = append(res, regexp.MustCompile("^(?:"+p+")$"))
	}
	for _, kv := range req.Env {
		k, v, _ := strings.Cut(kv, "=")
		for _, re := range res {
			if re.MatchString(k) {
				env[k] = v
			}
		}
	}
	for _, kv := range j.devEnv {
		// The build environment, as nix develop gives it: its PATH goes
		// in front of the roots'.
		k, v, _ := strings.Cut(kv, "=")
		if k == "PATH" && env["PATH"] != "" {
			v += ":" + env["PATH"]
		}
		env[k] = v
	}
	for _, kv := range req.SetEnv {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
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

func (j *Job) findShell(roots []storepath.Path) (string, error) {
	if j.req.Shell != "" {
		return j.req.Shell, nil
	}
	for _, sh := range []string{"bash", "sh"} {
		if p := lookInRoots(j.storeRoot, roots, sh); p != "" {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: no bash or sh in the bin directories of the roots; add a root that provides a shell, or name one with --shell PATH", ErrNotFound)
}

func pathStrings(ps []storepath.Path) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p)
	}
	return out
}

// ClosureHash identifies a closure: the sha256 of its sorted paths, one a
// line. Equal closures have equal hashes, whatever the roots were.
func ClosureHash(paths []string) string {
	h := sha256.New()
	// Fed in 32 KB pieces: two writes per path cost more than the hashing
	// at 10,000 paths.
	buf := make([]byte, 0, 32<<10)
	for _, p := range paths {
		if len(buf)+len(p)+1 > cap(buf) {
			h.Write(buf)
			buf = buf[:0]
		}
		buf = append(append(buf, p...), '\n')
	}
	h.Write(buf)
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
