package check

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/closet-sandbox/closet/internal/exitcode"
)

// Options configure a check.
type Options struct {
	// Exe is the closet binary to test; it runs `Exe run` and is exposed
	// inside as InsidePath.
	Exe string
	// Roots are the ROOT arguments of every `closet run`; Closure is their
	// closure (store paths), which the view must equal.
	Roots   []string
	Closure []string
	// Leak adds roots to the runs without adding them to Closure, and
	// counts them as foreign: a negative control that must make the view
	// attacks report ESCAPED.
	Leak []string
	// Only restricts the check to these attack names (all when empty).
	Only []string
	// Limits are extra `closet run` flags (e.g. "--pids=256") for the
	// resource attacks; LimitNames says which limits they set.
	Limits     []string
	LimitNames []string
	// RunFlags are added to every `closet run` (e.g. "--seccomp=off" for a
	// negative control).
	RunFlags []string
	// RaceRuns is how many sandboxes start while a symlink flips (default 20).
	RaceRuns int
	// Log, when set, receives progress lines.
	Log io.Writer
}

// Bounds the resource attacks stop at on their own when the sandbox does
// not stop them first.
const (
	forkCap  = 2000
	memCap   = 1536 << 20 // above --memory=1G, the least a Go attacker starts under RLIMIT_AS
	tmpCap   = 256 << 20
	floodCap = 64 << 20
)

// ErrCannotRun marks a check that could not be carried out (as opposed to
// one that found an escape).
var ErrCannotRun = errors.New("the check could not run")

type host struct {
	o        Options
	dir      string // private working directory
	bin      string // the exposed copy of closet
	share    string // the --share'd directory on the host
	secret   string // a host file that must stay invisible
	p        Params
	canary   *exec.Cmd
	abstract net.Listener
	tcp      net.Listener
	accepts  atomic.Int32
	leakFD   int
	only     map[string]bool
	rep      *Report
}

// Run performs the check and returns its report. An error wrapping
// ErrCannotRun means it could not be carried out.
func Run(ctx context.Context, o Options) (*Report, error) {
	t0 := time.Now()
	h := &host{o: o, only: map[string]bool{}, rep: &Report{Limits: o.LimitNames}, leakFD: -1}
	for _, n := range o.Only {
		h.only[n] = true
	}
	if o.RaceRuns == 0 {
		h.o.RaceRuns = 20
	}
	h.rep.Host, _ = os.Hostname()
	defer h.cleanup()
	if err := h.setup(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCannotRun, err)
	}
	phases := []struct {
		name string
		want []string
		fn   func(context.Context) error
	}{
		{"batch", batchNames(), h.runBatch},
		{"posture", []string{"posture"}, h.runPosture},
		{"ipc", []string{"sysv-ipc-host", "abstract-socket-inbound", "cross-job-ipc"}, h.runIPC},
		{"daemon", []string{"daemon-outlives-job"}, h.runDaemon},
		{"quota", []string{"per-uid-quota"}, h.runQuota},
		{"persistence", []string{"persistence-next-job"}, h.runPersistence},
		{"symlink-race", []string{"symlink-race-share"}, h.runRace},
		{"fork-bomb", []string{"fork-bomb"}, h.soloRun("fork-bomb")},
		{"memory-bomb", []string{"memory-bomb"}, h.soloRun("memory-bomb")},
		{"memory-bomb-memfd", []string{"memory-bomb-memfd"}, h.soloRun("memory-bomb-memfd")},
		{"sysv-shm-bomb", []string{"sysv-shm-bomb"}, h.soloRun("sysv-shm-bomb")},
		{"fill-tmp", []string{"fill-tmp"}, h.soloRun("fill-tmp")},
		{"fill-dev-shm", []string{"fill-dev-shm"}, h.soloRun("fill-dev-shm")},
		{"fill-home", []string{"fill-home"}, h.soloRun("fill-home")},
		{"fill-scratch", []string{"fill-scratch"}, h.soloRun("fill-scratch")},
		{"inotify-store", []string{"inotify-store"}, h.soloRun("inotify-store")},
		{"flood-output", []string{"flood-output"}, h.soloRun("flood-output")},
	}
	for _, ph := range phases {
		if !h.wants(ph.want...) {
			continue
		}
		t := time.Now()
		h.logf("phase %s", ph.name)
		if err := ph.fn(ctx); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCannotRun, ph.name, err)
		}
		h.rep.Timings = append(h.rep.Timings, PhaseTiming{ph.name, time.Since(t).Seconds()})
	}
	h.rep.tally()
	h.rep.Seconds = time.Since(t0).Seconds()
	return h.rep, nil
}

func batchNames() []string {
	var n []string
	for _, a := range batch {
		n = append(n, a.name)
	}
	return n
}

func (h *host) wants(names ...string) bool {
	if len(h.only) == 0 {
		return true
	}
	for _, n := range names {
		if h.only[n] {
			return true
		}
	}
	return false
}

func (h *host) logf(format string, a ...any) {
	if h.o.Log != nil {
		fmt.Fprintf(h.o.Log, "closet check: "+format+"\n", a...)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// setup plants the canaries: a private copy of the binary, a shared
// directory, a secret file, a host process, an abstract and a TCP
// listener, a variable in closet's environment, and an fd closet inherits
// without close-on-exec.
func (h *host) setup() error {
	var err error
	if h.dir, err = os.MkdirTemp("", "closet-check-"); err != nil {
		return err
	}
	for _, d := range []string{"bin", "share", "race"} {
		if err := os.Mkdir(filepath.Join(h.dir, d), 0o755); err != nil {
			return err
		}
	}
	h.bin = filepath.Join(h.dir, "bin", "closet")
	if err := copyFile(h.o.Exe, h.bin, 0o555); err != nil {
		return fmt.Errorf("copy the closet binary: %w", err)
	}
	h.share = filepath.Join(h.dir, "share")
	h.secret = filepath.Join(h.dir, "secret.txt")
	if err := os.WriteFile(h.secret, []byte("host secret\n"), 0o600); err != nil {
		return err
	}
	tag := randHex(6)
	h.p = Params{
		Closure:   h.o.Closure,
		Marker:    "closet-check-canary-" + tag,
		Abstract:  fmt.Sprintf("closet-check-%d-%s", os.Getpid(), tag),
		HostFiles: []string{h.secret, h.dir},
		Share:     "/closet-check/share",
		EnvCanary: "CLOSET_CHECK_SECRET_" + strings.ToUpper(tag),
	}
	if home, err := os.UserHomeDir(); err == nil && home != "/" {
		h.p.HostFiles = append(h.p.HostFiles, filepath.Join(home, ".ssh"), home)
		// Inside, the job's own $HOME may be at the same path: it is
		// judged by whether it shows any of these names.
		ents, _ := os.ReadDir(home)
		for _, e := range ents[:min(len(ents), 64)] {
			h.p.HomeNames = append(h.p.HomeNames, e.Name())
		}
	}
	h.p.Foreign = foreignPaths(h.o.Closure, h.o.Leak)

	h.canary = exec.Command(h.o.Exe, "__attack", "canary", h.p.Marker)
	if err := h.canary.Start(); err != nil {
		return fmt.Errorf("start the canary process: %w", err)
	}
	h.p.HostPID = h.canary.Process.Pid

	if h.abstract, err = net.Listen("unix", "@"+h.p.Abstract); err != nil {
		return fmt.Errorf("abstract socket: %w", err)
	}
	if h.tcp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return fmt.Errorf("tcp listener: %w", err)
	}
	h.p.TCPPort = h.tcp.Addr().(*net.TCPAddr).Port
	for _, l := range []net.Listener{h.abstract, h.tcp} {
		go func(l net.Listener) {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				h.accepts.Add(1)
				c.Close()
			}
		}(l)
	}
	// Deliberately without O_CLOEXEC: closet inherits it; the job must not.
	if h.leakFD, err = unix.Open(h.secret, unix.O_RDONLY, 0); err != nil {
		return err
	}
	return nil
}

func (h *host) cleanup() {
	if h.leakFD >= 0 {
		unix.Close(h.leakFD)
	}
	if h.canary != nil && h.canary.Process != nil {
		h.canary.Process.Kill()
		h.canary.Wait()
	}
	for _, l := range []net.Listener{h.abstract, h.tcp} {
		if l != nil {
			l.Close()
		}
	}
	if h.dir != "" {
		filepath.WalkDir(h.dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
		os.RemoveAll(h.dir)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

// foreignPaths picks store paths outside the closure to reach for: every
// tenant-looking path, the leaked roots, and a sample of the rest.
func foreignPaths(closure, leak []string) []string {
	in := map[string]bool{}
	for _, c := range closure {
		in[filepath.Base(c)] = true
	}
	var out []string
	for _, l := range leak {
		out = append(out, "/nix/store/"+filepath.Base(l))
	}
	ents, err := os.ReadDir("/nix/store")
	if err != nil {
		return out
	}
	others := 0
	for _, e := range ents {
		n := e.Name()
		if in[n] || strings.HasPrefix(n, ".") {
			continue
		}
		switch {
		case strings.Contains(n, "-tenant-"):
			out = append(out, "/nix/store/"+n)
		case others < 64:
			out = append(out, "/nix/store/"+n)
			others++
		}
	}
	return out
}

// runArgs is the `closet run` command line for one sandbox of the check.
func (h *host) runArgs(extra []string, mode string, names ...string) []string {
	params, _ := json.Marshal(h.p)
	args := []string{"run", "--cwd", "none", "--tty", "never", "--no-gc-root",
		"--expose", h.bin + "=" + InsidePath}
	args = append(args, h.o.RunFlags...)
	args = append(args, extra...)
	args = append(args, h.o.Roots...)
	args = append(args, h.o.Leak...)
	args = append(args, "--", InsidePath, "__attack", mode, string(params))
	return append(args, names...)
}

func (h *host) command(ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, h.o.Exe, args...)
	cmd.Env = append(os.Environ(), h.p.EnvCanary+"=must-not-reach-the-job")
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// collector keeps result lines and counts every byte, so a flood costs
// no memory.
type collector struct {
	mu    sync.Mutex
	n     int64
	line  []byte
	lines []string
}

func (c *collector) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += int64(len(b))
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(c.line) < 64<<10 {
				c.line = append(c.line, b[:min(len(b), 64<<10)]...)
			}
			break
		}
		if len(c.line) < 64<<10 {
			c.line = append(c.line, b[:i]...)
		}
		c.lines = append(c.lines, string(c.line))
		c.line = c.line[:0]
		b = b[i+1:]
	}
	return 0, nil
}

func (c *collector) results() []Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Result
	for _, l := range c.lines {
		if s, ok := strings.CutPrefix(l, ResultPrefix); ok {
			var r Result
			if json.Unmarshal([]byte(s), &r) == nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// closetNotes are closet's own remarks on stderr ("closet: ..."), such
// as which mechanism enforced a limit.
func (c *collector) closetNotes() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var keep []string
	for _, l := range c.lines {
		if strings.HasPrefix(l, "closet: ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(first(keep, 3), " | ")
}

func (c *collector) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var keep []string
	for _, l := range c.lines {
		if !strings.HasPrefix(l, ResultPrefix) {
			keep = append(keep, l)
		}
	}
	return strings.Join(first(keep, 5), " | ")
}

// countWriter wraps a collector so Write reports the bytes it took.
type countWriter struct{ c *collector }

func (w countWriter) Write(b []byte) (int, error) { w.c.Write(b); return len(b), nil }

func (h *host) add(r Result) {
	if h.wants(r.Name) {
		h.rep.Attacks = append(h.rep.Attacks, r)
	}
}

// runBatch runs the batch in one sandbox whose stdin is a host pty (the
// launching terminal closet must not let the job reach), then judges
// what only the host can see.
func (h *host) runBatch(ctx context.Context) error {
	names := []string{}
	if len(h.only) > 0 {
		for _, a := range batch {
			if h.only[a.name] {
				names = append(names, a.name)
			}
		}
	}
	ptm, pts, err := pty.Open()
	if err != nil {
		return fmt.Errorf("open a pty: %w", err)
	}
	defer ptm.Close()
	defer pts.Close()
	if _, err := term.MakeRaw(int(pts.Fd())); err != nil {
		return fmt.Errorf("raw mode on the pty: %w", err)
	}
	out := &collector{}
	cmd := h.command(ctx, h.runArgs([]string{"--share", h.share + "=" + h.p.Share}, "batch", names...))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, countWriter{out}, countWriter{out}
	runErr := cmd.Run()
	res := out.results()
	if len(res) == 0 {
		return fmt.Errorf("no results from the sandbox (%v): %s", runErr, out.text())
	}
	got := map[string]bool{}
	for _, r := range res {
		got[r.Name] = true
		r = h.judgeBatch(r, pts)
		h.add(r)
	}
	for _, a := range batch {
		if (len(names) == 0 || slices.Contains(names, a.name)) && !got[a.name] {
			h.add(Result{Name: a.name, Threat: a.threat, Evidence: fmt.Sprintf("no result: the batch ended early (%v): %s", runErr, out.text())})
		}
	}
	return nil
}

// judgeBatch adds the host's view to an inside result.
func (h *host) judgeBatch(r Result, pts *os.File) Result {
	fail := func(format string, a ...any) Result {
		r.Blocked = false
		r.Evidence = fmt.Sprintf(format, a...) + "; inside: " + r.Evidence
		return r
	}
	switch r.Name {
	case "kill-all", "ptrace-host", "proc-host-processes":
		if err := h.canaryAlive(); err != nil {
			return fail("the host canary %d is gone: %v", h.p.HostPID, err)
		}
		if r.Name == "kill-all" {
			r.Evidence += "; canary alive"
		}
	case "abstract-socket-host", "tcp-host-loopback":
		if n := h.accepts.Load(); n > 0 {
			return fail("the host listeners accepted %d connections", n)
		}
	case "tiocsti", "tiocsti-high-bits":
		n, err := unix.IoctlGetInt(int(pts.Fd()), unix.TIOCINQ)
		if err == nil && n > 0 {
			return fail("%d bytes were injected into the host terminal's input", n)
		}
	case "setuid-chmod", "setuid-create":
		var mine []string
		for _, f := range setIDFiles(h.share) {
			if strings.HasPrefix(f, "suid-chmod") == (r.Name == "setuid-chmod") {
				mine = append(mine, f)
			}
		}
		if len(mine) > 0 {
			return fail("set-id files in the host's shared directory: %s", strings.Join(mine, ", "))
		}
	case "i386-int80":
		out, err := exec.Command(h.o.Exe, "__attack", "int80").CombinedOutput()
		return judgeControlled(r, string(out), err)
	case "hardlink-store":
		if _, err := os.Lstat(filepath.Join(h.share, "closet-check-link")); err == nil {
			return fail("a hard link to a store file appeared in the host's shared directory")
		}
	}
	return r
}

// judgeControlled judges an attack made in a child the filter should kill
// (i386-int80) against a control: the same child run outside any sandbox.
// Where the control does not survive either, the kernel itself lacks the
// mechanism (int 0x80 on a kernel without IA32 emulation faults, and Go
// crashes with exit 2), so the attack is not applicable, never ESCAPED.
func judgeControlled(r Result, controlOut string, controlErr error) Result {
	if strings.Contains(controlOut, "survived") && controlErr == nil {
		return r
	}
	r.Blocked, r.Skipped = false, true
	r.Evidence = fmt.Sprintf("not applicable: the same call fails outside any sandbox too (%v: %q), so this kernel lacks the mechanism; inside: %s",
		controlErr, firstLine(controlOut), r.Evidence)
	return r
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// setIDFiles lists files under dir with a set-id bit, as the host sees them.
func setIDFiles(dir string) []string {
	var bad []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
			rel, _ := filepath.Rel(dir, p)
			bad = append(bad, fmt.Sprintf("%s %v", rel, fi.Mode()))
		}
		return nil
	})
	return bad
}

func (h *host) canaryAlive() error {
	var ws unix.WaitStatus
	pid, err := unix.Wait4(h.p.HostPID, &ws, unix.WNOHANG, nil)
	if err != nil {
		return err
	}
	if pid == h.p.HostPID {
		h.canary.Process = nil
		return fmt.Errorf("ended: %v", ws.Signal())
	}
	return nil
}

// startHold starts a sandbox running `__attack mode` and waits until it
// says it is ready; closing the returned stdin ends it.
func (h *host) startHold(ctx context.Context, mode string) (cmd *exec.Cmd, stdin io.WriteCloser, wait func() error, err error) {
	cmd = h.command(ctx, h.runArgs(nil, mode))
	stdin, err = cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- nil
				io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- fmt.Errorf("the target ended before it was ready: %s", strings.TrimSpace(stderr.String()))
	}()
	wait = func() error { stdin.Close(); return cmd.Wait() }
	select {
	case err = <-ready:
	case <-time.After(30 * time.Second):
		err = errors.New("the target was not ready within 30s")
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, nil, nil, err
	}
	return cmd, stdin, wait, nil
}

// runIPC checks, while a job holds them, that its SysV segment and its
// abstract socket are invisible from the host.
func (h *host) runIPC(ctx context.Context) error {
	_, _, wait, err := h.startHold(ctx, "hold-ipc")
	if err != nil {
		return err
	}
	defer wait()
	b, err := os.ReadFile("/proc/sysvipc/shm")
	r := Result{Name: "sysv-ipc-host", Threat: "NS-10"}
	switch {
	case err != nil:
		r.Skipped, r.Evidence = true, "read /proc/sysvipc/shm: "+err.Error()
	case shmHasKey(string(b), 0x0c105e7):
		r.Evidence = "the job's SysV segment (key 0x0c105e7) is visible in the host's IPC namespace"
	default:
		r.Blocked, r.Evidence = true, "the job's SysV segment (key 0x0c105e7) is not in the host's /proc/sysvipc/shm"
	}
	h.add(r)
	r = Result{Name: "abstract-socket-inbound", Threat: "NS-09"}
	c, err := net.DialTimeout("unix", "@"+h.p.Abstract+"-inside", time.Second)
	if err == nil {
		c.Close()
		r.Evidence = "the host connected to the job's abstract socket @" + h.p.Abstract + "-inside"
	} else {
		r.Blocked, r.Evidence = true, "host connect @"+h.p.Abstract+"-inside: "+errName(unwrapNet(err))
	}
	h.add(r)
	if h.wants("cross-job-ipc") {
		h.add(h.oneShot(ctx, "cross-job", "cross-job-ipc", "FD-02"))
	}
	return nil
}

// oneShot runs a sandbox in mode and returns the result it prints.
func (h *host) oneShot(ctx context.Context, mode, name, threat string) Result {
	cmd := h.command(ctx, h.runArgs(nil, mode))
	out := &collector{}
	cmd.Stdout, cmd.Stderr = countWriter{out}, countWriter{out}
	err := cmd.Run()
	if res := out.results(); len(res) > 0 {
		return res[0]
	}
	return Result{Name: name, Threat: threat, Evidence: fmt.Sprintf("no result (%v): %s", err, out.text())}
}

// runQuota has a job take every inotify instance it can and hold them,
// while the host, as the same user, tries to make one: per-user kernel
// quotas are counted for the job's host uid, which every job of this user
// shares.
func (h *host) runQuota(ctx context.Context) error {
	_, _, wait, err := h.startHold(ctx, "hold-inotify")
	if err != nil {
		return err
	}
	fd, ierr := unix.InotifyInit1(unix.IN_CLOEXEC)
	if ierr == nil {
		unix.Close(fd)
	}
	wait()
	r := Result{Name: "per-uid-quota", Threat: "R-08"}
	if ierr != nil {
		r.Evidence = fmt.Sprintf("while the job held every inotify instance it could, the host user's own inotify_init1 failed with %s: jobs and their user share per-uid kernel quotas", errName(ierr))
	} else {
		r.Blocked, r.Evidence = true, "the job's inotify instances did not count against the host user's"
	}
	h.add(r)
	return nil
}

// runDaemon has the job leave a daemon behind (own session, SIGTERM
// ignored) and exit: once closet returns, no process of the job may be
// left on the host.
func (h *host) runDaemon(ctx context.Context) error {
	cmd := h.command(ctx, h.runArgs(nil, "daemonize"))
	out := &collector{}
	cmd.Stdout, cmd.Stderr = countWriter{out}, countWriter{out}
	err := cmd.Run()
	r := Result{Name: "daemon-outlives-job", Threat: "R-06"}
	if !strings.Contains(out.text(), "daemon started") {
		r.Skipped, r.Evidence = true, fmt.Sprintf("the job could not start its daemon (%v): %s", err, out.text())
		h.add(r)
		return nil
	}
	marker := h.p.Marker + "-daemon"
	var left []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && isCanary(pid, marker) {
			left = append(left, pid)
			unix.Kill(pid, unix.SIGKILL)
		}
	}
	if len(left) > 0 {
		r.Evidence = fmt.Sprintf("the job's daemon outlived it: host pids %v (killed now)", left)
	} else {
		r.Blocked, r.Evidence = true, "the job started a daemon (setsid, SIGTERM ignored) and exited: nothing of it was left once closet returned"
	}
	h.add(r)
	return nil
}

// runPersistence has one job leave traces and the next look for them.
func (h *host) runPersistence(ctx context.Context) error {
	cmd := h.command(ctx, h.runArgs(nil, "persist-write"))
	out := &collector{}
	cmd.Stdout, cmd.Stderr = countWriter{out}, countWriter{out}
	if err := cmd.Run(); err != nil || !strings.Contains(out.text(), "traces left") {
		h.add(Result{Name: "persistence-next-job", Threat: "X-03", Skipped: true, Evidence: fmt.Sprintf("the first job failed (%v): %s", err, out.text())})
		return nil
	}
	h.add(h.oneShot(ctx, "persist-read", "persistence-next-job", "X-03"))
	return nil
}

func shmHasKey(table string, key int) bool {
	for _, l := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(l)
		if len(f) > 0 {
			if k, err := strconv.ParseInt(f[0], 10, 64); err == nil && int(k) == key {
				return true
			}
		}
	}
	return false
}

// runRace starts sandboxes sharing race/flip while a goroutine swaps
// race/flip between a real directory and a symlink to a secret directory
// (renameat2 RENAME_EXCHANGE, so the name always exists). Each sandbox
// must either refuse (a symlink in the path) or show the real directory.
func (h *host) runRace(ctx context.Context) error {
	race := filepath.Join(h.dir, "race")
	real, secret := filepath.Join(race, "real"), filepath.Join(race, "secret")
	for _, d := range []string{real, secret} {
		if err := os.MkdirAll(filepath.Join(d, "sub"), 0o755); err != nil {
			return err
		}
	}
	for _, f := range []string{"real/inside", "real/sub/inside", "secret/SECRET", "secret/sub/SECRET"} {
		os.WriteFile(filepath.Join(race, f), nil, 0o644)
	}
	flip, alt := filepath.Join(race, "flip"), filepath.Join(race, "alt")
	if err := os.Rename(real, flip); err != nil {
		return err
	}
	if err := os.Symlink(secret, alt); err != nil {
		return err
	}
	stop := make(chan struct{})
	var flips atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if unix.Renameat2(unix.AT_FDCWD, flip, unix.AT_FDCWD, alt, unix.RENAME_EXCHANGE) == nil {
				flips.Add(1)
			}
		}
	}()
	var refused, inside, links int
	var leaked []string
	for i := 0; i < h.o.RaceRuns; i++ {
		// Even runs race the last component, odd runs a parent one.
		src := flip
		if i%2 == 1 {
			src = filepath.Join(flip, "sub")
		}
		p := h.p
		p.Share = "/closet-check/race"
		params, _ := json.Marshal(p)
		args := []string{"run", "--cwd", "none", "--tty", "never", "--no-gc-root",
			"--expose", h.bin + "=" + InsidePath, "--share", src + "=" + p.Share}
		args = append(args, h.o.RunFlags...)
		args = append(args, h.o.Roots...)
		args = append(args, "--", InsidePath, "__attack", "race-probe", string(params))
		cmd := h.command(ctx, args)
		out := &collector{}
		cmd.Stdout, cmd.Stderr = countWriter{out}, countWriter{out}
		err := cmd.Run()
		text := out.text()
		switch {
		case strings.Contains(text, "SECRET"):
			leaked = append(leaked, text)
		case strings.Contains(text, "race: inside"):
			inside++
		case strings.Contains(text, "race: symlink"):
			links++
		case err != nil:
			refused++
		default:
			leaked = append(leaked, "unexpected: "+text)
		}
	}
	close(stop)
	wg.Wait()
	r := Result{Name: "symlink-race-share", Threat: "FS-20"}
	if len(leaked) > 0 {
		r.Evidence = fmt.Sprintf("%d of %d sandboxes saw the symlink's target: %s", len(leaked), h.o.RaceRuns, leaked[0])
	} else {
		r.Blocked = true
		r.Evidence = fmt.Sprintf("%d sandboxes while the shared path (last or parent component) flipped %d times between a directory and a symlink to another: %d refused, %d bound the real directory, %d bound the symlink itself (dangling inside), 0 reached its target", h.o.RaceRuns, flips.Load(), refused, inside, links)
	}
	h.add(r)
	return nil
}

// soloRun runs one resource attack in its own sandbox, with the limit
// flags, and judges it from both sides.
func (h *host) soloRun(name string) func(context.Context) error {
	return func(ctx context.Context) error {
		p := h.p
		switch name {
		case "fork-bomb":
			p.Cap = forkCap
		case "memory-bomb":
			p.Cap = memCap
		case "fill-tmp":
			p.Cap = tmpCap
		case "memory-bomb-memfd", "sysv-shm-bomb", "fill-dev-shm", "fill-home":
			p.Cap = memCap
		case "fill-scratch":
			p.Cap, p.Budget = tmpCap, h.tmpBudget()
		case "flood-output":
			p.Cap, p.Chunk = floodCap, 64<<10
		}
		saved := h.p
		h.p = p
		flags := h.limitsFor(name)
		r, out, wall := h.solo(ctx, name, flags)
		if r.Skipped {
			// The Go attacker's start under RLIMIT_AS is marginal: once more.
			r, out, wall = h.solo(ctx, name, flags)
		}
		if r.refused && len(flags) > 0 {
			// closet could not set a limit up here (e.g. --pids needs a
			// delegated cgroup): run unbounded-but-capped to say so.
			why := r.Evidence
			r, out, wall = h.solo(ctx, name, nil)
			r.Evidence += "; closet refused the limit flags: " + why
		}
		h.p = saved
		switch name {
		case "fill-tmp":
			if _, err := os.Stat(filepath.Join(os.TempDir(), p.EnvCanary)); err == nil {
				os.Remove(filepath.Join(os.TempDir(), p.EnvCanary))
				r.Blocked = false
				r.Evidence = "the job's file appeared in the host's /tmp; " + r.Evidence
			} else {
				r.Evidence += "; host /tmp untouched"
			}
		case "inotify-store":
			r.Result = judgeInotify(r.Result, inotifyControl())
		case "flood-output":
			if out.n >= floodCap {
				r.Blocked = false
				r.Evidence = fmt.Sprintf("the host received all %d MiB the job wrote (no output limit)", out.n>>20)
			} else {
				r.Blocked = true
				r.Evidence = fmt.Sprintf("the host received %d of %d bytes: closet cut the output", out.n, int64(floodCap))
			}
		}
		r.Evidence += fmt.Sprintf(" (%v)", wall)
		h.add(r.Result)
		return nil
	}
}

// tmpBudget is the --tmp-size the check passes, in bytes (0: none).
func (h *host) tmpBudget() int64 {
	for _, f := range h.o.Limits {
		if v, ok := strings.CutPrefix(f, "--tmp-size="); ok {
			return parseBytes(v)
		}
	}
	return 0
}

// parseBytes reads the sizes limitFlags passes: bytes, or a number with
// k, M or G and an optional "iB".
func parseBytes(v string) int64 {
	v = strings.TrimSuffix(strings.TrimSuffix(v, "iB"), "B")
	mul := int64(1)
	switch {
	case strings.HasSuffix(v, "k"), strings.HasSuffix(v, "K"):
		mul, v = 1<<10, v[:len(v)-1]
	case strings.HasSuffix(v, "M"):
		mul, v = 1<<20, v[:len(v)-1]
	case strings.HasSuffix(v, "G"):
		mul, v = 1<<30, v[:len(v)-1]
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0
	}
	return n * mul
}

// inotifyControl makes an inotify instance outside any sandbox: nil when
// this kernel has inotify, so a refusal inside is the sandbox's doing.
func inotifyControl() error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// judgeInotify turns a refusal into "not applicable" when the control
// outside was refused too: a kernel without inotify has no such channel.
func judgeInotify(r Result, control error) Result {
	if control != nil {
		r.Blocked, r.Skipped = false, true
		r.Evidence = fmt.Sprintf("not applicable: inotify_init1 fails outside any sandbox too (%s), so this kernel has no inotify; inside: %s", errName(control), r.Evidence)
	}
	return r
}

// limitsFor picks the limit flag that bounds attack name, plus
// --wall-time as a backstop.
func (h *host) limitsFor(name string) []string {
	want := map[string][]string{
		"fork-bomb": {"--pids="}, "memory-bomb": {"--memory="}, "memory-bomb-memfd": {"--memory="},
		"fill-tmp": {"--tmp-size="}, "fill-dev-shm": {"--tmp-size=", "--memory="}, "fill-home": {"--tmp-size=", "--memory="},
		"flood-output": {"--output="}, "sysv-shm-bomb": {"--memory="}, "fill-scratch": {"--tmp-size="},
		// A grading configuration: --cwd none with limits.
		"inotify-store": {"--memory="},
	}[name]
	var out []string
	for _, f := range h.o.Limits {
		if strings.HasPrefix(f, "--wall-time=") || slices.ContainsFunc(want, func(w string) bool { return strings.HasPrefix(f, w) }) {
			out = append(out, f)
		}
	}
	return out
}

type soloResult struct {
	Result
	refused bool // closet exited Sandbox, BadInput or Usage: the sandbox never ran
}

// solo runs one resource attack with extra flags.
func (h *host) solo(ctx context.Context, name string, flags []string) (soloResult, *collector, time.Duration) {
	cmd := h.command(ctx, h.runArgs(flags, name))
	out, errs := &collector{}, &collector{}
	cmd.Stdout, cmd.Stderr = countWriter{out}, countWriter{errs}
	t := time.Now()
	runErr := cmd.Run()
	wall := time.Since(t).Round(time.Millisecond)
	var th string
	for _, a := range solo {
		if a.name == name {
			th = a.threat
		}
	}
	r := soloResult{Result: Result{Name: name, Threat: th}}
	if res := append(out.results(), errs.results()...); len(res) > 0 {
		r.Result = res[0]
		if notes := errs.closetNotes(); notes != "" {
			r.Evidence += "; " + notes
		}
		return r, out, wall
	}
	// No result: the job was stopped before it could say, which is what a
	// limit does (closet's OL, ML, TO, or 128+N for a signal), or it
	// never ran.
	var ee *exec.ExitError
	if errors.As(runErr, &ee) {
		switch code := ee.ExitCode(); {
		case code == exitcode.Sandbox || code == exitcode.BadInput || code == exitcode.Usage:
			r.refused = true
			r.Evidence = fmt.Sprintf("closet exit %d: %s", code, errs.text())
		case code == exitcode.OL || code == exitcode.ML || code == exitcode.TO || code > exitcode.SignalBase:
			r.Blocked = true
			r.Evidence = fmt.Sprintf("the job was stopped before it reported (closet exit %d%s)", code, verdictOf(code))
		default:
			r.Skipped = true
			r.Evidence = fmt.Sprintf("the attacker itself could not run (exit %d): %s", code, errs.text())
		}
		return r, out, wall
	}
	r.Evidence = fmt.Sprintf("no result (%v): %s", runErr, errs.text())
	return r, out, wall
}

func verdictOf(code int) string {
	switch {
	case code == exitcode.OL:
		return ": output limit"
	case code == exitcode.ML:
		return ": memory limit"
	case code == exitcode.TO:
		return ": time limit"
	case code > exitcode.SignalBase:
		return ": " + unix.SignalName(unix.Signal(code-exitcode.SignalBase))
	}
	return ""
}
