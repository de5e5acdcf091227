package cgroup

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/testutil"
)

// fakeV2 builds a v2-only host in a temp dir, closet's own cgroup at
// /user.slice/closet.scope (inside, when leaf is set, its leaf), laid out
// as the kernel lays it out, with every controller delegated.
func fakeV2(t *testing.T, leaf bool) (Host, string) {
	d := t.TempDir()
	scope := filepath.Join(d, "user.slice/closet.scope")
	os.MkdirAll(scope, 0o755)
	files := map[string]string{"cgroup.controllers": "cpuset cpu io memory pids", "cgroup.subtree_control": "", "cgroup.procs": ""}
	for f, v := range files {
		os.WriteFile(filepath.Join(scope, f), []byte(v), 0o644)
	}
	own := "/user.slice/closet.scope"
	if leaf {
		os.MkdirAll(filepath.Join(scope, LeafName), 0o755)
		own += "/" + LeafName
	}
	h := Host{ProcSelfCgroup: filepath.Join(t.TempDir(), "cgroup"), MountInfo: filepath.Join(t.TempDir(), "mountinfo")}
	os.WriteFile(h.ProcSelfCgroup, []byte("0::"+own+"\n"), 0o644)
	os.WriteFile(h.MountInfo, []byte(fmt.Sprintf("35 31 0:32 / %s rw - cgroup2 cgroup2 rw\n", d)), 0o644)
	old := mkdirCgroup
	mkdirCgroup = func(dir string) error {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		for _, f := range []string{"memory.max", "memory.swap.max", "memory.oom.group", "memory.peak", "memory.events", "pids.max", "cpu.stat", "cgroup.procs", "cgroup.kill", "cgroup.subtree_control"} {
			os.WriteFile(filepath.Join(dir, f), nil, 0o644)
		}
		return nil
	}
	t.Cleanup(func() { mkdirCgroup = old })
	return h, scope
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// The limit files of a job's v2 cgroup, against a fake cgroupfs; and a
// closet already in its leaf makes the job's cgroup beside the leaf.
func TestFakeV2Limits(t *testing.T) {
	for _, leaf := range []bool{false, true} {
		t.Run(fmt.Sprintf("leaf=%v", leaf), func(t *testing.T) {
			h, scope := fakeV2(t, leaf)
			g, err := New(h, Request{Name: "job1", MemoryMax: 64 << 20, PidsMax: 10, CPU: true})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Remove()
			for _, c := range []string{Memory, Pids, CPU} {
				if g.Mechanism(c) != V2 {
					t.Errorf("%s: mechanism %q (%s), want cgroup-v2", c, g.Mechanism(c), g.Unavailable(c))
				}
			}
			job := filepath.Join(scope, "job1")
			if g.FD() < 0 {
				t.Error("no directory to clone the init into")
			}
			want := map[string]string{"memory.max": "67108864", "memory.swap.max": "0", "memory.oom.group": "1", "pids.max": "10"}
			for f, v := range want {
				if got := readFile(t, filepath.Join(job, f)); got != v {
					t.Errorf("%s = %q, want %q", f, got, v)
				}
			}
			if got := readFile(t, filepath.Join(scope, "cgroup.subtree_control")); got != "+memory +pids" {
				t.Errorf("subtree_control written %q, want +memory +pids", got)
			}
			if err := g.SetPidsMax(12); err != nil || readFile(t, filepath.Join(job, "pids.max")) != "12" {
				t.Errorf("SetPidsMax: %v", err)
			}
			os.WriteFile(filepath.Join(job, "memory.peak"), []byte("104857600\n"), 0o644)
			os.WriteFile(filepath.Join(job, "memory.events"), []byte("low 0\noom 1\noom_kill 2\n"), 0o644)
			if st := g.Stats(); st.PeakMemory != 100<<20 || st.OOMKills != 2 {
				t.Errorf("stats %+v, want peak 100 MiB and 2 OOM kills", st)
			}
		})
	}
}

// A job's pids counted apart from its init (Request.JobPids), against a
// fake cgroupfs: the job's v2 cgroup enables pids for two children and
// holds no process itself, the init is cloned into one, and the other is
// capped at the job's allowance before anything runs and open for the
// job to join.
func TestFakeV2SplitPids(t *testing.T) {
	h, scope := fakeV2(t, true)
	g, err := New(h, Request{Name: "job1", MemoryMax: 64 << 20, Pids: true, JobPids: 5, CPU: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	if g.Mechanism(Pids) != V2 {
		t.Fatalf("pids: mechanism %q (%s)", g.Mechanism(Pids), g.Unavailable(Pids))
	}
	dir := filepath.Join(scope, "job1")
	if got := readFile(t, filepath.Join(dir, "cgroup.subtree_control")); got != "+pids" {
		t.Errorf("the job's subtree_control written %q, want +pids", got)
	}
	if got := readFile(t, filepath.Join(dir, JobDir, "pids.max")); got != "5" {
		t.Errorf("the job's pids.max %q, want 5", got)
	}
	if got := readFile(t, filepath.Join(dir, InitDir, "pids.max")); got != "" {
		t.Errorf("the init's pids.max written %q, want it left alone", got)
	}
	if got := readFile(t, filepath.Join(dir, "memory.max")); got != "67108864" {
		t.Errorf("memory.max %q on the job's cgroup, want the whole job's", got)
	}
	var fdSt, initSt syscall.Stat_t
	if err := syscall.Fstat(g.FD(), &fdSt); err != nil {
		t.Fatal(err)
	}
	syscall.Stat(filepath.Join(dir, InitDir), &initSt)
	if fdSt.Ino != initSt.Ino {
		t.Error("the init is not cloned into its own part of the job's cgroup")
	}
	f := g.JobProcs()
	if f == nil || f.Name() != filepath.Join(dir, JobDir, "cgroup.procs") {
		t.Fatalf("JobProcs %v", f)
	}
	if _, err := f.Write([]byte("0")); err != nil || readFile(t, f.Name()) != "0" {
		t.Errorf("join: %v", err)
	}
	if err := g.SetPidsMax(40); err != nil || readFile(t, filepath.Join(dir, "pids.max")) != "40" {
		t.Errorf("SetPidsMax of the whole: %v", err)
	}
	// Without JobPids, nothing is split.
	g2, err := New(h, Request{Name: "job2", PidsMax: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Remove()
	if g2.JobProcs() != nil {
		t.Error("a split without JobPids")
	}
	if _, err := os.Stat(filepath.Join(scope, "job2", JobDir)); err == nil {
		t.Error("a job directory without JobPids")
	}
}

// The real v1 pids hierarchy, split: the init is placed in its part, a
// process that writes 0 to JobProcs moves itself into the job's part and
// is held to its allowance there, whatever the init's part holds; Kill
// and Remove reach both parts and leave nothing.
func TestRealV1SplitPids(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("v1 cgroups need root")
	}
	g, err := New(Host{}, Request{Name: fmt.Sprintf("closet-test-split-%d", os.Getpid()), Pids: true, JobPids: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	if g.Mechanism(Pids) != V1 {
		t.Skipf("no v1 pids cgroup here: %s", g.Unavailable(Pids))
	}
	dir := g.split
	// The "init": placed in its part.
	init := exec.Command("sleep", "30")
	if err := init.Start(); err != nil {
		t.Fatal(err)
	}
	defer init.Wait()
	defer init.Process.Kill()
	if err := g.Attach(init.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, InitDir, "cgroup.procs")); got != strconv.Itoa(init.Process.Pid) {
		t.Errorf("the init's part holds %q, want %d", got, init.Process.Pid)
	}
	// The "job": joins, then sh and 2 sleepers are its 3.
	var out strings.Builder
	job := exec.Command("sh", "-c", "echo 0 >&3 || exit 9; for i in 1 2 3 4; do sleep 30 >/dev/null 2>&1 & echo $i; done")
	job.ExtraFiles = []*os.File{g.JobProcs()}
	job.Stdout = &out
	job.Run()
	if out.String() != "1\n2\n" {
		t.Errorf("the job forked %q, want 1 2 (its allowance of 3)", out.String())
	}
	if n := len(strings.Fields(readFile(t, filepath.Join(dir, JobDir, "cgroup.procs")))); n != 2 {
		t.Errorf("the job's part holds %d processes, want its 2 sleepers", n)
	}
	g.Kill()
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", dir, err)
	}
}

// The real v2 hierarchy: a process cloned into one child of a cgroup, in
// a cgroup namespace rooted there and a user namespace of its own (as the
// target's child is), moves itself into the sibling child by writing 0
// to that sibling's cgroup.procs opened by its parent: the kernel checks
// the move against the opener's namespace and credentials, not the
// writer's. (No controller is needed: the rule is the same with pids on.)
func TestRealV2JoinFromOwnNamespace(t *testing.T) {
	v2root := realV2Root(t)
	dir := filepath.Join(v2root, fmt.Sprintf("closet-test-join-%d", os.Getpid()))
	for _, d := range []string{dir, filepath.Join(dir, InitDir), filepath.Join(dir, JobDir)} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, d := range []string{filepath.Join(dir, JobDir), filepath.Join(dir, InitDir), dir} {
			for i := 0; i < 50; i++ {
				if err := os.Remove(d); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	procs, err := os.OpenFile(filepath.Join(dir, JobDir, "cgroup.procs"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer procs.Close()
	initFD, err := syscall.Open(filepath.Join(dir, InitDir), syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(initFD)
	cmd := exec.Command("sh", "-c", "cat /proc/self/cgroup; echo --; echo 0 >&3 && cat /proc/self/cgroup")
	cmd.ExtraFiles = []*os.File{procs}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		UseCgroupFD: true, CgroupFD: initFD,
		Cloneflags:  syscall.CLONE_NEWCGROUP | syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 65534, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 65534, Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// Before: its own cgroup is its namespace's root. After: the job's,
	// which lies outside that namespace.
	before, after, _ := strings.Cut(string(out), "--\n")
	if v2Path(before) != "/" || v2Path(after) != "/../"+JobDir {
		t.Errorf("cgroups seen %q, want / then /../%s", out, JobDir)
	}
}

// The real v2 hierarchy, delegated to an unprivileged user as systemd
// delegates a scope: closet, alone in the cgroup it was started in, moves
// itself into a leaf to enable a controller, and the job's cgroup is made
// beside the leaf with the job cloned straight into it; with another
// process in its cgroup closet refuses and moves nobody. Uses the
// controller this host's v2 hierarchy has (hugetlb: memory and pids are
// on v1 here).
func TestRealV2DelegatedLeaf(t *testing.T) {
	v2root := realV2Root(t)
	ctrl := ""
	for _, c := range strings.Fields(readString(filepath.Join(v2root, "cgroup.controllers"))) {
		if c != "cpuset" && c != "cpu" && c != "perf_event" {
			ctrl = c // a domain controller
			break
		}
	}
	if ctrl == "" {
		t.Skipf("the v2 hierarchy at %s offers no domain controller to enable", v2root)
	}
	// Our test cgroup must receive it from its parent.
	if !contains(strings.Fields(readString(filepath.Join(v2root, "cgroup.subtree_control"))), ctrl) {
		if err := os.WriteFile(filepath.Join(v2root, "cgroup.subtree_control"), []byte("+"+ctrl), 0); err != nil {
			t.Skipf("cannot enable %s below %s: %v", ctrl, v2root, err)
		}
		// Put the host back as it was (best effort: another cgroup may
		// have come to rely on it meanwhile).
		defer os.WriteFile(filepath.Join(v2root, "cgroup.subtree_control"), []byte("-"+ctrl), 0)
	}
	deleg := filepath.Join(v2root, fmt.Sprintf("closet-test-%d", os.Getpid()))
	if err := os.Mkdir(deleg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, d := range []string{filepath.Join(deleg, LeafName), deleg} {
			for i := 0; i < 50; i++ {
				if err := os.Remove(d); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	// Delegation, as systemd does it: the directory and its process and
	// subtree files belong to the user.
	const nobody = 65534
	for _, f := range []string{"", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"} {
		if err := os.Chown(filepath.Join(deleg, f), nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	bin := testutil.ExecutableCopy(t)

	// Another process in the delegated cgroup: closet must refuse and
	// leave it where it is.
	other := startIn(t, deleg, "/bin/sleep", "30")
	defer func() {
		other.Process.Kill()
		other.Wait()
	}()
	r := runV2Helper(t, bin, deleg, ctrl)
	if r.Err == "" || !strings.Contains(r.Err, "closet moves only itself") {
		t.Errorf("with another process in the cgroup: err %q, want a refusal", r.Err)
	}
	if got := cgroupOf(t, other.Process.Pid); got != strings.TrimPrefix(deleg, v2root) {
		t.Errorf("the other process moved to %s", got)
	}
	other.Process.Kill()
	other.Wait()
	time.Sleep(50 * time.Millisecond) // gone from cgroup.procs

	// Alone: closet moves itself into the leaf, enables ctrl, and clones
	// the job into its own cgroup beside the leaf.
	r = runV2Helper(t, bin, deleg, ctrl)
	if r.Err != "" {
		t.Fatal(r.Err)
	}
	rel := strings.TrimPrefix(deleg, v2root)
	if r.Self != rel+"/"+LeafName {
		t.Errorf("closet is in %q, want its leaf %q", r.Self, rel+"/"+LeafName)
	}
	if r.Job != rel+"/job" {
		t.Errorf("the job ran in %q, want %q", r.Job, rel+"/job")
	}
	if !strings.Contains(r.Subtree, ctrl) {
		t.Errorf("subtree_control of the delegated cgroup is %q, want %s on", r.Subtree, ctrl)
	}
	if !r.JobHasCtrl {
		t.Errorf("the job's cgroup has no %s controller", ctrl)
	}
	if me := cgroupOf(t, os.Getpid()); strings.HasPrefix(me, rel) {
		t.Errorf("the test process itself was moved to %s", me)
	}
}

type v2Report struct {
	Self, Job, Subtree string
	JobHasCtrl         bool
	Err                string
}

const v2HelperEnv = "CLOSET_TEST_CGROUP_V2_HELPER"

// TestMain lets the test binary act as a closet in a delegated cgroup.
func TestMain(m *testing.M) {
	if arg := os.Getenv(v2HelperEnv); arg != "" {
		v2Helper(arg)
		return
	}
	os.Exit(m.Run())
}

// v2Helper is closet's side: enable ctrl (moving itself into a leaf), make
// a job cgroup, clone a process into it, and report where everything is.
func v2Helper(ctrl string) {
	var r v2Report
	defer func() { json.NewEncoder(os.Stdout).Encode(r) }()
	hs, err := Host{}.hierarchies()
	if err != nil {
		r.Err = err.Error()
		return
	}
	var own string
	for _, hy := range hs {
		if hy.v2 {
			own = hy.own
		}
	}
	base := v2Base(own)
	if err := enableSubtree(base, []string{"+" + ctrl}, os.Getpid()); err != nil {
		r.Err = err.Error()
		return
	}
	r.Subtree = readString(filepath.Join(base, "cgroup.subtree_control"))
	g, err := New(Host{}, Request{Name: "job", CPU: true})
	if err != nil {
		r.Err = err.Error()
		return
	}
	defer g.Remove()
	if g.FD() < 0 {
		r.Err = "no v2 job cgroup: " + g.Unavailable(CPU)
		return
	}
	r.JobHasCtrl = contains(strings.Fields(readString(filepath.Join(g.v2, "cgroup.controllers"))), ctrl)
	cmd := exec.Command("/bin/cat", "/proc/self/cgroup")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: g.FD()}
	out, err := cmd.Output()
	if err != nil {
		r.Err = err.Error()
		return
	}
	r.Job = v2Path(string(out))
	self, _ := os.ReadFile("/proc/self/cgroup")
	r.Self = v2Path(string(self))
}

// realV2Root is this process's cgroup in the host's v2 hierarchy, where a
// test as root makes its subtree; it skips the test otherwise.
func realV2Root(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making a v2 subtree needs root")
	}
	hs, err := Host{}.hierarchies()
	for _, hy := range hs {
		if hy.v2 && err == nil {
			return hy.own
		}
	}
	t.Skip("no cgroup v2 hierarchy here")
	return ""
}

func v2Path(procCgroup string) string {
	for _, l := range strings.Split(procCgroup, "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	return ""
}

func cgroupOf(t *testing.T, pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	return v2Path(string(b))
}

// startIn starts argv (as root) cloned into cgroup dir.
func startIn(t *testing.T, dir string, argv ...string) *exec.Cmd {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// runV2Helper runs the helper as nobody, cloned into the delegated cgroup.
func runV2Helper(t *testing.T, bin, dir, ctrl string) v2Report {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	cmd := exec.Command(bin)
	cmd.Env = []string{v2HelperEnv + "=" + ctrl}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd,
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	var r v2Report
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("helper: %v %v: %s", err, jerr, out)
	}
	return r
}
