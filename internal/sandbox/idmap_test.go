package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/idmap"
	"github.com/closet-sandbox/closet/internal/spec"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// The test binary doubles as closet's stages (the init re-executes
// /proc/self/exe) and as a small closet that runs one job (helperEnv), so
// the tests can run sandbox.Run as another user.
func TestMain(m *testing.M) {
	RunStageIfAny()
	if p := os.Getenv(helperEnv); p != "" {
		os.Exit(runHelper(p))
	}
	if os.Getenv(launcherEnv) != "" {
		os.Exit(runLauncher())
	}
	os.Exit(m.Run())
}

const helperEnv = "CLOSET_TEST_IDMAP_HELPER"

// helperJob is what the helper runs, and helperReport what it saw.
type helperJob struct {
	Busybox  string
	Script   string
	HostUID  string // idmap mode
	StateDir string
	Pids     uint64
	Landlock string
	// Bind is a host directory bound read-only at /src.
	Bind string
	// TTY gives the job a pty; what it writes there goes to the report's
	// Console.
	TTY bool
	// Count: while the job runs, count the host's processes whose real
	// uid is the job's; the report has the most seen at once.
	Count bool
	// LaunchOnly launches the init (Launch) and closes it without a spec,
	// then takes a slot again; the report says what was seen.
	LaunchOnly bool
}

type helperReport struct {
	Own      bool
	HostUID  int
	Status   map[string]string // Uid, Gid, Groups lines of the target, seen from outside
	Count    int
	Enforced map[string]string
	// SampledKiB and RusageKiB: the job's max-rss as sampled, and the
	// target's ru_maxrss.
	SampledKiB, RusageKiB int64
	Code                  int
	Err                   string
	Stderr                string // the job's and the helper's, filled in by the test
	Console               string // what the job wrote to its pty
	// LaunchOnly: the launched init's uid_map, whether its pid was gone
	// after Close, and the host uid of the slot taken after it.
	UIDMap   string
	Gone     bool
	HostUID2 int
}

func runHelper(arg string) int {
	var job helperJob
	if err := json.Unmarshal([]byte(arg), &job); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rep := helperReport{}
	out := json.NewEncoder(os.Stdout)
	defer func() { out.Encode(rep) }()
	fail := func(err error) int { rep.Err = err.Error(); return 0 }

	u, err := user.Current()
	if err != nil {
		return fail(err)
	}
	var binds idmap.Binds
	if job.Bind != "" {
		binds.Unreadable = idmap.FirstUnreadable([]string{job.Bind})
	}
	ident, _, err := ChooseIdentity(job.HostUID, Caller{UID: os.Getuid(), GID: os.Getgid(), Name: u.Username, StateDir: job.StateDir}, binds)
	if err != nil {
		return fail(err)
	}
	if ident != nil {
		defer ident.Release()
		rep.Own, rep.HostUID = true, ident.HostUID()
	}
	if job.LaunchOnly {
		return launchOnly(job, ident, &rep)
	}
	s := &spec.Spec{
		Version: spec.Version, Path: job.Busybox + "/bin/sh", Args: []string{"sh", "-c", job.Script},
		Env: []string{"PATH=" + job.Busybox + "/bin"}, Cwd: "/", UID: 1000, GID: 1000, User: "u", Home: "/home/u",
		Hostname: "closet", Store: []string{job.Busybox}, Seccomp: "default", Landlock: job.Landlock,
		Limits: spec.Limits{Pids: job.Pids},
	}
	s.TTY = job.TTY
	if job.Bind != "" {
		s.Mounts = []spec.Mount{{Source: job.Bind, Target: "/src", Why: "expose"}}
	}
	started := make(chan int, 1)
	hooks := Hooks{Started: func(initPid int) { started <- initPid }}
	var console strings.Builder
	consoleDone := make(chan struct{})
	close(consoleDone)
	if job.TTY {
		consoleDone = make(chan struct{})
		hooks.Console = func(master *os.File) {
			go func() {
				defer close(consoleDone)
				defer master.Close()
				buf := make([]byte, 4096)
				for {
					n, err := master.Read(buf)
					console.Write(buf[:n])
					if err != nil {
						return
					}
				}
			}()
		}
	}
	done, runDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var initPid int
		select {
		case initPid = <-started:
		case <-runDone:
			return
		}
		target := firstChild(initPid)
		rep.Status = statusLines(target, "Uid", "Gid", "Groups")
		fmt.Fprintln(os.Stderr, "started") // tells the test the job runs
		for job.Count && rep.Own {
			rep.Count = max(rep.Count, countRealUID(rep.HostUID))
			select {
			case <-runDone:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	o, err := Run(context.Background(), s, LaunchOptions{Stdio: Stdio{Stderr: os.Stderr}, Identity: ident}, hooks)
	close(runDone)
	<-done
	<-consoleDone
	rep.Console = console.String()
	if err != nil {
		return fail(err)
	}
	rep.Enforced, rep.Code = o.Enforced, o.Result.Code
	if o.Result.Signal != 0 {
		rep.Code = 128 + o.Result.Signal
	}
	rep.SampledKiB, rep.RusageKiB = o.SampledMaxRSSKiB, o.Result.MaxRSSKiB
	return 0
}

// launchOnly launches an init with ident, closes it unrun, releases the
// slot and takes one again.
func launchOnly(job helperJob, ident *Identity, rep *helperReport) int {
	if ident == nil {
		rep.Err = "no identity of its own"
		return 0
	}
	in, err := Launch(LaunchOptions{UID: 1000, GID: 1000, Identity: ident, Stdio: Stdio{Stderr: os.Stderr}})
	if err != nil {
		rep.Err = err.Error()
		return 0
	}
	pid := in.Pid()
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
	rep.UIDMap = strings.Join(strings.Fields(string(b)), " ")
	in.Close()
	_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
	rep.Gone = err != nil
	ident.Release()
	u, _ := user.Current()
	again, _, err := ChooseIdentity(job.HostUID, Caller{UID: os.Getuid(), GID: os.Getgid(), Name: u.Username, StateDir: job.StateDir}, idmap.Binds{})
	if err != nil {
		rep.Err = err.Error()
		return 0
	}
	defer again.Release()
	rep.HostUID2 = again.HostUID()
	return 0
}

func firstChild(pid int) int {
	for i := 0; i < 200; i++ {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.Atoi(f[0])
			return n
		}
		// The children of another thread of the init.
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, t := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
			if f := strings.Fields(string(b)); len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return -1
}

func statusLines(pid int, keys ...string) map[string]string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range keys {
			if v, ok := strings.CutPrefix(l, k+":"); ok {
				out[k] = strings.Join(strings.Fields(v), " ")
			}
		}
	}
	return out
}

// countRealUID counts the host's processes whose real uid is uid.
func countRealUID(uid int) int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := strings.Fields(statusLines(pid, "Uid")["Uid"]); len(f) > 0 && f[0] == strconv.Itoa(uid) {
			n++
		}
	}
	return n
}

// testUser creates a user with subordinate ids (in nix-users where that
// group exists) for the length of the test.
func testUser(t *testing.T) *user.User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating a user with subordinate ids needs root")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("no useradd on this host")
	}
	for _, h := range []string{"newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(h); err != nil {
			t.Fatalf("%s is not installed: scripts/teststore installs it (apt install uidmap)", h)
		}
	}
	name := fmt.Sprintf("closet-idt%d", os.Getpid()%100000)
	args := []string{"--no-create-home", "--shell", "/bin/sh"}
	if _, err := user.LookupGroup("nix-users"); err == nil {
		args = append(args, "--groups", "nix-users")
	}
	if out, err := exec.Command("useradd", append(args, name)...).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() {
		// -f: the user may still own a process being reaped (a killed
		// closet's init keeps the caller's real uid).
		if out, err := exec.Command("userdel", "-f", name).CombinedOutput(); err != nil {
			t.Logf("userdel %s: %v: %s", name, err, out)
		}
	})
	// A range of ids nothing else uses: 5 slots.
	base := 3_000_000_000 + uint32(os.Getpid()%1000)*16
	if out, err := exec.Command("usermod", "--add-subuids", fmt.Sprintf("%d-%d", base, base+4),
		"--add-subgids", fmt.Sprintf("%d-%d", base, base+4), name).CombinedOutput(); err != nil {
		t.Fatalf("usermod: %v: %s", err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// startHelper starts one job as u (nil: as the test process itself); the
// returned wait gives its report. started is closed once the target runs.
func startHelper(t *testing.T, bin string, u *user.User, job helperJob) (started chan struct{}, wait func() helperReport) {
	started, wait, _ = startHelperCmd(t, bin, u, job)
	return started, wait
}

// startHelperCmd is startHelper, with the helper's process.
func startHelperCmd(t *testing.T, bin string, u *user.User, job helperJob) (started chan struct{}, wait func() helperReport, cmd *exec.Cmd) {
	t.Helper()
	arg, _ := json.Marshal(job)
	cmd = exec.Command(bin)
	cmd.Env = []string{helperEnv + "=" + string(arg)}
	if u != nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		groups := []uint32{}
		gids, _ := u.GroupIds()
		for _, g := range gids {
			n, _ := strconv.Atoi(g)
			groups = append(groups, uint32(n))
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
	}
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started = make(chan struct{})
	var errText strings.Builder
	errDone := make(chan struct{})
	go func() {
		defer close(errDone)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if sc.Text() == "started" && !once {
				once = true
				close(started)
				continue
			}
			errText.WriteString(sc.Text() + "\n")
		}
		if !once {
			close(started)
		}
	}()
	return started, func() helperReport {
		b, _ := io.ReadAll(stdout)
		<-errDone
		cmd.Wait()
		var r helperReport
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("helper: %v: %s\nstderr: %s", err, b, errText.String())
		}
		r.Stderr = errText.String()
		if r.Err != "" {
			t.Fatalf("helper: %s\nstderr: %s", r.Err, errText.String())
		}
		return r
	}, cmd
}

func stateDir(t *testing.T, u *user.User) string {
	dir, err := os.MkdirTemp("", "closet-idmap-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if u != nil {
		uid, _ := strconv.Atoi(u.Uid)
		os.Chown(dir, uid, -1)
	}
	// The helper makes the sandbox's mount point here too: other users
	// (the job's own uid) must be able to search it.
	os.Chmod(dir, 0o711)
	return filepath.Join(dir, "slots")
}

// An init launched with a host uid of its own has its ids mapped to the
// slot before any spec; closed unrun, it is gone (no zombie) and its slot
// is free again: the next job of the user takes the same host uid.
func TestLaunchedIdentityClosedFreesSlot(t *testing.T) {
	u := testUser(t)
	bin := testutil.ExecutableCopy(t)
	bb := fixture.Path(t, "busybox")
	_, wait := startHelper(t, bin, u, helperJob{Busybox: bb, HostUID: idmap.Subordinate, StateDir: stateDir(t, u), LaunchOnly: true})
	r := wait()
	if r.Err != "" || !r.Own {
		t.Fatalf("helper: %+v", r)
	}
	if want := fmt.Sprintf("1000 %d 1", r.HostUID); r.UIDMap != want {
		t.Errorf("the launched init's uid_map %q, want %q", r.UIDMap, want)
	}
	if !r.Gone {
		t.Error("the launched init is still there after Close")
	}
	if r.HostUID2 != r.HostUID {
		t.Errorf("after Close the next job took host uid %d, not the freed %d", r.HostUID2, r.HostUID)
	}
}

// Two read-only jobs of one user, running at once, run as two different
// host uids from the user's subordinate range, and hold none of the
// user's supplementary groups (nix-users).
func TestConcurrentJobsGetTheirOwnHostUID(t *testing.T) {
	u := testUser(t)
	bin := testutil.ExecutableCopy(t)
	bb := fixture.Path(t, "busybox")
	dir := stateDir(t, u)
	startedA, waitA := startHelper(t, bin, u, helperJob{Busybox: bb, Script: "sleep 3", HostUID: idmap.Subordinate, StateDir: dir, Landlock: "best-effort"})
	<-startedA
	_, waitB := startHelper(t, bin, u, helperJob{Busybox: bb, Script: "sleep 0.5", HostUID: idmap.Subordinate, StateDir: dir, Landlock: "best-effort"})
	b := waitB()
	a := waitA()
	callerUID, _ := strconv.Atoi(u.Uid)
	for _, r := range []helperReport{a, b} {
		if !r.Own {
			t.Fatalf("a job ran without a host uid of its own: %+v", r)
		}
		uids := strings.Fields(r.Status["Uid"])
		if len(uids) != 4 || uids[0] != strconv.Itoa(r.HostUID) || uids[1] != strconv.Itoa(r.HostUID) {
			t.Errorf("target's Uid line %q, want the slot's host uid %d (caller is %d)", r.Status["Uid"], r.HostUID, callerUID)
		}
		if r.Status["Groups"] != "" {
			t.Errorf("target holds supplementary groups %q, want none", r.Status["Groups"])
		}
		if gids := strings.Fields(r.Status["Gid"]); len(gids) == 0 || gids[0] == u.Gid {
			t.Errorf("target's Gid line %q: the caller's gid %s", r.Status["Gid"], u.Gid)
		}
	}
	if a.HostUID == b.HostUID {
		t.Errorf("two concurrent jobs share host uid %d", a.HostUID)
	}
	t.Logf("job A: %v, job B: %v (caller uid %d)", a.Status, b.Status, callerUID)
}

// With a host uid of its own and no pids cgroup (an unprivileged user on
// cgroup v1), --pids holds through RLIMIT_NPROC: a fork storm of 20 ends
// with at most 5 processes of the job.
func TestPidsWithoutCgroupByNproc(t *testing.T) {
	u := testUser(t)
	bin := testutil.ExecutableCopy(t)
	bb := fixture.Path(t, "busybox")
	// The storm runs in an inner shell (busybox sh exits when a fork
	// fails); what it started lives on while the outer shell sleeps.
	script := `sh -c 'i=0; while [ $i -lt 20 ]; do sleep 3 & i=$((i+1)); done'; sleep 1`
	_, wait := startHelper(t, bin, u, helperJob{Busybox: bb, Script: script, HostUID: idmap.Subordinate, StateDir: stateDir(t, u),
		Pids: 5, Count: true, Landlock: "best-effort"})
	r := wait()
	if r.Enforced[spec.LimitPids] != spec.MechRlimitNproc {
		t.Skipf("pids enforced by %q here, not the rlimit this test is about", r.Enforced[spec.LimitPids])
	}
	if r.Count > 5 || r.Count < 3 {
		t.Errorf("at most %d processes of the job's uid during the storm, want 3..5 (--pids 5)", r.Count)
	}
	if !strings.Contains(r.Stderr, "can't fork") {
		t.Errorf("no fork was refused: %s", r.Stderr)
	}
	t.Logf("fork storm of 20 under --pids 5: %d processes (exit %d)", r.Count, r.Code)

	// The control: without the limit the same storm has all 21.
	_, wait = startHelper(t, bin, u, helperJob{Busybox: bb, Script: script, HostUID: idmap.Subordinate, StateDir: stateDir(t, u),
		Count: true, Landlock: "best-effort"})
	if c := wait(); c.Count <= 20 || c.Code != 0 {
		t.Errorf("control without --pids: only %d processes; the storm test proves nothing here", c.Count)
	}
}

// A root caller's job never runs as host uid 0, even with Landlock off.
func TestRootCallerJobIsNotHostRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("about root callers; not root")
	}
	bin := testutil.ExecutableCopy(t)
	bb := fixture.Path(t, "busybox")
	_, wait := startHelper(t, bin, nil, helperJob{Busybox: bb, Script: "sleep 0.3", HostUID: idmap.Caller, StateDir: stateDir(t, nil), Landlock: "off"})
	r := wait()
	uids := strings.Fields(r.Status["Uid"])
	if !r.Own || len(uids) != 4 {
		t.Fatalf("root's job: own %v, Uid %q", r.Own, r.Status["Uid"])
	}
	for _, f := range uids {
		if f == "0" {
			t.Fatalf("root's job runs as host uid 0: Uid %q", r.Status["Uid"])
		}
	}
	if r.Status["Groups"] != "" {
		t.Errorf("root's job holds groups %q", r.Status["Groups"])
	}
	t.Logf("root's job: %v", r.Status)
}

// max-rss counts the job's processes only: a shell that does nothing
// shows about what the same shell shows outside closet (sampled the same
// way), not the image of closet's init (the target is its fork) that
// ru_maxrss carries across execve; and a job that holds 100 MB shows at least that.
func TestMaxRSSCountsTheJobOnly(t *testing.T) {
	var u *user.User
	if os.Geteuid() == 0 {
		var err error
		if u, err = user.Lookup("nobody"); err != nil {
			t.Skip("no user nobody")
		}
	}
	bin := testutil.ExecutableCopy(t)
	bb := fixture.Path(t, "busybox")
	outside := func(script string) int64 {
		cmd := exec.Command(bb+"/bin/sh", "-c", script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r := startRSSSampler(os.Getpid())
		cmd.Wait()
		return r.finish()
	}
	idle := "true; sleep 0.3"
	out := outside(idle)
	_, wait := startHelper(t, bin, u, helperJob{Busybox: bb, Script: idle, HostUID: idmap.Caller, StateDir: stateDir(t, u), Landlock: "best-effort"})
	r := wait()
	const margin = 512 // KiB
	if r.SampledKiB <= 0 || r.SampledKiB > out+margin {
		t.Errorf("sh -c %q: max-rss %d KiB inside, %d KiB outside: want within %d KiB", idle, r.SampledKiB, out, margin)
	}
	t.Logf("sh -c %q: %d KiB (ru_maxrss, which carries closet's init: %d KiB); outside %d KiB", idle, r.SampledKiB, r.RusageKiB, out)

	_, wait = startHelper(t, bin, u, helperJob{Busybox: bb, Script: "true", HostUID: idmap.Caller, StateDir: stateDir(t, u), Landlock: "best-effort"})
	r = wait()
	if r.SampledKiB > out+margin {
		t.Errorf("sh -c true: max-rss %d KiB, more than the idle shell outside (%d KiB)", r.SampledKiB, out)
	}
	t.Logf("sh -c true: %d KiB (0: ended before the first sample)", r.SampledKiB)

	big := `x=$(head -c 100000000 /dev/zero | tr '\0' a); sleep 0.1`
	_, wait = startHelper(t, bin, u, helperJob{Busybox: bb, Script: big, HostUID: idmap.Caller, StateDir: stateDir(t, u), Landlock: "best-effort"})
	r = wait()
	if r.SampledKiB < 100_000_000/1024 {
		t.Errorf("a job holding 100 MB: max-rss %d KiB", r.SampledKiB)
	}
	t.Logf("100 MB job: %d KiB", r.SampledKiB)
}

// closet killed outright (SIGKILL, no cleanup) while its job runs: the job
// dies with it (the init re-arms its parent-death signal after taking the
// job's ids), and the slot stays taken while any process of the job is
// alive: the init holds the lock too.
func TestSlotOutlivesAKilledParentUntilTheJobIsGone(t *testing.T) {
	u := testUser(t)
	bin := testutil.ExecutableCopy(t)
	bb := fixture.Path(t, "busybox")
	dir := stateDir(t, u)
	started, _, cmd := startHelperCmd(t, bin, u, helperJob{Busybox: bb, Script: "sleep 30 & sleep 30", HostUID: idmap.Subordinate, StateDir: dir, Landlock: "best-effort"})
	<-started
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("slot directory holds %d lock files, want 1", len(ents))
	}
	var uid int
	fmt.Sscanf(ents[0].Name(), "uid-%d.lock", &uid)
	if n := countRealUID(uid); n < 1 {
		t.Fatalf("%d processes of host uid %d, want the job's", n, uid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	lock := filepath.Join(dir, ents[0].Name())
	deadline := time.Now().Add(10 * time.Second)
	for {
		taken, err := idmap.Taken(lock)
		if err != nil {
			t.Fatal(err)
		}
		if !taken {
			if n := countRealUID(uid); n != 0 {
				t.Fatalf("slot free while %d processes of its host uid %d are alive", n, uid)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot still held 10 s after closet was killed (%d processes of uid %d left: did the job outlive closet?)", countRealUID(uid), uid)
		}
		time.Sleep(time.Millisecond)
	}
}

// A job with a host uid of its own reads what its read-only bind offers
// every user, and not what only the caller may read: the init opens the
// bind with the caller's access, then the job runs as its own uid.
func TestOwnIdentityReadsWhatOthersMay(t *testing.T) {
	u := testUser(t)
	bin := testutil.ExecutableCopy(t)
	bb := fixture.Path(t, "busybox")
	src, err := os.MkdirTemp("", "closet-idmap-src-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(src) })
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	os.WriteFile(filepath.Join(src, "public"), []byte("public\n"), 0o644)
	os.WriteFile(filepath.Join(src, "private"), []byte("private\n"), 0o600)
	for _, p := range []string{src, filepath.Join(src, "public"), filepath.Join(src, "private")} {
		os.Chown(p, uid, gid)
	}
	os.Chmod(src, 0o755)
	_, wait := startHelper(t, bin, u, helperJob{Busybox: bb, Script: "exec >&2; cat /src/public; cat /src/private && echo READ-PRIVATE", HostUID: idmap.Subordinate,
		StateDir: stateDir(t, u), Landlock: "best-effort", Bind: src})
	r := wait()
	if !strings.Contains(r.Stderr, "public") {
		t.Errorf("the job could not read the public file of its bind: %s", r.Stderr)
	}
	if strings.Contains(r.Stderr, "READ-PRIVATE") || !strings.Contains(r.Stderr, "Permission denied") {
		t.Errorf("the job read its caller's private file: %s", r.Stderr)
	}
}

// With a pty (the console socket at fd 6, the slot's lock at fd 7), a job
// with a host uid of its own gets its terminal.
func TestOwnIdentityWithATerminal(t *testing.T) {
	u := testUser(t)
	bin := testutil.ExecutableCopy(t)
	bb := fixture.Path(t, "busybox")
	_, wait := startHelper(t, bin, u, helperJob{Busybox: bb, Script: "tty; id -u", HostUID: idmap.Subordinate,
		StateDir: stateDir(t, u), Landlock: "best-effort", TTY: true})
	r := wait()
	if !r.Own || !strings.Contains(r.Console, "/dev/pts/") || !strings.Contains(r.Console, "1000") {
		t.Errorf("own %v; the job's terminal showed %q, want its pty and uid 1000", r.Own, r.Console)
	}
}
