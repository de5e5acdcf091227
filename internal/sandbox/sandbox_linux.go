// Package sandbox is the parent side of a run: it starts the init stage in
// fresh namespaces, hands it the spec, learns whether the target started,
// relays signals, and collects how the target ended.
//
// The parent is an ordinary multithreaded Go process on the host. Every
// namespace is created by clone(2) itself (exec.Cmd's SysProcAttr), so no
// thread ever changes namespace; the init stage is this same binary,
// re-executed from /proc/self/exe.
package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
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
	Wall   time.Duration
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
	// Exe is the closet binary started as the init stage ("": this
	// process's own, /proc/self/exe). A program that is not closet, or
	// not a static build of it (a race-enabled test), names one here.
	Exe string
	// Identity, when set, runs the job as the host uid and gid of its
	// slot instead of the caller's (see Identity). Not a hook: it goes
	// with the start options once Run is split.
	Identity *Identity
	// View is a ready store view for this job (from viewcache.Cache.Take),
	// attached by the init instead of building one; nil: build it. The
	// caller closes it after Run returns. Such a view cannot grow: the
	// init refuses what Control asks.
	View *os.File
}

// Run builds the sandbox s describes and runs its target to the end.
// An error wrapping ErrSetup (and a *stage.Error where one crossed the
// pipe) means the target never ran.
func Run(ctx context.Context, s *spec.Spec, stdio Stdio, hooks Hooks) (*Outcome, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	if err := CheckUserNamespaces(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	// Limits: the cgroups exist, and every mechanism is chosen, before
	// anything starts. The init reads the rlimits from the spec.
	jl, err := newJobLimits(s.Limits, hooks.Identity != nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	// Removed before Run returns, except when the init is reaped in the
	// background (see Outcome.Gone): then once it has been.
	removeCgroup := true
	defer func() {
		if removeCgroup {
			jl.cg.Remove()
		}
	}()
	defer jl.stop()
	sent := *s
	sent.Limits.Rlimits = jl.rlimits
	sent.OwnHostID = hooks.Identity != nil
	s = &sent
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	resultR, resultW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer specW.Close()
	defer statusR.Close()
	defer resultR.Close()

	flags := unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP
	if !s.Network {
		flags |= unix.CLONE_NEWNET
	}
	cmd := &exec.Cmd{
		Path:       exeOr(hooks.Exe),
		Args:       []string{stage.Init},
		Env:        []string{stage.EnvMarker + "=" + stage.Init},
		Stdin:      stdio.Stdin,
		Stdout:     stdio.Stdout,
		Stderr:     stdio.Stderr,
		ExtraFiles: []*os.File{specR, statusW, resultW},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:                 uintptr(flags),
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: s.UID, HostID: os.Getuid(), Size: 1}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: s.GID, HostID: os.Getgid(), Size: 1}},
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
	var console *os.File
	if s.TTY {
		// The job's terminal is made inside; the init needs none of ours.
		cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
		var child *os.File
		if console, child, err = newConsoleSocket(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSetup, err)
		}
		defer console.Close()
		defer child.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, child)
	}
	if hooks.Identity != nil {
		hooks.Identity.prepareClone(cmd)
	}
	// The control socket, whatever fds 6 and 7 are (a nil ExtraFiles
	// entry is closed in the init).
	ctl, ctlChild, err := newControl()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	defer ctl.close()
	defer ctlChild.Close()
	for len(cmd.ExtraFiles) < stage.ControlFD-3 {
		cmd.ExtraFiles = append(cmd.ExtraFiles, nil)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, ctlChild)
	if hooks.View != nil {
		// fd 9, after the control socket.
		cmd.ExtraFiles = append(cmd.ExtraFiles, hooks.View)
		cmd.Env = append(cmd.Env, stage.EnvView+"=1")
		// The init attaches the view whole and never reads the list:
		// at 10,000 paths it is 600 KB less to encode and decode. (s is
		// this call's copy of the caller's spec.)
		s.Store = nil
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
	// process: start and wait on one locked thread.
	type started struct {
		err error
	}
	startc := make(chan started, 1)
	waitc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		startc <- started{err}
		if err != nil {
			return
		}
		waitc <- cmd.Wait()
	}()
	if st := <-startc; st.err != nil {
		specR.Close()
		statusW.Close()
		resultW.Close()
		if jl.out != nil {
			jl.out.abort()
		}
		return nil, fmt.Errorf("%w: start init: %v%s", ErrSetup, st.err, cloneHint(st.err))
	}
	begin := time.Now()
	if hooks.Identity != nil {
		// Before the spec is sent: the init is still blocked reading it.
		if err := hooks.Identity.writeMaps(cmd.Process.Pid, s); err != nil {
			cmd.Process.Kill()
			specR.Close()
			statusW.Close()
			resultW.Close()
			<-waitc
			if jl.out != nil {
				jl.out.abort()
			}
			return nil, fmt.Errorf("%w: %v", ErrSetup, err)
		}
	}
	specR.Close()
	statusW.Close()
	resultW.Close()
	ctlChild.Close()
	if jl.out != nil {
		jl.out.start(writerOf(stdio.Stdout), writerOf(stdio.Stderr))
	}
	jl.setKill(func() {
		jl.cg.Kill()
		cmd.Process.Kill()
	})
	// cgroup v1 has no CLONE_INTO_CGROUP: the init is placed now, right
	// after clone. No job code can have run yet: the init is closet itself,
	// blocked reading the spec, which is sent below, only once the init is
	// in place; and the init's children inherit its cgroups.
	if err := jl.attach(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		<-waitc
		jl.outWait()
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}

	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	defer stop()

	if hooks.Ready != nil {
		if err := hooks.Ready(); err != nil {
			cmd.Process.Kill()
			<-waitc
			jl.outWait()
			return nil, err
		}
	}
	// The spec goes in one write; init reads it to EOF.
	if err := sendSpec(specW, s); err != nil {
		cmd.Process.Kill()
		<-waitc
		jl.outWait()
		return nil, fmt.Errorf("%w: send spec: %v", ErrSetup, err)
	}
	specW.Close()

	if console != nil {
		cmd.ExtraFiles[stage.ConsoleFD-3].Close()
		master, err := recvConsole(console)
		if err != nil {
			cmd.Process.Kill()
			<-waitc
			return nil, fmt.Errorf("%w: %v", ErrSetup, err)
		}
		if master != nil && hooks.Console != nil {
			hooks.Console(master)
		} else if master != nil {
			master.Close()
		}
	}
	if hooks.Control != nil {
		hooks.Control(ctl)
	}
	if err := stage.ReadStatus(statusR); err != nil {
		<-waitc
		jl.outWait()
		return nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	out := &Outcome{Started: time.Now(), Enforced: jl.enforced}
	if err := jl.started(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		<-waitc
		jl.outWait()
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	if hooks.Started != nil {
		hooks.Started(cmd.Process.Pid)
	}
	// One Result, then EOF once the init is gone.
	var res stage.Result
	resErr := json.NewDecoder(resultR).Decode(&res)
	var waitErr error
	alone := resErr == nil && res.Alone
	if !alone {
		waitErr = <-waitc
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
	out.Wall = out.Ended.Sub(begin)
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
			<-waitc
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
		if !out.Killed || cmd.ProcessState == nil {
			return nil, fmt.Errorf("%w: the sandbox's init ended without a result (%v)", ErrSetup, waitErr)
		}
		// A limit killed the init: its end and resource use stand in for
		// the target's.
		out.Result = initResult(cmd.ProcessState)
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
	var buf bytes.Buffer
	if err := s.EncodeWire(&buf); err != nil {
		return err
	}
	if n := buf.Len(); n > 64<<10 {
		if rc, err := w.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				unix.FcntlInt(fd, unix.F_SETPIPE_SZ, min(n, 1<<20)) // best effort
			})
		}
	}
	_, err := w.Write(buf.Bytes())
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
