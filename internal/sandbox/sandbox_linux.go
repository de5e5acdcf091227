// Package sandbox is the parent side of a run: it starts the init stage in
// fresh namespaces, hands it the spec, learns whether the target started,
// relays signals, and collects how the target ended.
//
// The parent is an ordinary multithreaded Go process on the host. Every
// namespace is created by clone(2) itself (the init's own clone, or
// exec.Cmd's SysProcAttr for a job with a host identity), so no thread ever
// changes namespace; the init stage is this same binary,
// re-executed from /proc/self/exe.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/cgroup"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/spec"
)

// Stdio is what the target gets as fds 0, 1 and 2.
type Stdio struct {
	Stdin, Stdout, Stderr *os.File
}

// Outcome is how a run ended.
type Outcome struct {
	Result stage.Result
	// Wall is from the init's clone to the job's end.
	Wall time.Duration
	// Started is when the target's execve succeeded; Ended when the last
	// process of the job was gone.
	Started, Ended time.Time

	// Limit names the limit that ended the job (spec.LimitWall, spec.LimitCPU,
	// spec.LimitSilent, spec.LimitOutput, spec.LimitMemory), or "".
	Limit string
	// Killed: closet (or the kernel's OOM killer) ended the job. When the
	// init itself was killed, Result holds the init's end and resource
	// use (its own and every process it reaped), not the target's.
	Killed bool
	// Enforced maps each parent-side limit (the Limit* names) to the
	// mechanism that enforced it, e.g. "cgroup-v1", "rlimit-as".
	Enforced map[string]string
	// Cgroup holds the job cgroup's figures; CPU there excludes the
	// setup before the target started.
	Cgroup cgroup.Stats
	// Output counts the bytes the job wrote to stdout and stderr, and
	// OutputKept those passed on; both zero unless the output was carried.
	Output, OutputKept uint64
	// SampledMaxRSSKiB is the largest resident set of any one process of
	// the job, closet's stages excluded (see MechRSSSampled): the job's
	// max-rss. (Result.MaxRSSKiB, ru_maxrss, carries the init's image,
	// which the target was forked from;
	// Cgroup.PeakMemory is the whole cgroup's, closet's init included.)
	SampledMaxRSSKiB int64
	// KillCPU is the job's CPU time when closet killed it, measured from
	// /proc where there is no cgroup (rusage misses what the kernel reaps
	// when a pid namespace dies).
	KillCPU time.Duration

	// Gone is closed once the init has been reaped and the job's cgroups
	// removed. Run returns as soon as every process of the job is gone,
	// which the init reports before its own exit (stage.Result.Alone); the
	// init's exit, the kernel's teardown of the sandbox's mounts and
	// namespaces (milliseconds at thousands of paths), goes on meanwhile,
	// and Run's own goroutine reaps it. Where the init had already exited
	// when Run returns, Gone is closed already.
	Gone <-chan struct{}
	// MustWait: the job's cgroups are removed only once Gone is closed; a
	// process that exits must wait for it first, or leave them behind.
	// Otherwise what is left is the init's exit alone, which the host
	// reaps when this process exits first.
	MustWait bool
}

// ErrSetup marks a failure of closet itself: nothing of the job ran.
var ErrSetup = errors.New("sandbox setup failed")

// Hooks lets the caller observe a run; all are optional.
type Hooks struct {
	// Started runs once the target's execve succeeded, with init's pid.
	Started func(initPid int)
	// Ready runs once the init is started and placed in its cgroups,
	// before the spec is sent (the init waits for it, blocked reading):
	// what must be done before any of the job's setup, done meanwhile
	// (the job's GC roots). Its error ends the run, returned as it is;
	// nothing of the job ran.
	Ready func() error
	// Console receives the job's pty master (spec.TTY) before the target
	// starts; the caller relays it and closes it.
	Console func(master *os.File)
	// Control receives the job's live-view control before the target
	// starts; it is valid until Run returns.
	Control func(*Control)
}

// LaunchOptions is everything the init's clone needs, all of it known
// before the spec: a caller that knows these from its request can launch
// the init (Launch) while it still reads the closure, and give the spec
// to the waiting init afterwards (Init.Run).
type LaunchOptions struct {
	// The spec's part, which Init.Run checks the spec agrees with: the
	// sandbox's ids (the uid and gid maps), whether it shares the host's
	// network (no CLONE_NEWNET), whether it gets a pty (the console
	// socket instead of stdio), and its limits (the cgroups, the rlimit
	// stand-ins, the output pipes).
	UID, GID     int
	Network, TTY bool
	Limits       spec.Limits

	// Stdio is what the target gets as fds 0-2 (unused with TTY).
	Stdio Stdio
	// Exe is the closet binary started as the init stage ("": this
	// process's own, /proc/self/exe). A program that is not closet, or
	// not a static build of it (a race-enabled test), names one here.
	Exe string
	// Identity, when set, runs the job as the host uid and gid of its
	// slot instead of the caller's (see Identity). The caller releases
	// it once Run has returned, or Close.
	Identity *Identity
	// View is a ready store view for this job (from viewcache.Cache.Take),
	// attached by the init instead of building one; nil: build it. The
	// caller closes it after Run returns. Such a view cannot grow: the
	// init refuses what Control asks.
	View *os.File
}

// For is o with the spec's part taken from s.
func (o LaunchOptions) For(s *spec.Spec) LaunchOptions {
	o.UID, o.GID, o.Network, o.TTY, o.Limits = s.UID, s.GID, s.Network, s.TTY, s.Limits
	return o
}

// agrees says where s differs from what the init was launched for.
func (o LaunchOptions) agrees(s *spec.Spec) error {
	a, b := o.Limits, s.Limits
	sameRlimits := maps.Equal(a.Rlimits, b.Rlimits)
	a.Rlimits, b.Rlimits = nil, nil
	switch {
	case o.UID != s.UID || o.GID != s.GID:
		return fmt.Errorf("the init was launched for ids %d:%d, the spec says %d:%d", o.UID, o.GID, s.UID, s.GID)
	case o.Network != s.Network:
		return fmt.Errorf("the init was launched for network sharing %v, the spec says %v", o.Network, s.Network)
	case o.TTY != s.TTY:
		return fmt.Errorf("the init was launched for tty %v, the spec says %v", o.TTY, s.TTY)
	case !sameRlimits || !reflect.DeepEqual(a, b):
		return fmt.Errorf("the init was launched for limits %+v, the spec says %+v", o.Limits, s.Limits)
	}
	return nil
}

// Run builds the sandbox s describes and runs its target to the end: it
// launches the init for s (Launch) and runs it (Init.Run). o's spec part
// is taken from s. An error wrapping ErrSetup (and a *stage.Error where
// one crossed the pipe) means the target never ran.
func Run(ctx context.Context, s *spec.Spec, o LaunchOptions, hooks Hooks) (*Outcome, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	in, err := Launch(o.For(s))
	if err != nil {
		return nil, err
	}
	return in.Run(ctx, s, hooks)
}

// Init is a launched init: cloned into its namespaces and placed in its
// cgroups, its ids mapped, and blocked reading the spec it has not been
// given. Nothing of the job has run. Exactly one of Run and Close must
// follow: Close kills and reaps an init that never got its spec, and
// removes its cgroups.
type Init struct {
	o  LaunchOptions
	jl *jobLimits
	// proc is the init; state is how it ended, once wait has returned.
	proc  *os.Process
	state *os.ProcessState
	// The parent's ends: the spec pipe, the status and result pipes, the
	// console socket (TTY) and the control socket.
	specW, statusR, resultR *os.File
	console                 *os.File
	ctl                     *Control
	// The init's ends, closed once it holds them; consoleChild until the
	// spec is sent (see Run).
	specR, statusW, resultW, ctlChild, consoleChild *os.File
	// wait reaps the init (once; any number of callers).
	wait       func() error
	begin      time.Time
	outStarted bool // the output pipes' copiers run (jobLimits.out)

	mu   sync.Mutex
	used bool // Run or Close was called
}

// Launch starts the init for o: the limits' cgroups and mechanisms are
// chosen, the init is cloned (every namespace at clone time, straight
// into its cgroup where the kernel allows), its ids are mapped and it is
// placed in its v1 cgroups. It returns with the init blocked reading its
// spec. An error wraps ErrSetup; nothing is left behind.
func Launch(o LaunchOptions) (_ *Init, err error) {
	if err := CheckUserNamespaces(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	// Limits: the cgroups exist, and every mechanism is chosen, before
	// anything starts. The init reads the rlimits from the spec.
	jl, err := newJobLimits(o.Limits, o.Identity != nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	in := &Init{o: o, jl: jl, used: true}
	defer func() {
		if err != nil {
			in.abort()
		}
	}()
	if in.specR, in.specW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	if in.statusR, in.statusW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	if in.resultR, in.resultW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}

	flags := unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP
	if !o.Network {
		flags |= unix.CLONE_NEWNET
	}
	stdio := o.Stdio
	cmd := &exec.Cmd{
		Path:       exeOr(o.Exe),
		Args:       []string{stage.Init},
		Env:        []string{stage.EnvMarker + "=" + stage.Init},
		Stdin:      stdio.Stdin,
		Stdout:     stdio.Stdout,
		Stderr:     stdio.Stderr,
		ExtraFiles: []*os.File{in.specR, in.statusW, in.resultW},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:                 uintptr(flags),
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: o.UID, HostID: os.Getuid(), Size: 1}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: o.GID, HostID: os.Getgid(), Size: 1}},
			GidMappingsEnableSetgroups: false,
			// The init needs these over its own namespaces only: mounts and
			// pivot_root, bringing lo up, rooting the live view's stager
			// thread at the store (chroot), capping the job's per-user
			// kernel quotas in its own user namespace (sys_resource), and
			// dropping the bounding set in the target's child. They are gone
			// before the target runs.
			AmbientCaps: []uintptr{unix.CAP_SYS_ADMIN, unix.CAP_NET_ADMIN, unix.CAP_SETPCAP, unix.CAP_SYS_CHROOT, unix.CAP_SYS_RESOURCE},
			Pdeathsig:   unix.SIGKILL,
			Setsid:      true,
		},
	}
	if stdio.Stdin == nil {
		cmd.Stdin = nil
	}
	if o.TTY {
		// The job's terminal is made inside; the init needs none of ours.
		cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
		if in.console, in.consoleChild, err = newConsoleSocket(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSetup, err)
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, in.consoleChild)
	}
	if o.Identity != nil {
		o.Identity.prepareClone(cmd)
	}
	// The control socket, whatever fds 6 and 7 are (a nil ExtraFiles
	// entry is closed in the init).
	if in.ctl, in.ctlChild, err = newControl(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	for len(cmd.ExtraFiles) < stage.ControlFD-3 {
		cmd.ExtraFiles = append(cmd.ExtraFiles, nil)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, in.ctlChild)
	if o.View != nil {
		// fd 9, after the control socket.
		cmd.ExtraFiles = append(cmd.ExtraFiles, o.View)
		cmd.Env = append(cmd.Env, stage.EnvView+"=1")
	}
	if f := jl.cg.JobProcs(); f != nil {
		// fd 10: the job's pids cgroup, which the target's child joins
		// first thing (see jobLimits.attach).
		for len(cmd.ExtraFiles) < stage.PidsFD-3 {
			cmd.ExtraFiles = append(cmd.ExtraFiles, nil)
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		cmd.Env = append(cmd.Env, stage.EnvPids+"=1")
	}
	if jl.out != nil {
		cmd.Stdout, cmd.Stderr = jl.out.wOut, jl.out.wErr
	}
	if fd := jl.cg.FD(); fd >= 0 {
		// cgroup v2: the init is born in the job's cgroup (clone3 with
		// CLONE_INTO_CGROUP; with a pids limit, in the init's part of
		// it); it never runs anywhere else.
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = fd
	}

	// Pdeathsig fires when the thread that forked the init exits, not the
	// process: start and wait on one locked thread. A job that runs as the
	// caller gets the init's own clone, which shares closet's memory
	// (startInit); one with an Identity, whose maps the parent writes,
	// gets os/exec's.
	startc := make(chan error, 1)
	waitc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if !useInitClone(o) {
			err := cmd.Start()
			in.proc = cmd.Process
			startc <- err
			if err == nil {
				err = cmd.Wait()
				in.state = cmd.ProcessState
				waitc <- err
			}
			return
		}
		var err error
		in.proc, err = startInit(cmd)
		startc <- err
		if err == nil {
			in.state, err = in.proc.Wait()
			if err == nil && !in.state.Success() {
				err = &exec.ExitError{ProcessState: in.state}
			}
			waitc <- err
		}
	}()
	if err := <-startc; err != nil {
		var child *initChildError
		if errors.As(err, &child) {
			return nil, fmt.Errorf("%w: start init: %w", ErrSetup, err)
		}
		return nil, fmt.Errorf("%w: start init: %v%s", ErrSetup, err, cloneHint(err))
	}
	in.wait = sync.OnceValue(func() error { return <-waitc })
	in.begin = time.Now()
	if o.Identity != nil {
		// Before the spec is sent: the init is still blocked reading it.
		if err := o.Identity.writeMaps(in.proc.Pid, o.UID, o.GID); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSetup, err)
		}
	}
	in.specR.Close()
	in.statusW.Close()
	in.resultW.Close()
	in.ctlChild.Close()
	if jl.out != nil {
		jl.out.start(writerOf(stdio.Stdout), writerOf(stdio.Stderr))
		in.outStarted = true
	}
	jl.setKill(func() {
		jl.cg.Kill()
		in.proc.Kill()
	})
	// cgroup v1 has no CLONE_INTO_CGROUP: the init is placed now, right
	// after clone. No job code can have run yet: the init is closet itself,
	// blocked reading the spec, which Run sends only once the init is in
	// place; and the init's children inherit its cgroups.
	if err := jl.attach(in.proc.Pid); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	in.used = false
	return in, nil
}

// Pid is the init's pid on the host.
func (in *Init) Pid() int { return in.proc.Pid }

// take claims the init for Run or Close; false when one of them had it.
func (in *Init) take() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.used {
		return false
	}
	in.used = true
	return true
}

// Close kills and reaps an init that Run was never given, closes every
// fd of it and removes its cgroups; it returns once they are gone. After
// Run (or a second Close) it does nothing.
func (in *Init) Close() error {
	if in.take() {
		in.abort()
	}
	return nil
}

// abort ends a launch that will not run: the init (if it was cloned) is
// killed and reaped, and everything Launch made is closed or removed.
// Nothing of the job ran: the init was blocked reading its spec.
func (in *Init) abort() {
	if in.proc != nil {
		in.proc.Kill()
		in.wait()
	}
	for _, f := range []*os.File{in.specR, in.specW, in.statusR, in.statusW, in.resultR, in.resultW, in.console, in.consoleChild, in.ctlChild} {
		if f != nil {
			f.Close()
		}
	}
	if in.ctl != nil {
		in.ctl.close()
	}
	if in.jl.out != nil {
		if in.outStarted {
			in.jl.outWait() // EOF now that the init is gone
		} else {
			in.jl.out.abort()
		}
	}
	in.jl.stop()
	in.jl.cg.Remove()
}

// Run gives the launched init its spec and runs the target to the end. s
// must agree with the LaunchOptions the init was launched for (ids,
// network, pty, limits), or nothing runs. Run is called at most once, and
// never after Close; whatever it returns, the init is then Run's (no
// Close is needed). An error wrapping ErrSetup (and a *stage.Error where
// one crossed the pipe) means the target never ran.
func (in *Init) Run(ctx context.Context, s *spec.Spec, hooks Hooks) (*Outcome, error) {
	if !in.take() {
		return nil, fmt.Errorf("%w: this init was run or closed already", ErrSetup)
	}
	err := s.Validate()
	if err == nil {
		err = in.o.agrees(s)
	}
	if err != nil {
		in.abort()
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	jl := in.jl
	// Removed before Run returns, except when the init is reaped in the
	// background (see Outcome.Gone): then once it has been.
	removeCgroup := true
	defer func() {
		if removeCgroup {
			jl.cg.Remove()
		}
	}()
	defer jl.stop()
	defer in.specW.Close()
	defer in.statusR.Close()
	defer in.resultR.Close()
	defer in.ctl.close()
	if in.console != nil {
		defer in.console.Close()
		defer in.consoleChild.Close()
	}
	sent := *s
	sent.Limits.Rlimits = jl.rlimits
	sent.OwnHostID = in.o.Identity != nil
	if in.o.View != nil {
		// The init attaches the view whole and never reads the list:
		// at 10,000 paths it is 600 KB less to encode and decode.
		sent.Store = nil
	}
	s = &sent
	// kill ends a run whose target never started.
	kill := func() {
		in.proc.Kill()
		in.wait()
		jl.outWait()
	}

	stop := context.AfterFunc(ctx, func() { in.proc.Kill() })
	defer stop()

	if hooks.Ready != nil {
		if err := hooks.Ready(); err != nil {
			kill()
			return nil, err
		}
	}
	// The spec goes in one write; init reads it to EOF.
	if err := sendSpec(in.specW, s); err != nil {
		kill()
		return nil, fmt.Errorf("%w: send spec: %v", ErrSetup, err)
	}
	in.specW.Close()

	if in.console != nil {
		in.consoleChild.Close()
		master, err := recvConsole(in.console)
		if err != nil {
			kill()
			return nil, fmt.Errorf("%w: %v", ErrSetup, err)
		}
		if master != nil && hooks.Console != nil {
			hooks.Console(master)
		} else if master != nil {
			master.Close()
		}
	}
	if hooks.Control != nil {
		hooks.Control(in.ctl)
	}
	if err := stage.ReadStatus(in.statusR); err != nil {
		in.wait()
		jl.outWait()
		return nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	out := &Outcome{Started: time.Now(), Enforced: jl.enforced}
	if err := jl.started(in.proc.Pid); err != nil {
		kill()
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	if hooks.Started != nil {
		hooks.Started(in.proc.Pid)
	}
	// One Result, then EOF once the init is gone.
	var res stage.Result
	resErr := json.NewDecoder(in.resultR).Decode(&res)
	var waitErr error
	alone := resErr == nil && res.Alone
	if !alone {
		waitErr = in.wait()
		// The init is gone, so is its pid namespace and every process in
		// it (the kernel kills and reaps them before the init's wait
		// returns).
	}
	// Every process of the job is gone: the init killed and reaped them
	// before it sent an Alone result, or it has exited itself. The output
	// pipes reach EOF (the init let go of its own copies before an Alone
	// result), and the cgroup has accounted for every process it held but
	// the init, which does nothing now but exit.
	jl.stop()
	out.SampledMaxRSSKiB = jl.rssKiB
	if jl.out != nil {
		out.Output, out.OutputKept = jl.out.wait()
	}
	out.Ended = time.Now()
	out.Wall = out.Ended.Sub(in.begin)
	out.Cgroup = jl.cg.Stats()
	if out.Cgroup.HasCPU {
		out.Cgroup.CPU -= jl.cpu0
	}
	out.Limit, out.KillCPU = jl.limitHit()
	if out.Limit == "" && out.Cgroup.OOMKills > 0 {
		out.Limit = spec.LimitMemory
	}
	out.Killed = out.Limit != ""
	gone := make(chan struct{})
	out.Gone = gone
	if alone {
		// The init's exit, and the kernel's teardown of the sandbox with
		// it, goes on without the caller: reaped here (no zombie is left
		// in a long-lived process), and the cgroups, which can only be
		// removed once it is gone, then.
		removeCgroup = false
		out.MustWait = jl.cg != nil
		go func() {
			in.wait()
			jl.cg.Remove()
			close(gone)
		}()
	} else {
		jl.cg.Remove()
		close(gone)
	}
	if resErr == io.EOF {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %v", ErrSetup, ctx.Err())
		}
		if !out.Killed || in.state == nil {
			return nil, fmt.Errorf("%w: the sandbox's init ended without a result (%v)", ErrSetup, waitErr)
		}
		// A limit killed the init: its end and resource use stand in for
		// the target's.
		out.Result = initResult(in.state)
		return out, nil
	}
	if resErr != nil {
		return nil, fmt.Errorf("%w: unreadable result from init: %v", ErrSetup, resErr)
	}
	out.Result = res
	return out, nil
}

// sendSpec writes s on the spec pipe in one write. A spec larger than a
// pipe's default 64 KB (about 1,000 store paths) gets a pipe that holds it
// whole where the host allows (up to 1 MB unprivileged), so the write is
// done before the init starts reading: at 10,000 paths, 600 KB that
// otherwise crossed in 64 KB turns between the two processes.
func sendSpec(w *os.File, s *spec.Spec) error {
	b := s.MarshalWire()
	if n := len(b); n > 64<<10 {
		if rc, err := w.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				unix.FcntlInt(fd, unix.F_SETPIPE_SZ, min(n, 1<<20)) // best effort
			})
		}
	}
	_, err := w.Write(b)
	return err
}

func exeOr(exe string) string {
	if exe == "" {
		return "/proc/self/exe"
	}
	return exe
}

// initResult is the init's own end as a Result.
func initResult(ps *os.ProcessState) stage.Result {
	var r stage.Result
	ws, _ := ps.Sys().(syscall.WaitStatus)
	r.Exited = ws.Exited()
	r.Code = ws.ExitStatus()
	if ws.Signaled() {
		r.Signal = int(ws.Signal())
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		r.UserUsec = ru.Utime.Sec*1e6 + ru.Utime.Usec
		r.SysUsec = ru.Stime.Sec*1e6 + ru.Stime.Usec
		r.MaxRSSKiB = ru.Maxrss
	}
	return r
}

// writerOf is f as an io.Writer, nil when f is.
func writerOf(f *os.File) io.Writer {
	if f == nil {
		return nil
	}
	return f
}

// CheckUserNamespaces says, before anything starts, why unprivileged user
// namespaces are unavailable, naming the knob to turn.
func CheckUserNamespaces() error { return checkUserNamespaces("/proc/sys", os.Geteuid()) }

// userNSKnobs are the host settings that switch unprivileged user
// namespaces off, with the value that does and the fix.
var userNSKnobs = []struct{ file, bad, fix string }{
	{"kernel/unprivileged_userns_clone", "0", "sysctl kernel.unprivileged_userns_clone=1"},
	{"user/max_user_namespaces", "0", "sysctl user.max_user_namespaces=15000"},
	{"kernel/apparmor_restrict_unprivileged_userns", "1", "sysctl kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile for closet that allows userns"},
}

func checkUserNamespaces(procSys string, euid int) error {
	for _, k := range userNSKnobs {
		b, err := os.ReadFile(filepath.Join(procSys, k.file))
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == k.bad {
			if k.bad == "1" && euid == 0 {
				continue // AppArmor's restriction spares root
			}
			return fmt.Errorf("unprivileged user namespaces are disabled on this host (%s is %s); closet needs them: %s", filepath.Join(procSys, k.file), k.bad, k.fix)
		}
	}
	return nil
}

// cloneHint explains a failed clone of the init in terms of the host's
// settings, for the kernels and LSMs that refuse without a knob to read.
func cloneHint(err error) string {
	switch {
	case errors.Is(err, unix.ENOSPC):
		return "; the per-user limit of user namespaces is reached (user.max_user_namespaces)"
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return "; the host refuses unprivileged user namespaces (a sysctl, an AppArmor or SELinux policy, or a container's seccomp profile); closet cannot run without them"
	}
	return ""
}
