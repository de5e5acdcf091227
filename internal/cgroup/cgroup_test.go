package cgroup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeHost builds a hybrid host in a temp dir: v1 memory and pids, and a
// cpu,cpuacct pair, with closet's own cgroups below each.
func fakeHost(t *testing.T) (Host, string) {
	d := t.TempDir()
	for _, p := range []string{"memory/jobs/me", "pids", "cpu,cpuacct", "unified/user.slice"} {
		if err := os.MkdirAll(filepath.Join(d, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	esc := strings.ReplaceAll(d, " ", `\040`)
	mi := fmt.Sprintf(`31 23 0:28 / %[1]s rw - tmpfs tmpfs rw
32 31 0:29 / %[1]s/memory rw,relatime shared:9 - cgroup cgroup rw,memory
33 31 0:30 / %[1]s/pids rw - cgroup cgroup rw,pids
34 31 0:31 / %[1]s/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / %[1]s/unified rw - cgroup2 cgroup2 rw
36 31 0:33 /jobs %[1]s/elsewhere rw - cgroup cgroup rw,freezer
`, esc)
	pc := "5:freezer:/other\n4:memory:/jobs/me\n3:pids:/\n2:cpu,cpuacct:/\n0::/user.slice\n"
	h := Host{ProcSelfCgroup: filepath.Join(d, "cgroup"), MountInfo: filepath.Join(d, "mountinfo")}
	os.WriteFile(h.ProcSelfCgroup, []byte(pc), 0o644)
	os.WriteFile(h.MountInfo, []byte(mi), 0o644)
	return h, d
}

func TestHierarchies(t *testing.T) {
	h, d := fakeHost(t)
	hs, err := h.hierarchies()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, hy := range hs {
		k := strings.Join(hy.controllers, ",")
		if hy.v2 {
			k = "v2"
		}
		got[k] = strings.TrimPrefix(hy.own, d)
	}
	want := map[string]string{"memory": "/memory/jobs/me", "pids": "/pids", "cpu,cpuacct": "/cpu,cpuacct", "v2": "/unified/user.slice"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: own cgroup %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if _, ok := got["freezer"]; ok {
		t.Errorf("freezer mounted below our cgroup's root was used: %v", got)
	}
}

func TestNewFakeV1(t *testing.T) {
	h, d := fakeHost(t)
	// A fake tree is plain files: create what the kernel would.
	for _, f := range []string{"memory/jobs/me/x/memory.limit_in_bytes", "pids/x/pids.max"} {
		os.MkdirAll(filepath.Dir(filepath.Join(d, f)), 0o755)
		os.WriteFile(filepath.Join(d, f), nil, 0o644)
	}
	os.Remove(filepath.Join(d, "memory/jobs/me/x/memory.limit_in_bytes"))
	os.Remove(filepath.Join(d, "memory/jobs/me/x"))
	os.Remove(filepath.Join(d, "pids/x/pids.max"))
	os.Remove(filepath.Join(d, "pids/x"))
	g, err := New(h, Request{Name: "x", CPU: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	if g.Mechanism(CPU) != V1 || g.Mechanism(Memory) != "" {
		t.Errorf("cpu %q memory %q, want cgroup-v1 and none", g.Mechanism(CPU), g.Mechanism(Memory))
	}
	if _, err := os.Stat(filepath.Join(d, "cpu,cpuacct/x")); err != nil {
		t.Errorf("job cgroup not created beneath our own: %v", err)
	}
	if _, err := New(h, Request{Name: "../escape"}); err == nil {
		t.Error("a name with a slash was accepted")
	}
}

// TestRealV1 exercises the host's v1 hierarchies, as root only.
func TestRealV1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("v1 cgroups need root")
	}
	g, err := New(Host{}, Request{Name: fmt.Sprintf("closet-test-%d", os.Getpid()), MemoryMax: 64 << 20, PidsMax: 8, CPU: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	if g.Mechanism(Memory) == "" || g.Mechanism(Pids) == "" {
		t.Skipf("no memory or pids cgroup here: %s; %s", g.Unavailable(Memory), g.Unavailable(Pids))
	}
	// The charge for memory used before the move stays behind: allocate after.
	cmd := exec.Command("sh", "-c", `sleep 0.2; x=$(head -c 4000000 /dev/zero | tr '\0' a); sleep 30`)
	if fd := g.FD(); fd >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.Attach(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	time.Sleep(time.Second)
	g.Kill()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("Kill did not end the process in the group")
	}
	if st := g.Stats(); st.PeakMemory == 0 || !st.HasCPU || st.CPU == 0 {
		t.Errorf("no peak memory or CPU time: %+v", st)
	}
	t.Logf("memory %s, pids %s, cpu %s", g.Mechanism(Memory), g.Mechanism(Pids), g.Mechanism(CPU))
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
}
