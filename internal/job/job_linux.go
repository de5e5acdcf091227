package job

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/gcroot"
	"github.com/closet-sandbox/closet/internal/idmap"
	"github.com/closet-sandbox/closet/internal/report"
	"github.com/closet-sandbox/closet/internal/sandbox"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/spec"
	"github.com/closet-sandbox/closet/internal/storepath"
)

// Job is one run you can hold: prepared, started, signalled, grown, waited
// for. Its methods are safe for concurrent use; many jobs run at once in
// one process.
type Job struct {
	req       Request
	st        *closure.Store
	storeRoot string
	roots     []storepath.Path
	spec      *spec.Spec
	tty       bool
	warnings  []string

	closureSize uint64
	devEnv      []string // Request.Develop's environment
	realiseDir  string   // nix's result links for realised installables
	nix         *nixInside
	nixListener net.Listener
	hostID      string // "UID:GID" of the job's own host ids, or "caller"
	early       *earlyInit
	asCaller    bool // Prepare decided the job runs as the caller (see launchEarly)

	mu      sync.Mutex      // guards everything below, and serialises AddPaths
	visible map[string]bool // see visibleSet
	added   []string
	hold    *gcroot.Hold
	state   state
	initPid int
	// cachedView: the job's store view is a copy of a cached one
	// (Request.Views), which cannot grow.
	cachedView bool
	warmHit    bool          // the copy came from a view already cached
	pending    []unix.Signal // signals that came while the job was starting
	cancel     context.CancelFunc
	grow       viewGrower
	relays     []func() // run after the job ended: drain and close relays

	done   chan struct{} // closed when the job has ended and rep is set
	rep    *report.Report
	closed bool
	// gone is closed once the sandbox's init is reaped and the job's
	// cgroups removed (sandbox.Outcome.Gone), after the job ended; Close
	// waits for it where the cgroups are removed only then (mustWait).
	gone     <-chan struct{}
	mustWait bool
}

type state int

const (
	prepared state = iota
	starting
	running
	ended
)

// viewGrower makes store paths appear in a running job's view; the
// sandbox's control channel to the init is one.
type viewGrower interface {
	AddPaths(ctx context.Context, paths []string) error
}

// ErrEnded: the job is no longer running.
var ErrEnded = errors.New("the job has ended")

// Spec is the sandbox the job will be (what --dry-run prints).
func (j *Job) Spec() *spec.Spec { return j.spec }

// Warnings are things the caller should hear about that did not stop the
// job (an exposed directory that holds sockets).
func (j *Job) Warnings() []string { return j.warnings }

// Start registers the closure as GC roots and starts the sandbox (or, with
// Request.EarlyInit, gives the init Prepare launched its spec). It
// returns once the target has started, or with the reason it could not;
// either way Wait then gives the report (XX for a failed start, a failed
// early launch included).
func (j *Job) Start(ctx context.Context) error {
	j.mu.Lock()
	if j.state != prepared || j.closed {
		j.mu.Unlock()
		if j.closed {
			return errors.New("job: Start called after Close")
		}
		return errors.New("job: Start called twice")
	}
	j.state = starting
	j.mu.Unlock()
	t0 := time.Now()
	started := make(chan int, 1)
	failed := make(chan error, 1)
	go j.run(ctx, started, failed)
	select {
	case <-started:
		j.req.Logf("target started (%v)", time.Since(t0).Round(time.Microsecond))
		j.serveNix(ctx)
		return nil
	case err := <-failed:
		return err
	}
}

// run is the job's life, on its own goroutine: GC roots, mount point, the
// sandbox, the verdict. Exactly one of started and failed is sent on.
func (j *Job) run(ctx context.Context, started chan<- int, failed chan<- error) {
	ctx, cancel := context.WithCancel(ctx)
	j.mu.Lock()
	j.cancel = cancel
	j.mu.Unlock()
	defer cancel()
	out, err := j.launch(ctx, started)
	j.stopNix()
	j.mu.Lock()
	j.state = ended
	if out != nil {
		j.gone, j.mustWait = out.Gone, out.MustWait
	}
	relays := j.relays
	j.mu.Unlock()
	for _, r := range relays {
		r()
	}
	j.conclude(out, err)
	j.release()
	if err != nil {
		select {
		case failed <- err:
		default:
		}
	}
	close(j.done)
}

// launch holds the closure alive and runs the sandbox to its end.
func (j *Job) launch(ctx context.Context, started chan<- int) (*sandbox.Outcome, error) {
	held := j.holdRoots()
	defer held() // j.hold is set, or the roots failed, before release runs
	s := *j.spec
	hooks := sandbox.Hooks{
		// Running from the moment the parent learns the target is, not
		// when Start returns (a job that ends at once must not be marked
		// running afterwards); signals that came before (the target's
		// output can arrive first) are delivered now, not dropped.
		Started: func(pid int) {
			j.running(pid)
			started <- pid
		},
		// The init starts (or was launched by Prepare) while the roots
		// are registered; the spec, and so every mount of the view, waits
		// for them.
		Ready:   held,
		Console: j.req.Console,
		Control: func(c *sandbox.Control) {
			j.mu.Lock()
			j.grow = c
			j.mu.Unlock()
		},
	}
	if e := j.early; e != nil {
		defer e.ident.Release() // after every process of the job is gone
		if e.err != nil {
			return nil, cmp.Or(held(), e.err)
		}
		return e.init.Run(ctx, &s, hooks)
	}
	var ident *sandbox.Identity
	if !j.asCaller {
		var err error
		if ident, err = j.identity(s.Mounts); err != nil {
			return nil, cmp.Or(held(), err)
		}
	}
	o, err := j.launchOptions(ident, s.Limits)
	if err != nil {
		ident.Release()
		return nil, cmp.Or(held(), err)
	}
	defer o.Identity.Release() // after every process of the job is gone
	// A cached view serves jobs that run as the caller (the holder's
	// copies were tested across user namespaces of one host uid), whose
	// view never grows (a copy cannot: see internal/viewcache), and whose
	// closure is large enough to gain from it.
	if j.req.Views != nil && o.Identity == nil && !j.growsView() && j.req.Views.Serves(len(s.Store)) {
		if v, hit, err := j.req.Views.TakeHit(ctx, s.StoreRoot, s.Store); err == nil {
			defer v.Close()
			o.View = v
			j.mu.Lock()
			j.cachedView, j.warmHit = true, hit
			j.mu.Unlock()
			started := hooks.Started
			hooks.Started = func(pid int) {
				started(pid)
				// The next copy, now that this job's mounts are made.
				go j.req.Views.Refill()
			}
		} else {
			j.req.Logf("view cache: %v; building the view", err)
		}
	}
	return sandbox.Run(ctx, &s, o, hooks)
}

// launchOptions is what the init's clone needs, from the request alone,
// for a job of host identity ident (see identity) with the limits it will
// have: those, and the job's fds 0-2.
func (j *Job) launchOptions(ident *sandbox.Identity, lim spec.Limits) (sandbox.LaunchOptions, error) {
	stdio, err := j.stdio()
	if err != nil {
		return sandbox.LaunchOptions{}, err
	}
	return sandbox.LaunchOptions{
		UID: j.req.UID, GID: j.req.GID, Network: j.req.Network, TTY: j.tty, Limits: lim,
		Stdio: stdio, Exe: j.req.StageBinary, Identity: ident,
	}, nil
}

// earlyInit is the sandbox's init launched before Prepare reads the
// closure (Request.EarlyInit).
type earlyInit struct {
	init  *sandbox.Init
	ident *sandbox.Identity
	err   error // the launch failed: Start fails with it, as a late launch would
}

// launchEarly launches the init, first thing: Prepare then opens the
// store, resolves the roots and reads their closure while the init's
// execve and its Go runtime's start (about a millisecond) go on. Nothing of the job runs in
// it until Start sends the spec. It launches nothing (nil) for a job that
// a cached view may serve: one that runs as the caller, with
// Request.Views, whose view does not grow (Request.Nix); its closure
// decides, and Start launches.
func (j *Job) launchEarly(mounts []spec.Mount, lim spec.Limits) *earlyInit {
	e := &earlyInit{}
	ident, err := j.identity(mounts)
	if err != nil {
		e.err = err
		return e
	}
	if ident == nil && j.req.Views != nil && !j.req.Nix {
		j.asCaller = true // decided: Start does not decide again
		return nil
	}
	o, err := j.launchOptions(ident, lim)
	if err != nil {
		ident.Release()
		e.err = err
		return e
	}
	t0 := time.Now()
	if e.init, e.err = sandbox.Launch(o); e.err != nil {
		o.Identity.Release()
		return e
	}
	e.ident = o.Identity
	j.req.Logf("sandbox init launched early: pid %d (%v)", e.init.Pid(), time.Since(t0).Round(time.Microsecond))
	return e
}

// dropEarly kills and reaps an init launched early that will never get
// its spec (Prepare failed, or the job is closed unstarted), removes its
// cgroups, frees its host identity and closes the relays of its stdio.
func (j *Job) dropEarly() {
	e := j.early
	if e == nil {
		return
	}
	j.early = nil
	if e.init != nil {
		e.init.Close()
	}
	e.ident.Release()
	j.mu.Lock()
	relays := j.relays
	j.relays = nil
	j.mu.Unlock()
	for _, r := range relays {
		r()
	}
}

// holdRoots registers the closure's GC roots (j.hold) on a goroutine of
// their own, so that they are made while the init starts (a link per
// root, about 0.4 ms as nobody, in the 1 ms the clone and the init's
// execve take). held waits for them and says whether they failed; it may
// be called any number of times.
func (j *Job) holdRoots() (held func() error) {
	if j.req.NoGCRoot {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	go func() {
		h, err := gcroot.Acquire(gcroot.Options{StoreRoot: j.storeRoot, User: j.req.UserName}, j.roots)
		if err == nil {
			j.mu.Lock()
			j.hold = h
			j.mu.Unlock()
		}
		done <- err
	}()
	return sync.OnceValue(func() error { return <-done })
}

// growsView says whether the job's view is made to grow while it runs: the
// Nix proxy adds what the job builds.
func (j *Job) growsView() bool {
	for _, m := range j.spec.Mounts {
		if m.Why == "nix" {
			return true
		}
	}
	return false
}

// identity decides who the job is on the host (Request.HostUID), from
// the job's binds, and takes a slot when the job gets ids of its own. A
// nil Identity means the caller's own ids.
func (j *Job) identity(mounts []spec.Mount) (*sandbox.Identity, error) {
	var b idmap.Binds
	var ro []string
	for _, m := range mounts {
		if m.Why == "nix" {
			continue // the proxy's socket: private to the caller, connected to only
		}
		if m.Writable {
			b.Writable = true
		} else {
			ro = append(ro, m.Source)
		}
	}
	b.Unreadable = idmap.FirstUnreadable(ro)
	c := sandbox.Caller{UID: j.req.CallerUID, GID: j.req.CallerGID, Name: j.req.UserName, StateDir: j.req.SlotDir}
	ident, why, err := sandbox.ChooseIdentity(j.req.HostUID, c, b)
	if err != nil {
		return nil, fmt.Errorf("--host-uid %s: %w", j.req.HostUID, err)
	}
	j.mu.Lock()
	if ident != nil {
		j.hostID = fmt.Sprintf("%d:%d", ident.HostUID(), ident.HostGID())
	} else {
		j.hostID = "caller"
		if why != "" {
			j.req.Logf("the job runs as you: %s", why)
		}
	}
	j.mu.Unlock()
	return ident, nil
}

// stdio gives the job its fds 0-2. A terminal of the caller never reaches
// the job: with a pty the sandbox makes its own, and otherwise each
// terminal among them is relayed through a pipe, so the job can neither
// read keystrokes meant for another program nor change the terminal's
// modes.
func (j *Job) stdio() (sandbox.Stdio, error) {
	in, out, errw := j.req.Stdin, j.req.Stdout, j.req.Stderr
	if j.tty {
		return sandbox.Stdio{}, nil
	}
	if in != nil && isTerminal(in) {
		r, w, err := os.Pipe()
		if err != nil {
			return sandbox.Stdio{}, err
		}
		go func() {
			io.Copy(w, in)
			w.Close()
		}()
		j.addRelay(func() { r.Close() })
		in = r
	}
	if !j.req.capture() {
		// With Capture the sandbox's own pipes carry stdout and stderr.
		var err error
		if out, err = j.relayOut(out); err != nil {
			return sandbox.Stdio{}, err
		}
		if errw, err = j.relayOut(errw); err != nil {
			return sandbox.Stdio{}, err
		}
	}
	return sandbox.Stdio{Stdin: in, Stdout: out, Stderr: errw}, nil
}

// relayOut puts a pipe between the job and f when f is a terminal. The
// write end is closed once the job ended (the init holds its own copy
// until then), and the relay drains before the report is made.
func (j *Job) relayOut(f *os.File) (*os.File, error) {
	if f == nil || !isTerminal(f) {
		return f, nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	drained := make(chan struct{})
	go func() {
		io.Copy(f, r)
		r.Close()
		close(drained)
	}()
	j.addRelay(func() {
		w.Close()
		<-drained
	})
	return w, nil
}

func (j *Job) addRelay(f func()) {
	j.mu.Lock()
	j.relays = append(j.relays, f)
	j.mu.Unlock()
}

// isTerminal: f is a terminal (any tty, the caller's or another's).
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// wantTTY decides whether the job gets a pty of its own.
func (j *Job) wantTTY() bool {
	switch {
	case j.req.TTY == "always":
		return true
	case j.req.TTY == "never", j.req.capture(), j.req.Console == nil:
		return false
	}
	return j.req.Stdin != nil && isTerminal(j.req.Stdin)
}

// Wait blocks until every process of the job is gone and returns the
// report. It never returns nil once Start was called; before that it
// blocks.
func (j *Job) Wait() *report.Report {
	<-j.done
	return j.rep
}

// Done is closed when the job has ended and its report is ready.
func (j *Job) Done() <-chan struct{} { return j.done }

// running marks the job started the moment the parent learns the target's
// execve succeeded, not when Start returns (a job that ends at once must
// not be marked running afterwards), and delivers the signals that came
// while it was starting (the target's output can arrive first).
func (j *Job) running(initPid int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.initPid, j.state = initPid, running
	for _, s := range j.pending {
		unix.Kill(initPid, s)
	}
	j.pending = nil
}

// Signal sends sig to the job: the init relays it to the target's process
// group, as a terminal would. SIGKILL ends the whole job (Kill). A signal
// sent while the job is starting is delivered once the target runs.
func (j *Job) Signal(sig os.Signal) error {
	s, ok := sig.(unix.Signal)
	if !ok {
		return fmt.Errorf("signal %v: not a unix signal", sig)
	}
	if s == unix.SIGKILL {
		return j.Kill()
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	switch j.state {
	case starting:
		// The target may already run (its output can arrive before the
		// parent learns it started): deliver once it is known to.
		j.pending = append(j.pending, s)
		return nil
	case running:
		return unix.Kill(j.initPid, s)
	}
	return ErrEnded
}

// Kill ends every process of the job; the verdict is XX ("killed by
// closet") unless the job ended first.
func (j *Job) Kill() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cancel == nil || j.state == ended {
		return ErrEnded
	}
	j.cancel()
	return nil
}

// AddPaths makes store paths, with their closures, appear read-only in the
// running job's /nix/store, and holds them as GC roots for the job's life,
// before it returns. Paths already visible are no-ops; nothing is ever
// removed. A path that is not a valid store path is an error and changes
// nothing. Before Start the paths join the view the job starts with.
func (j *Job) AddPaths(ctx context.Context, paths []string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.state == ended || j.state == starting {
		if j.state == ended {
			return ErrEnded
		}
		return errors.New("add paths: the job is starting; try again once Start returned")
	}
	ps := make([]storepath.Path, 0, len(paths))
	for _, p := range paths {
		sp, err := storepath.Parse(p)
		if err != nil {
			return fmt.Errorf("add paths: %w", err)
		}
		ps = append(ps, sp)
	}
	if err := j.st.CheckValid(ctx, ps...); err != nil {
		return fmt.Errorf("add paths: %w", err)
	}
	c, err := j.st.Closure(ctx, ps, true) // with references: ReferencesFirst orders by them
	if err != nil {
		return fmt.Errorf("add paths: %w", err)
	}
	// References first: the job never sees a path whose references are
	// missing.
	visible := j.visibleSet()
	fresh := closure.ReferencesFirst(c.Paths, func(p storepath.Path) bool { return visible[string(p)] })
	if len(fresh) == 0 {
		return nil
	}
	if j.state == prepared {
		j.spec.Store = append(j.spec.Store, fresh...)
		sort.Strings(j.spec.Store)
		j.spec.ClosureHash = ClosureHash(j.spec.Store)
		j.roots = append(j.roots, ps...)
		j.markVisible(fresh)
		return nil
	}
	if j.cachedView {
		// Its tmpfs is shared with every copy and read-only at the
		// superblock (internal/viewcache): no mount point can be made.
		return errors.New("add paths: the job runs in a copy of a cached store view, which cannot grow; start jobs that add paths without Request.Views")
	}
	if j.hold != nil {
		// Pinned before the job can see them.
		if err := j.hold.Add(ps); err != nil {
			return fmt.Errorf("add paths: %w", err)
		}
	}
	if j.grow == nil {
		return errors.New("add paths: this sandbox has no control channel to grow its view")
	}
	if err := j.grow.AddPaths(ctx, fresh); err != nil {
		return fmt.Errorf("add paths: %w", err)
	}
	j.markVisible(fresh)
	return nil
}

// markVisible records paths as in the view; j.mu is held.
func (j *Job) markVisible(paths []string) {
	visible := j.visibleSet()
	for _, p := range paths {
		visible[p] = true
	}
	j.added = append(j.added, paths...)
}

// visibleSet is the set of store paths in the job's view, made on the
// first AddPaths (most jobs never grow; at 10,000 paths the set took half
// a millisecond of Prepare): the spec's paths and those added since. j.mu
// is held.
func (j *Job) visibleSet() map[string]bool {
	if j.visible == nil {
		j.visible = make(map[string]bool, len(j.spec.Store)+len(j.added))
		for _, p := range j.spec.Store {
			j.visible[p] = true
		}
		for _, p := range j.added {
			j.visible[p] = true
		}
	}
	return j.visible
}

// Close releases what the job holds: the store's database and, for a job
// that never started, nothing else. A running job is killed first. Where
// the job has cgroups, Close returns once they are removed, after the
// sandbox's init has exited (its exit follows the job's end, see
// sandbox.Outcome.Gone); otherwise the init's exit goes on without it,
// and the sandbox reaps it.
func (j *Job) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	st := j.state
	j.mu.Unlock()
	if st == running || st == starting {
		j.Kill()
		<-j.done
	} else if st == prepared {
		j.stopNix()
		j.dropEarly()
	}
	j.mu.Lock()
	gone, mustWait := j.gone, j.mustWait
	j.mu.Unlock()
	if mustWait {
		<-gone
	}
	if j.realiseDir != "" {
		os.RemoveAll(j.realiseDir)
	}
	return j.st.Close()
}

// release drops the GC roots once every process of the job is gone.
func (j *Job) release() {
	j.mu.Lock()
	h := j.hold
	j.mu.Unlock()
	h.Release() // idempotent; nil-safe
}

// conclude turns the sandbox's outcome into the report.
func (j *Job) conclude(out *sandbox.Outcome, runErr error) {
	lim := j.req.Limits
	rj := report.Job{SetupErr: runErr, CPULimit: lim.CPUTime}
	r := &report.Report{Limits: j.limitsReport(out)}
	if out != nil {
		j.req.Logf("target ended: exit %d, signal %d, wall %v", out.Result.Code, out.Result.Signal, out.Wall.Round(time.Microsecond))
		res := out.Result
		rj.Exited, rj.Code, rj.Signal, rj.Limit = res.Exited, res.Code, res.Signal, out.Limit
		rj.CPU = time.Duration(res.UserUsec+res.SysUsec) * time.Microsecond
		switch {
		case out.Cgroup.HasCPU:
			rj.CPU = out.Cgroup.CPU
		case out.KillCPU > rj.CPU:
			rj.CPU = out.KillCPU
		}
		r.Exited, r.Signal = res.Exited, res.Signal
		if res.Exited {
			r.ExitCode = res.Code
		}
		r.Killed, r.Limit = out.Killed, out.Limit
		r.CPUTime = rj.CPU.Seconds()
		r.WallTime = out.Ended.Sub(out.Started).Seconds()
		// The job's own processes, sampled: the target's ru_maxrss would
		// carry the init's image (it was forked from it) across execve.
		r.MaxRSS = uint64(max(out.SampledMaxRSSKiB, 0)) * 1024
		r.PeakMemory = out.Cgroup.PeakMemory
		r.OOMKilled = out.Cgroup.OOMKills > 0
		r.Output, r.OutputKept = out.Output, out.OutputKept
	}
	r.Status, r.Message = report.Decide(rj)
	if runErr != nil {
		r.ClosetExit = setupExit(runErr)
	} else {
		r.ClosetExit = report.ExitCode(r.Status, r.ExitCode, r.Signal)
	}
	r.Confinement = confinement(j.spec)
	j.mu.Lock()
	r.Closure = report.Closure{Hash: j.spec.ClosureHash, Paths: len(j.spec.Store), Size: j.closureSize}
	r.AddedPaths = append([]string(nil), j.added...)
	r.HostIdentity = j.hostID
	r.WarmView = j.warmHit
	j.mu.Unlock()
	j.rep = r
}

// setupExit is closet's exit code for a job that never ran (or whose
// sandbox broke): 127 when the command was not found, 126 when it could
// not be executed, 125 otherwise.
func setupExit(err error) int {
	var se *stage.Error
	if errors.As(err, &se) && se.Op == "execve" {
		if errors.Is(err, unix.ENOENT) {
			return exitcode.NotFound
		}
		return exitcode.CannotExec
	}
	return exitcode.Sandbox
}

// limitsReport lists each limit given, its value and its mechanism.
func (j *Job) limitsReport(out *sandbox.Outcome) map[string]report.Limit {
	l := j.req.Limits
	m := map[string]report.Limit{}
	mech := func(name string) string {
		if out != nil && out.Enforced[name] != "" {
			return out.Enforced[name]
		}
		return "not set up"
	}
	dur := func(name string, d time.Duration) {
		if d > 0 {
			m[name] = report.Limit{Value: d.String(), Mechanism: mech(name)}
		}
	}
	num := func(name string, n uint64, mechanism string) {
		if n > 0 {
			m[name] = report.Limit{Value: fmt.Sprint(n), Mechanism: mechanism}
		}
	}
	dur(spec.LimitWall, l.WallTime)
	dur(spec.LimitCPU, l.CPUTime)
	dur(spec.LimitSilent, l.SilentTime)
	num(spec.LimitMemory, l.Memory, mech(spec.LimitMemory))
	num(spec.LimitPids, l.Pids, mech(spec.LimitPids))
	num(spec.LimitOutput, l.Output, mech(spec.LimitOutput))
	num("file-size", l.FileSize, "rlimit-fsize")
	num("open-files", l.OpenFiles, "rlimit-nofile")
	num("tmp-size", l.TmpSize, "tmpfs-size")
	return m
}

// confinement describes the fences of s for the report.
func confinement(s *spec.Spec) report.Confinement {
	c := report.Confinement{Seccomp: s.Seccomp, Landlock: "off", Network: "own"}
	if s.Network {
		c.Network = "host"
	}
	if s.Landlock != "off" {
		if abi := sandbox.LandlockABI(); abi > 0 {
			c.Landlock = fmt.Sprintf("abi %d", abi)
		} else {
			c.Landlock = "unavailable"
		}
	}
	return c
}
