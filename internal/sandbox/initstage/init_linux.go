// Package initstage is pid 1 of the sandbox. It builds the sandbox's root
// from the spec (a tmpfs, the store view, /proc, a minimal /dev, /tmp, HOME,
// a synthetic /etc, the user's binds), pivots into it, forks the target
// (which confines itself and execve's, with no Go runtime of its own: see
// confineAndExec), reaps every process of the job, grows the store view when the
// parent asks (the live view, over stage.ControlFD), and reports how the
// target ended. On a warm start it attaches a copy of a cached view
// (stage.ViewFD), which cannot grow, instead of building one.
//
// It runs in the namespaces the parent created at clone time, as the
// sandbox's uid with CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_SETPCAP held as
// ambient capabilities over its own user namespace and nothing outside it
// (and CAP_SETUID and CAP_SETGID where the job has a host uid of its own,
// see takeIdentity).
// Every step here finishes before any job code runs.
package initstage

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/mountview"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/spec"
)

// state is what the steps share.
type state struct {
	s      *spec.Spec
	root   string     // the new root, before pivot_root: "." (the cwd), once mounted
	rootFD int        // the root tmpfs's mount
	trees  []userTree // the user's binds, cloned before the root exists
	dns    string     // the host's resolv.conf, with --network
	tty    *os.File   // the job's pty slave, with spec.TTY
	// status is the status pipe, held in one *os.File so that no
	// finalizer of a second wrapper closes fd 4 behind init's back.
	status *os.File
	target *launch // what the target's child needs, prepared after pivot_root
	// seccomp delivers the compiled filter, once.
	seccomp chan compiledFilter
	// lo delivers the outcome of bringing lo up, once.
	lo chan error

	// The live view: the control socket, the view and the stager thread
	// that clones later paths from the store.
	ctl    *os.File
	view   *mountview.View
	stager *mountview.Stager
	// sigs receives the signals the init relays to the target;
	// signalsSet is closed once they are caught and the init survives
	// the ones it does not relay (catchSignals).
	sigs       chan os.Signal
	signalsSet chan struct{}
}

type userTree struct {
	m   spec.Mount
	fd  int
	dir bool
}

// Run is the init stage's main. It never returns.
func Run() {
	st := &state{status: os.NewFile(stage.StatusFD, "status"), sigs: make(chan os.Signal, 8), signalsSet: make(chan struct{})}
	// First, and off the steps' path: os/signal enables each relayed
	// signal in a round trip with the runtime's signal thread, which it
	// starts first (the six took 0.8 ms on a loaded 2-core VM).
	// runAndReap waits for them before the target can start.
	go st.catchSignals()
	var sb unix.Stat_t
	if unix.Fstat(stage.ControlFD, &sb) != nil || sb.Mode&unix.S_IFMT != unix.S_IFSOCK {
		stage.Fail(&stage.Error{Stage: stage.Init, Op: "open control channel", Msg: fmt.Sprintf("fd %d is not a socket", stage.ControlFD), Hint: "mixed closet binaries?"})
	}
	st.ctl = os.NewFile(stage.ControlFD, "control")
	f := os.NewFile(stage.SpecFD, "spec")
	s, err := spec.DecodeWire(f)
	f.Close()
	if err != nil {
		stage.Fail(stage.Errorf(stage.Init, "read spec", "", err))
	}
	st.s, st.rootFD = s, -1
	// Bringing lo up and the seccomp program depend on the spec alone:
	// done on another thread while the root is built (the step "bring up
	// lo" and prepareTarget take them).
	st.seccomp = make(chan compiledFilter, 1)
	st.lo = make(chan error, 1)
	go func() {
		st.lo <- loopbackUp(s.Network)
		prog, err := seccompProgram(s.Seccomp, s.Limits.Rlimits["AS"] > 0)
		st.seccomp <- compiledFilter{prog, err}
	}()

	// The order matters: nothing the job can touch exists before the root
	// is complete and pivoted into, and every user-named path is opened
	// before anything is mounted over the host's view of it.
	steps := []struct {
		name string
		fn   func(*state) error
	}{
		{"protect pid 1", protect},
		{"make mounts private", makePrivate},
		// Its own thread, overlapping the steps below; waited for only
		// before pivot_root.
		{"start stager", (*state).startStager},
		{"open user binds", (*state).openUserBinds},
		// After the binds are opened (as the caller, whose files they
		// are), before anything is made in the new root.
		{"take the job's host identity", takeIdentity},
		{"mount root", (*state).mountRoot},
		{"mount dev", (*state).mountDev},
		{"open console", (*state).openConsole},
		{"build store view", (*state).buildStoreView},
		{"mount proc", (*state).mountProc},
		{"cap user quotas", (*state).capUserQuotas},
		{"mask proc", (*state).maskProc},
		{"mount tmp and home", (*state).mountScratch},
		{"write etc", (*state).writeEtc},
		{"attach user binds", (*state).attachUserBinds},
		{"set hostname", (*state).setHostname},
		{"bring up lo", func(st *state) error { return <-st.lo }},
		{"wait for stager", (*state).waitStager},
		{"pivot root", (*state).pivotRoot},
		// In the sandbox's root: the Landlock rules bind to its inodes.
		{"prepare the target", (*state).prepareTarget},
	}
	for _, step := range steps {
		if err := step.fn(st); err != nil {
			stage.Fail(stage.Errorf(stage.Init, step.name, "", err))
		}
	}
	os.Exit(st.runAndReap())
}

// protect makes pid 1 non-dumpable, so the job (same uid, same user
// namespace) can neither ptrace it nor open its /proc files and fds: pid 1
// holds capabilities over the sandbox's namespaces and the parent's pipes.
// The result pipe and the control socket are marked close-on-exec so that
// only init holds them.
//
// The signal handlers (catchSignals) are installed off the critical path
// from the start of Run, and waited for before the target can start.
func protect(st *state) error {
	unix.CloseOnExec(stage.ResultFD)
	unix.CloseOnExec(stage.ControlFD)
	unix.CloseOnExec(stage.ViewFD) // EBADF without a cached view: nothing to do
	unix.CloseOnExec(stage.PidsFD) // EBADF without a pids cgroup: likewise
	return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}

// catchSignals catches the relayed signals on st.sigs, which runAndReap
// relays to the target once it runs (one sent earlier waits there, as the
// parent's own relay holds signals until the target runs), and makes the
// init survive the others (dropSignals). It closes st.signalsSet when
// done.
func (st *state) catchSignals() {
	signal.Notify(st.sigs, relayed...)
	dropSignals()
	close(st.signalsSet)
}

// relayed are the signals init passes on to the target (runAndReap); they
// are what the parent relays from closet.
var relayed = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

// dropSignals makes init survive every catchable signal it does not relay.
// The kernel delivers a signal from inside the pid namespace to its init
// only when init has a handler; the Go runtime installs one for nearly
// every signal, and for many (SIGABRT, SIGTRAP, SIGILL, SIGSYS, SIGSTKFLT,
// a kill(2)'d SIGSEGV, SIGALRM, SIGXCPU...) that handler ends the process.
// A job that could kill init would turn its own failure into closet's
// (XX) where Landlock cannot scope signals.
//
// The asynchronous ones (ignoredSignals) are ignored: the kernel then
// drops them. The synchronous faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
// SIGTRAP, SIGSTKFLT, SIGSYS), whose handler the runtime keeps whatever
// os/signal is asked, are caught and dropped (Notify), as is anything
// else. Ignoring rather than catching the others: os/signal enables each
// caught signal in a round trip with the runtime's signal thread, and
// ignores one with a single sigaction. An ignored disposition would be
// inherited by the target across fork and execve, so the target's child
// sets each of ignoredSignals back to the default first thing
// (confineAndExec); a caught one the runtime's fork hook resets
// (rawclone.AfterForkInChild).
//
// Left alone: SIGKILL and SIGSTOP (the kernel drops them from inside the
// namespace), SIGCHLD (init waits for children), the job-control stops
// and SIGCONT (no Go handler, so the kernel drops them too), SIGURG (the
// runtime's preemption) and the relayed signals, which runAndReap takes.
func dropSignals() {
	var drop []os.Signal
	for s := unix.Signal(1); s < 32; s++ {
		switch s {
		case unix.SIGKILL, unix.SIGSTOP, unix.SIGCHLD, unix.SIGCONT, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU, unix.SIGURG:
			continue
		}
		if slices.Contains(relayed, os.Signal(s)) || slices.Contains(ignoredSignals, s) {
			continue
		}
		drop = append(drop, s)
	}
	ignore := make([]os.Signal, len(ignoredSignals))
	for i, s := range ignoredSignals {
		ignore[i] = s
	}
	signal.Ignore(ignore...)
	c := make(chan os.Signal, 1)
	signal.Notify(c, drop...)
	go func() {
		for range c {
		}
	}()
}

// ignoredSignals are the signals the init ignores (dropSignals) and the
// target's child resets to the default.
var ignoredSignals = []unix.Signal{unix.SIGABRT, unix.SIGPIPE, unix.SIGALRM, unix.SIGXCPU, unix.SIGXFSZ, unix.SIGVTALRM, unix.SIGWINCH, unix.SIGIO, unix.SIGPWR}

// makePrivate stops mount events from propagating back to the host.
func makePrivate(*state) error {
	return unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
}

// openUserBinds clones each user-named path (cwd, --expose, --share) into a
// detached mount. The path is opened with openat2 and RESOLVE_NO_SYMLINKS,
// so a symlink swapped in anywhere along it fails the run instead of
// redirecting the bind; the clone then pins what was opened.
func (st *state) openUserBinds() error {
	ms := append([]spec.Mount(nil), st.s.Mounts...)
	// Parents before children, so a bind inside another lands on top.
	sort.SliceStable(ms, func(i, j int) bool { return depth(ms[i].Target) < depth(ms[j].Target) })
	for _, m := range ms {
		fd, err := unix.Openat2(unix.AT_FDCWD, m.Source, &unix.OpenHow{
			// No O_NOFOLLOW: with O_PATH it would return the link itself;
			// without it RESOLVE_NO_SYMLINKS refuses a trailing link too.
			Flags:   unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			e := stage.Errorf(stage.Init, "open "+m.Why, m.Source, err)
			if err == unix.ELOOP {
				e.Hint = "a symlink is in the path; closet does not follow symlinks in paths it binds: name the real path"
			}
			return e
		}
		var sb unix.Stat_t
		if err := unix.Fstat(fd, &sb); err != nil {
			unix.Close(fd)
			return stage.Errorf(stage.Init, "stat "+m.Why, m.Source, err)
		}
		tree, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
		unix.Close(fd)
		if err != nil {
			return stage.Errorf(stage.Init, "clone "+m.Why, m.Source, err)
		}
		st.trees = append(st.trees, userTree{m: m, fd: tree, dir: sb.Mode&unix.S_IFMT == unix.S_IFDIR})
	}
	if st.s.Network {
		b, err := os.ReadFile("/etc/resolv.conf")
		if err == nil {
			st.dns = string(b)
		}
	}
	return nil
}

func depth(p string) int { return strings.Count(p, "/") }

// mountRoot makes the new root's tmpfs without any directory of the host:
// a detached tmpfs (fsopen, fsmount) attached over init's own "/" in its
// private mount namespace. A lookup from init's root never crosses a mount
// on that root itself, so the host's paths still resolve for the steps
// below, while the new root is reached through its fd alone
// (/proc/self/fd/N). Nothing is created on the host, so nothing is left
// there when closet is killed.
func (st *state) mountRoot() error {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return stage.Errorf(stage.Init, "fsopen tmpfs", "/", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "mode", "0755"); err != nil {
		return stage.Errorf(stage.Init, "configure tmpfs", "/", err)
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return stage.Errorf(stage.Init, "create tmpfs", "/", err)
	}
	fd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return stage.Errorf(stage.Init, "fsmount tmpfs", "/", err)
	}
	st.rootFD = fd
	// pivot_root wants the new root attached in this namespace.
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, "/", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return stage.Errorf(stage.Init, "attach the root tmpfs", "/", err)
	}
	// The steps below name the new root's paths relative to the working
	// directory, the root itself ("." for st.root): shorter walks than
	// through /proc/self/fd/N. Absolute paths still name the host's.
	if err := unix.Fchdir(fd); err != nil {
		return stage.Errorf(stage.Init, "enter the root tmpfs", "/", err)
	}
	st.root = "."
	// Relative to the root's fd: no walk through /proc/self/fd per call.
	for _, d := range []string{"nix", "nix/store", "proc", "dev", "tmp", "etc", "bin", "usr", "usr/bin"} {
		if err := unix.Mkdirat(fd, d, 0o755); err != nil {
			return stage.Errorf(stage.Init, "mkdir", "/"+d, err)
		}
	}
	// /bin/sh and /usr/bin/env, which #! lines name, as the parent chose
	// them from the roots.
	for link, target := range st.s.Links {
		if err := unix.Symlinkat(target, fd, strings.TrimPrefix(link, "/")); err != nil {
			return stage.Errorf(stage.Init, "symlink", link, err)
		}
	}
	return nil
}

// cachedView says whether the parent passed a copy of a cached view of
// exactly this closure (internal/viewcache) on stage.ViewFD.
func cachedView() bool { return os.Getenv(stage.EnvView) == "1" }

// buildStoreView mounts /nix/store with exactly the closure: a copy of a
// cached view of exactly this closure when the parent passed one, else
// one bind per path (a view that can grow).
func (st *state) buildStoreView() (err error) {
	target := filepath.Join(st.root, "nix/store")
	if !cachedView() {
		st.view, err = mountview.Build(target, st.s.StoreRoot, st.s.Store)
		return err
	}
	defer unix.Close(stage.ViewFD)
	// No process started after this reads /proc/self/mountinfo (10,000
	// lines at 10,000 paths): the target is forked, not a Go program.
	// st.view stays nil: a copy shares its tmpfs with every other copy
	// and cannot grow (serveControl says so).
	return mountview.Attach(target, stage.ViewFD)
}

// startStager starts the thread the view grows from (mountview.Stager).
// A cached view cannot grow: no stager (and no copy of the namespace).
func (st *state) startStager() error {
	if !cachedView() {
		st.stager = mountview.StartStager(st.s.StoreRoot)
	}
	return nil
}

// waitStager waits until the stager has its own copy of init's mount
// namespace, which must be made before pivot_root (see
// mountview.StartStager); by now it long has.
// A stager that failed does not fail the run: the job is what it would
// have been; a request to grow its view answers why it cannot.
func (st *state) waitStager() error {
	if st.stager != nil {
		st.stager.Unshared()
	}
	return nil
}

// serveControl answers the parent's requests to grow the view, one at a
// time, until the parent closes the socket or init exits.
func (st *state) serveControl() {
	dec := json.NewDecoder(st.ctl)
	enc := json.NewEncoder(st.ctl)
	for {
		var req stage.Control
		if err := dec.Decode(&req); err != nil {
			return
		}
		var rep stage.ControlReply
		if st.view == nil {
			rep.Error = &stage.Error{Stage: stage.Init, Op: "add store path", Msg: "the job runs in a copy of a cached store view, which cannot grow", Hint: "start jobs that add paths without a view cache"}
		} else if _, err := st.view.Add(st.stager, req.Add); err != nil {
			e := stage.Errorf(stage.Init, "add store path", "", err)
			var pe *mountview.PathError
			if errors.As(err, &pe) {
				e = stage.Errorf(stage.Init, pe.Op, pe.Path, pe.Err)
				e.Op = "add store path: " + pe.Op
			}
			rep.Error = e
		}
		if enc.Encode(&rep) != nil {
			return
		}
	}
}

// mountProc mounts a fresh procfs: it shows only the sandbox's pid
// namespace.
func (st *state) mountProc() error {
	err := unix.Mount("proc", filepath.Join(st.root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err != nil {
		e := stage.Errorf(stage.Init, "mount proc", "/proc", err)
		e.Hint = "the host's /proc has mounts over parts of it (as in some containers); closet needs a /proc without them"
		return e
	}
	return nil
}

// userQuotas cap what one job may take of the per-user kernel quotas
// that the kernel charges to the owner of the job's user namespace, the
// caller, whatever host uid the job runs as: without a cap one job could
// hold every inotify instance of its user (fs.inotify.max_user_instances,
// 128 by default) and break inotify for the user and all the user's other
// jobs. The limits under /proc/sys/user are the job's own user
// namespace's; the kernel still enforces the host's as well.
var userQuotas = map[string]string{
	"max_inotify_instances": "32",
	"max_inotify_watches":   "65536",
}

// capUserQuotas writes userQuotas, after /proc is mounted and before
// /proc/sys goes read-only. It needs CAP_SYS_RESOURCE over the job's user
// namespace, which the target drops with the rest. A kernel without
// these files has no such quota to share.
func (st *state) capUserQuotas() error {
	for name, v := range userQuotas {
		p := filepath.Join(st.root, "proc/sys/user", name)
		err := writeFile(p, unix.O_TRUNC, 0, []byte(v))
		if err == unix.ENOENT {
			continue
		}
		if err != nil {
			return stage.Errorf(stage.Init, "cap user quota", "/proc/sys/user/"+name, err)
		}
	}
	return nil
}

// maskedProc are the parts of /proc that speak of the host, not the
// sandbox (keys of the caller's uid, kernel timers and symbols, hardware,
// the kernel's command line), as runc masks them: files under /dev/null,
// directories under an empty, read-only tmpfs.
var maskedProc = []string{
	"keys", "key-users", "kcore", "timer_list", "timer_stats", "sched_debug",
	"latency_stats", "sysrq-trigger", "acpi", "asound", "scsi", "bus", "irq", "driver",
	"cmdline",
}

// readOnlyProc are the parts of /proc that write to the kernel rather than
// the sandbox: sysctls are checked against the writer's uid, not its
// capabilities, so a job whose uid is host root (or whose Landlock fence is
// missing) could otherwise set host-wide values such as
// kernel.core_pattern. As runc does, they are bound over themselves
// read-only; the ones also masked above stay masked.
var readOnlyProc = []string{"sys", "sysrq-trigger", "irq", "bus", "fs"}

// maskProc hides and freezes what /proc would tell about, or let a job
// change on, the host.
//
// /proc/net is not masked, with --network either: it is a link to
// self/net, and /proc/PID/net of every process shows that process's
// network namespace with no permission check, so no mount can hide it from
// a job sharing the host's namespace. What it lists (socket paths and
// addresses, the Nix daemon's included) --network already puts in reach:
// the job can connect to the host's abstract sockets and listeners, while
// pathname sockets stay out of its view.
//
// The first mask of each kind is made (an empty read-only tmpfs, /dev/null
// bound and made read-only); every next one is a bind of that first one,
// which has its mount options (a bind copies its source's): one call a
// mask instead of two, and no new tmpfs per directory. The masks are all
// read-only and empty, so sharing one tmpfs or one node shares nothing
// writable.
func (st *state) maskProc() error {
	var dirMask, fileMask string // the first masks made
	for _, name := range maskedProc {
		p := filepath.Join(st.root, "proc", name)
		var sb unix.Stat_t
		if err := unix.Lstat(p, &sb); err != nil {
			continue // not on this kernel
		}
		var err error
		switch {
		case sb.Mode&unix.S_IFMT == unix.S_IFDIR && dirMask != "":
			err = unix.Mount(dirMask, p, "", unix.MS_BIND, "")
		case sb.Mode&unix.S_IFMT == unix.S_IFDIR:
			if err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0,mode=0555"); err == nil {
				dirMask = p
			}
		case fileMask != "":
			err = unix.Mount(fileMask, p, "", unix.MS_BIND, "")
		default:
			if err = unix.Mount("/dev/null", p, "", unix.MS_BIND, ""); err == nil {
				if err = readOnly(p, false); err == nil {
					fileMask = p
				}
			}
		}
		if err != nil {
			return stage.Errorf(stage.Init, "mask", "/proc/"+name, err)
		}
	}
	for _, name := range readOnlyProc {
		p := filepath.Join(st.root, "proc", name)
		var sb unix.Stat_t
		if err := unix.Lstat(p, &sb); err != nil || slices.Contains(maskedProc, name) {
			continue // not on this kernel, or already under a read-only mask
		}
		err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, "")
		if err == nil {
			err = readOnly(p, true)
		}
		if err != nil {
			return stage.Errorf(stage.Init, "make read-only", "/proc/"+name, err)
		}
	}
	return nil
}

// readOnly makes the mount at p read-only, nosuid and noexec (recursively
// with rec): mount_setattr changes only the flags it names, so a bind keeps
// nodev and the rest of what it had.
func readOnly(p string, rec bool) error {
	flags := 0
	if rec {
		flags = unix.AT_RECURSIVE
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NOEXEC}
	return unix.MountSetattr(unix.AT_FDCWD, p, uint(flags), &attr)
}

var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

// mountDev builds a minimal /dev: binds of the harmless host nodes, a new
// devpts instance (the job's ptys are its own), and the mount point of
// /dev/shm, which mountScratch fills.
func (st *state) mountDev() error {
	dev := filepath.Join(st.root, "dev")
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755"); err != nil {
		return stage.Errorf(stage.Init, "mount tmpfs", "/dev", err)
	}
	for _, n := range devNodes {
		t := filepath.Join(dev, n)
		// The mount point: an empty file (mknod of a regular file needs
		// no privilege and is one call).
		if err := unix.Mknodat(unix.AT_FDCWD, t, unix.S_IFREG|0o666, 0); err != nil {
			return stage.Errorf(stage.Init, "create mount point", "/dev/"+n, err)
		}
		if err := unix.Mount("/dev/"+n, t, "", unix.MS_BIND, ""); err != nil {
			return stage.Errorf(stage.Init, "bind", "/dev/"+n, err)
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return stage.Errorf(stage.Init, "mount devpts", "/dev/pts", err)
	}
	links := map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
	for n, t := range links {
		if err := os.Symlink(t, filepath.Join(dev, n)); err != nil {
			return err
		}
	}
	return nil
}

// openConsole allocates the job's pty from the sandbox's own devpts
// instance and sends its master end to the parent, which relays it. The
// slave becomes the target's stdin, stdout and stderr and, after its
// setsid, its controlling terminal.
func (st *state) openConsole() error {
	if !st.s.TTY {
		// fd 6 is then not the console socket: wrap nothing, or a
		// finalizer would one day close whatever fd 6 has become.
		return nil
	}
	sock := os.NewFile(stage.ConsoleFD, "console")
	defer sock.Close()
	ptmx := filepath.Join(st.root, "dev/pts/ptmx")
	m, err := unix.Open(ptmx, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return stage.Errorf(stage.Init, "open", "/dev/pts/ptmx", err)
	}
	defer unix.Close(m)
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		return stage.Errorf(stage.Init, "unlock pty", "/dev/pts/ptmx", err)
	}
	// TIOCGPTPEER opens the slave from the master without a path lookup;
	// its argument is the open flags, a shape x/sys has no helper for.
	sfd, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if e != 0 {
		return stage.Errorf(stage.Init, "open pty slave", "/dev/pts", e)
	}
	st.tty = os.NewFile(uintptr(sfd), "tty")
	if err := unix.Sendmsg(int(sock.Fd()), []byte{0}, unix.UnixRights(m), nil, 0); err != nil {
		return stage.Errorf(stage.Init, "send pty to closet", "", err)
	}
	return nil
}

// scratchDirs are the job's writable scratch directories, each a
// subdirectory of one tmpfs: they share one size budget, so that the job
// cannot hold TmpSize three times over by filling each.
var scratchDirs = []struct {
	sub, target string // target "" is $HOME
	mode        uint32
	flags       uint64 // extra MOUNT_ATTR_* flags
}{
	{"tmp", "/tmp", 0o1777, 0},
	{"shm", "/dev/shm", 0o1777, unix.MOUNT_ATTR_NOEXEC},
	{"home", "", 0o700, 0},
}

// mountScratch mounts the job's scratch space: /tmp, /dev/shm and $HOME,
// binds of three directories of one tmpfs that vanishes with the sandbox.
// The tmpfs is mounted on a staging directory of the root and detached
// from it once bound, so the job never sees the three side by side.
func (st *state) mountScratch() error {
	stg := filepath.Join(st.root, ".scratch")
	if err := os.Mkdir(stg, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", stg, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, st.scratchOpts("mode=0700")); err != nil {
		return stage.Errorf(stage.Init, "mount tmpfs", "scratch", err)
	}
	for _, d := range scratchDirs {
		src := filepath.Join(stg, d.sub)
		if err := os.Mkdir(src, 0o700); err != nil {
			return err
		}
		// Mkdir's mode passes through the umask; the sticky bit only
		// through chmod.
		if err := unix.Chmod(src, d.mode); err != nil {
			return stage.Errorf(stage.Init, "chmod", d.sub, err)
		}
		target := d.target
		if target == "" {
			target = st.s.Home
		}
		t := filepath.Join(st.root, target)
		if err := os.MkdirAll(t, 0o755); err != nil {
			return err
		}
		// The bind has the tmpfs's nosuid and nodev (a bind copies its
		// source's mount options); only what a directory adds is set.
		if err := unix.Mount(src, t, "", unix.MS_BIND, ""); err != nil {
			return stage.Errorf(stage.Init, "bind scratch", target, err)
		}
		if d.flags != 0 {
			attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | d.flags}
			if err := unix.MountSetattr(unix.AT_FDCWD, t, 0, &attr); err != nil {
				return stage.Errorf(stage.Init, "set flags on scratch", target, err)
			}
		}
	}
	if err := unix.Unmount(stg, unix.MNT_DETACH); err != nil {
		return stage.Errorf(stage.Init, "detach scratch", "", err)
	}
	return os.Remove(stg)
}

// scratchOpts are the mount options of the scratch tmpfs: capped by
// Limits.TmpSize, which /tmp, /dev/shm and $HOME share.
func (st *state) scratchOpts(mode string) string {
	if n := st.s.Limits.TmpSize; n > 0 {
		return fmt.Sprintf("%s,size=%d", mode, n)
	}
	return mode
}

// writeEtc writes the synthetic /etc files.
func (st *state) writeEtc() error {
	etc := st.s.Etc
	if st.dns != "" {
		etc = maps(etc, "resolv.conf", st.dns)
	}
	for name, body := range etc {
		if err := writeFile(filepath.Join(st.root, "etc", name), unix.O_CREAT|unix.O_TRUNC, 0o644, []byte(body)); err != nil {
			return stage.Errorf(stage.Init, "write", "/etc/"+name, err)
		}
	}
	return nil
}

func maps(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for a, b := range m {
		out[a] = b
	}
	out[k] = v
	return out
}

// attachUserBinds moves the cloned user binds into the root. Mount points
// are created beneath the root without following symlinks, so an earlier
// writable bind cannot steer where a later one lands.
//
// A mount point is created only in the sandbox's own tmpfs layers (the
// root, /tmp, $HOME), never inside another user bind: there it would be a
// directory or file of the host's, made in the user's directory and left
// behind. A target inside a bind must already exist there.
func (st *state) attachUserBinds() error {
	rootFD, err := unix.Open(st.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rootFD)
	for i, t := range st.trees {
		rel := strings.TrimPrefix(t.m.Target, "/")
		if outer := enclosing(st.trees[:i], t.m.Target); outer != nil {
			if err := existingMountPoint(rootFD, rel); err != nil {
				e := stage.Errorf(stage.Init, "find mount point of "+t.m.Why, t.m.Target, err)
				if errors.Is(err, unix.ENOENT) {
					e.Hint = fmt.Sprintf("it lies inside %s (bound from %s), and closet creates nothing in your directories: create %s there first, or choose a target outside %s", outer.m.Target, outer.m.Source, t.m.Target, outer.m.Target)
				}
				return e
			}
		} else if err := mkMountPoint(rootFD, rel, t.dir); err != nil {
			return stage.Errorf(stage.Init, "create mount point", t.m.Target, err)
		}
		if err := unix.MoveMount(t.fd, "", rootFD, rel, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return stage.Errorf(stage.Init, "bind "+t.m.Why, t.m.Source+" -> "+t.m.Target, err)
		}
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
		if !t.m.Writable {
			attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
		}
		if err := unix.MountSetattr(t.fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			return stage.Errorf(stage.Init, "set flags on "+t.m.Why, t.m.Target, err)
		}
		unix.Close(t.fd)
	}
	return nil
}

// enclosing returns the bind among earlier whose target holds target
// strictly inside it, or nil.
func enclosing(earlier []userTree, target string) *userTree {
	for i := len(earlier) - 1; i >= 0; i-- {
		if strings.HasPrefix(target, strings.TrimSuffix(earlier[i].m.Target, "/")+"/") {
			return &earlier[i]
		}
	}
	return nil
}

// existingMountPoint checks that rel exists beneath rootFD, reached without
// symlinks, and creates nothing.
func existingMountPoint(rootFD int, rel string) error {
	fd, err := unix.Openat2(rootFD, rel, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS})
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// mkMountPoint creates rel (and its parents) beneath rootFD.
func mkMountPoint(rootFD int, rel string, dir bool) error {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS}
	parts := strings.Split(rel, "/")
	cur := ""
	for i, p := range parts {
		next := filepath.Join(cur, p)
		last := i == len(parts)-1
		fd, err := unix.Openat2(rootFD, next, how)
		if err == nil {
			unix.Close(fd)
			cur = next
			continue
		}
		if err != unix.ENOENT {
			return err
		}
		pfd := rootFD
		if cur != "" {
			if pfd, err = unix.Openat2(rootFD, cur, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS}); err != nil {
				return err
			}
		}
		if last && !dir {
			var fd int
			fd, err = unix.Openat(pfd, p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
			if err == nil {
				unix.Close(fd)
			}
		} else {
			err = unix.Mkdirat(pfd, p, 0o755)
		}
		if pfd != rootFD {
			unix.Close(pfd)
		}
		if err != nil {
			return err
		}
		cur = next
	}
	return nil
}

func (st *state) setHostname() error {
	return unix.Sethostname([]byte(st.s.Hostname))
}

// loopbackUp brings lo up in the sandbox's own network namespace, so that
// programs that talk to localhost work. With --network (shared) the host's
// is shared and left alone. Every thread of the init is in the namespace
// it was cloned in, so any of them may.
func loopbackUp(shared bool) error {
	if shared {
		return nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// pivotRoot makes the new root the root, detaches the host's tree, and
// makes the root tmpfs read-only. After this the host's filesystem is out
// of reach for good: nothing of it is mounted and nothing references it.
func (st *state) pivotRoot() error {
	if err := unix.Fchdir(st.rootFD); err != nil {
		return err
	}
	unix.Close(st.rootFD)
	if err := unix.PivotRoot(".", "."); err != nil {
		return stage.Errorf(stage.Init, "pivot_root", st.root, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return stage.Errorf(stage.Init, "detach old root", "", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", 0, &attr); err != nil {
		return stage.Errorf(stage.Init, "make root read-only", "/", err)
	}
	return nil
}

// runAndReap starts the target, then reaps every process until it ends,
// ends every other process of the job (endJob), and only then reports the
// target's end on the result pipe, with Alone set where endJob made sure
// that no process but the init itself is left in its pid namespace: the
// parent then reports without waiting for the init's exit, whose kernel
// teardown (every bind of the view, the tmpfs, the namespaces) takes
// milliseconds at thousands of paths. When it returns, init exits, and
// the kernel kills whatever else may still be in the pid namespace:
// nothing outlives the target either way.
func (st *state) runAndReap() int {
	// The relayed signals are caught, and the init survives the others,
	// before any job code runs.
	<-st.signalsSet
	target, err := st.startTarget()
	if err != nil {
		// A child that failed has exited; the init's exit ends the rest.
		stage.Fail(stage.Errorf(stage.Init, "start the target", "", err))
	}
	// EOF on the status pipe tells the parent the target started.
	st.status.Close()
	go st.serveControl()
	go func() {
		// To the target's process group, as a terminal would: the child
		// made the target a session and group leader.
		for s := range st.sigs {
			if unix.Kill(-target, s.(unix.Signal)) != nil {
				unix.Kill(target, s.(unix.Signal))
			}
		}
	}()
	var res stage.Result
	for {
		var ws unix.WaitStatus
		var ru unix.Rusage
		pid, err := unix.Wait4(-1, &ws, 0, &ru)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			res = stage.Result{Exited: true, Code: 125}
			break
		}
		if pid != target {
			continue // an orphan re-parented to pid 1
		}
		res.Exited = ws.Exited()
		res.Code = ws.ExitStatus()
		if ws.Signaled() {
			res.Signal = int(ws.Signal())
		}
		res.UserUsec = ru.Utime.Sec*1e6 + ru.Utime.Usec
		res.SysUsec = ru.Stime.Sec*1e6 + ru.Stime.Usec
		res.MaxRSSKiB = ru.Maxrss
		break
	}
	res.Alone = st.endJob()
	os.NewFile(stage.ResultFD, "result").Write(stage.AppendResult(nil, res))
	return 0
}

// endJob, once the target has ended, ends every other process of the job,
// as the init's exit would, but before the Result is sent: a SIGKILL to
// every process of the pid namespace but the init (kill(-1) from pid 1;
// the job runs as the init's uid and cannot change it, so every one of
// them is reached), then reaping until the init has no child left. A fork
// racing the kill is refused by the kernel (its parent has a fatal signal
// pending), and a process whose parent dies is re-parented to the init, so
// no child left means no process of the job left. What remains checks
// that: kill(-1, 0) finds no process at all in the namespace (ESRCH).
//
// It also lets go of what the parent waits on besides the Result: fds 0-2
// (the job's stdout and stderr pipes reach EOF once no process holds
// them) and the pty slave. It returns true only if the init is alone in
// its pid namespace; false keeps today's order, in which the parent waits
// for the init's exit, whose kernel teardown kills what is left.
func (st *state) endJob() bool {
	if err := unix.Kill(-1, unix.SIGKILL); err != nil && err != unix.ESRCH {
		return false
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(-1, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ECHILD {
			break
		}
		if err != nil {
			return false
		}
	}
	if err := unix.Kill(-1, 0); err != unix.ESRCH {
		return false
	}
	if st.tty != nil {
		st.tty.Close()
	}
	// /dev/null over 0-2 rather than closing them: no later open reuses
	// them, and a write there (a panic) goes nowhere instead.
	null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(null, fd, 0); err != nil {
			return false
		}
	}
	unix.Close(null)
	return true
}
