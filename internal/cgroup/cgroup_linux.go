// Package cgroup gives one job its own control groups: a memory limit, a
// process limit, CPU accounting, the peak memory and the OOM count, and a
// way to kill every process in it.
//
// closet only ever creates cgroups beneath the cgroup it was started in
// (per hierarchy, as /proc/self/cgroup names it), and only ever places its
// own job's init there. The one process it ever moves is itself: on v2,
// into a leaf beneath its own cgroup (LeafName), so that its cgroup may
// enable controllers for the jobs' cgroups. (A job's first process moves
// itself, from the init's part of the job's pids cgroup into the job's,
// through JobProcs.)
//
// Two kinds of host are served:
//
//   - cgroup v2 with delegation: the caller's cgroup lists the controllers
//     in cgroup.controllers and the caller may write it (systemd-run --user
//     --scope -p Delegate=yes, or a service with Delegate=yes). closet
//     moves itself into a leaf there when it must, the job's cgroup is
//     created beside it, and the init is cloned straight into it
//     (CLONE_INTO_CGROUP, see FD).
//   - cgroup v1 (or the v1 hierarchies of a hybrid host) where closet may
//     create a child of its own cgroup, which in practice means root. v1 has
//     no CLONE_INTO_CGROUP: the parent writes the init's pid into each
//     hierarchy's cgroup.procs right after clone (see Attach).
//
// With Request.JobPids, the pids controller's directory is split in two
// (see InitDir and JobDir): the init is counted apart from the job, whose
// processes join the job's directory themselves (JobProcs), so the job's
// allowance is exactly its own, whatever threads closet's init starts.
//
// A controller that is not available is simply absent from the Group: the
// caller decides whether to fall back (to an rlimit) or to refuse, and says
// which mechanism enforced each limit.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Controllers closet uses.
const (
	Memory = "memory"
	Pids   = "pids"
	CPU    = "cpu" // accounting only: cpuacct on v1, cpu.stat on v2
)

// Mechanisms, as reports name them.
const (
	V1 = "cgroup-v1"
	V2 = "cgroup-v2"
)

// Request says what a job needs from its cgroups. Zero limits mean none.
type Request struct {
	// Name is the child directory created beneath closet's own cgroup in
	// each hierarchy used, e.g. "closet-1234-1".
	Name string
	// MemoryMax in bytes (memory.max, memory.limit_in_bytes), PidsMax
	// processes (pids.max).
	MemoryMax, PidsMax uint64
	// Memory, Pids and CPU ask for the controller even without a limit,
	// for measurement (peak memory, CPU time).
	Memory, Pids, CPU bool
	// JobPids, when > 0, splits the pids controller's directory in two:
	// InitDir, which holds the job's init and is bounded only by the
	// directory's PidsMax, and JobDir, whose pids.max is JobPids, set
	// before anything runs. The job's first process joins JobDir itself
	// by writing "0" to JobProcs. On v2 the directory then enables pids
	// for its children and holds no process itself (the init is cloned
	// into InitDir, see FD).
	JobPids uint64
}

// The children of a split pids directory (Request.JobPids).
const (
	InitDir = "init"
	JobDir  = "job"
)

// Host locates the cgroup filesystems; the zero value is the real host.
// Tests point it at a fake tree.
type Host struct {
	ProcSelfCgroup string // default /proc/self/cgroup
	MountInfo      string // default /proc/self/mountinfo
}

// Group is one job's cgroups: at most one v2 directory and one v1
// directory per controller.
type Group struct {
	v2   string            // the job's v2 directory, or ""
	v1   map[string]string // controller -> the job's v1 directory
	mech map[string]string // controller -> V1 or V2
	why  map[string]string // controller -> why it is unavailable
	fd   int               // open v2 directory for CLONE_INTO_CGROUP, or -1
	// split is the pids directory split into InitDir and JobDir, or "";
	// jobProcs is JobDir's cgroup.procs, open for writing.
	split    string
	jobProcs *os.File
}

// JobProcs is the job's pids directory's cgroup.procs (Request.JobPids),
// opened by this process: writing "0" to it moves the writer into the
// directory. The kernel checks the move against the opener's credentials
// and, on v2, its cgroup namespace (Linux 5.16 and later; v1 lets a task
// move itself whatever namespace it is in), so a job's process in a
// cgroup namespace of its own can join with it. nil without a split.
func (g *Group) JobProcs() *os.File {
	if g == nil {
		return nil
	}
	return g.jobProcs
}

// Mechanism says how controller c is provided: V1, V2, or "" when it is
// not (see Unavailable).
func (g *Group) Mechanism(c string) string {
	if g == nil {
		return ""
	}
	return g.mech[c]
}

// Unavailable says why controller c could not be provided.
func (g *Group) Unavailable(c string) string {
	if g == nil {
		return "no cgroup"
	}
	if w := g.why[c]; w != "" {
		return w
	}
	return "not requested"
}

// FD is the open v2 directory to clone the init into (SysProcAttr.UseCgroupFD),
// or -1 when there is no v2 directory.
func (g *Group) FD() int {
	if g == nil {
		return -1
	}
	return g.fd
}

// hierarchy is one mounted cgroup filesystem and closet's cgroup in it.
type hierarchy struct {
	v2          bool
	controllers []string // v1: the mount's controllers
	own         string   // closet's own cgroup directory (absolute path)
}

// New creates the job's cgroups for req. It fails only when a directory
// it created cannot be set up; controllers that are unavailable are
// reported by Mechanism and Unavailable instead.
func New(h Host, req Request) (*Group, error) {
	if req.Name == "" || strings.ContainsAny(req.Name, "/.") {
		return nil, fmt.Errorf("cgroup name %q: a plain name, please", req.Name)
	}
	g := &Group{v1: map[string]string{}, mech: map[string]string{}, why: map[string]string{}, fd: -1}
	hs, err := h.hierarchies()
	if err != nil {
		for _, c := range []string{Memory, Pids, CPU} {
			g.why[c] = err.Error()
		}
		return g, nil
	}
	want := map[string]bool{
		Memory: req.Memory || req.MemoryMax > 0,
		Pids:   req.Pids || req.PidsMax > 0,
		CPU:    req.CPU,
	}
	ok := false
	defer func() {
		if !ok {
			g.Remove()
		}
	}()

	// v2 first: one directory for every controller the caller's cgroup
	// delegates.
	for _, hy := range hs {
		if !hy.v2 {
			continue
		}
		base := v2Base(hy.own)
		avail := v2Available(base, want)
		if len(avail) == 0 {
			break
		}
		if err := g.makeV2(base, req, avail); err != nil {
			for _, c := range avail {
				g.why[c] = err.Error()
				delete(g.mech, c)
			}
			if g.fd >= 0 {
				unix.Close(g.fd)
				g.fd = -1
			}
			if g.v2 != "" {
				if g.jobProcs != nil {
					g.jobProcs.Close()
					g.jobProcs = nil
				}
				for _, d := range g.subdirs(g.v2) {
					unix.Rmdir(d)
				}
				g.v2, g.split = "", ""
			}
		}
		break
	}
	// Then v1, per controller still missing.
	for _, c := range []string{Memory, Pids, CPU} {
		if !want[c] || g.mech[c] != "" {
			continue
		}
		name := c
		if c == CPU {
			name = "cpuacct"
		}
		var hy *hierarchy
		for i := range hs {
			if !hs[i].v2 && contains(hs[i].controllers, name) {
				hy = &hs[i]
			}
		}
		if hy == nil {
			if g.why[c] == "" {
				g.why[c] = "no cgroup v1 " + name + " hierarchy and no delegated cgroup v2 " + c + " controller"
			}
			continue
		}
		dir, err := g.makeV1(hy, req.Name)
		if err != nil {
			g.why[c] = err.Error()
			continue
		}
		if err := setV1(c, dir, req); err != nil {
			return nil, err
		}
		if c == Pids && req.JobPids > 0 {
			if err := g.splitPids(dir, req.JobPids); err != nil {
				return nil, err
			}
		}
		g.mech[c] = V1
		g.why[c] = ""
	}
	ok = true
	return g, nil
}

// splitPids makes dir's InitDir and JobDir, caps JobDir at n tasks and
// opens its cgroup.procs (see Request.JobPids).
func (g *Group) splitPids(dir string, n uint64) error {
	g.split = dir
	for _, c := range []string{InitDir, JobDir} {
		if err := mkdirCgroup(filepath.Join(dir, c)); err != nil {
			return fmt.Errorf("cgroup: the job's pids cgroup: %w", err)
		}
	}
	job := filepath.Join(dir, JobDir)
	if err := writeFirst(job, n, "pids.max"); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(job, "cgroup.procs"), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cgroup: open the job's pids cgroup: %w", err)
	}
	g.jobProcs = f
	return nil
}

// subdirs are dir and, where it is the split pids directory, its children
// first.
func (g *Group) subdirs(dir string) []string {
	if dir != "" && dir == g.split {
		return []string{filepath.Join(dir, JobDir), filepath.Join(dir, InitDir), dir}
	}
	return []string{dir}
}

// mkdirCgroup makes a cgroup directory; tests of a fake tree add the
// interface files the kernel would.
var mkdirCgroup = func(dir string) error { return os.Mkdir(dir, 0o755) }

// v2Available lists the wanted controllers closet's own v2 cgroup can hand
// to a child: listed in cgroup.controllers, with cgroup.procs and
// cgroup.subtree_control writable by the caller (delegation). CPU
// accounting (cpu.stat) comes with any v2 cgroup.
func v2Available(own string, want map[string]bool) []string {
	if unix.Access(filepath.Join(own, "cgroup.procs"), unix.W_OK) != nil ||
		unix.Access(own, unix.W_OK) != nil {
		return nil
	}
	ctrls := strings.Fields(readString(filepath.Join(own, "cgroup.controllers")))
	var out []string
	for _, c := range []string{Memory, Pids} {
		if want[c] && contains(ctrls, c) {
			out = append(out, c)
		}
	}
	if want[CPU] {
		out = append(out, CPU)
	}
	return out
}

func (g *Group) makeV2(own string, req Request, avail []string) error {
	// The controllers must be on in our own subtree_control. Turning them on
	// fails (EBUSY) while our cgroup holds processes: closet then moves
	// itself into a leaf (enableSubtree).
	sub := strings.Fields(readString(filepath.Join(own, "cgroup.subtree_control")))
	var enable []string
	for _, c := range avail {
		if c != CPU && !contains(sub, c) {
			enable = append(enable, "+"+c)
		}
	}
	if err := enableSubtree(own, enable, os.Getpid()); err != nil {
		return fmt.Errorf("cgroup v2 %s: enable %s: %w", own, strings.Join(enable, " "), err)
	}
	dir := filepath.Join(own, req.Name)
	if err := mkdirCgroup(dir); err != nil {
		return fmt.Errorf("cgroup v2: %w", err)
	}
	g.v2 = dir
	for _, c := range avail {
		var err error
		switch c {
		case Memory:
			if req.MemoryMax > 0 {
				err = writeFirst(dir, req.MemoryMax, "memory.max")
				if err == nil {
					writeFirst(dir, 0, "memory.swap.max") // absent without swap accounting
				}
			}
			if err == nil {
				// An OOM kill ends the whole job, not one process of it.
				writeFirst(dir, 1, "memory.oom.group")
			}
		case Pids:
			if req.PidsMax > 0 {
				err = writeFirst(dir, req.PidsMax, "pids.max")
			}
			if err == nil && req.JobPids > 0 {
				// No internal processes: with pids on for its children,
				// the directory itself holds none, the init is cloned
				// into InitDir.
				if err = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+pids"), 0); err != nil {
					err = fmt.Errorf("cgroup v2 %s: enable +pids: %w", dir, err)
				} else {
					err = g.splitPids(dir, req.JobPids)
				}
			}
		}
		if err != nil {
			return err
		}
		g.mech[c] = V2
	}
	into := dir
	if g.split != "" {
		into = filepath.Join(dir, InitDir)
	}
	fd, err := unix.Open(into, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cgroup v2: open %s: %w", into, err)
	}
	g.fd = fd
	return nil
}

func (g *Group) makeV1(hy *hierarchy, name string) (string, error) {
	for _, c := range hy.controllers {
		if d := g.v1[c]; d != "" {
			return d, nil // co-mounted controllers (cpu,cpuacct) share a directory
		}
	}
	dir := filepath.Join(hy.own, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("cgroup v1 %s: %w (v1 cgroups need root, or a cgroup delegated to you)", hy.own, err)
	}
	for _, c := range hy.controllers {
		g.v1[c] = dir
	}
	return dir, nil
}

func setV1(c, dir string, req Request) error {
	switch c {
	case Memory:
		if req.MemoryMax > 0 {
			if err := writeFirst(dir, req.MemoryMax, "memory.limit_in_bytes"); err != nil {
				return err
			}
			// With swap accounting, memory+swap gets the same limit: the
			// job cannot page out to escape it.
			writeFirst(dir, req.MemoryMax, "memory.memsw.limit_in_bytes")
		}
	case Pids:
		if req.PidsMax > 0 {
			return writeFirst(dir, req.PidsMax, "pids.max")
		}
	}
	return nil
}

// writeFirst writes v to the first of files that exists in dir.
func writeFirst(dir string, v uint64, files ...string) error {
	var last error
	for _, f := range files {
		p := filepath.Join(dir, f)
		if _, err := os.Stat(p); err != nil {
			last = err
			continue
		}
		if err := os.WriteFile(p, []byte(strconv.FormatUint(v, 10)), 0); err != nil {
			return fmt.Errorf("cgroup: write %d to %s: %w", v, p, err)
		}
		return nil
	}
	return fmt.Errorf("cgroup: %s: %w", strings.Join(files, ", "), last)
}

// SetPidsMax sets the group's task limit (pids.max): with a split
// (Request.JobPids), the cap of the init and the job together.
func (g *Group) SetPidsMax(n uint64) error {
	switch g.Mechanism(Pids) {
	case V2:
		return writeFirst(g.v2, n, "pids.max")
	case V1:
		return writeFirst(g.v1[Pids], n, "pids.max")
	}
	return errors.New("cgroup: no pids controller")
}

// Attach places pid in every v1 directory of the group (in the split pids
// directory, in its InitDir). The v2 directory needs no Attach: the init
// is cloned into it.
func (g *Group) Attach(pid int) error {
	if g == nil {
		return nil
	}
	done := map[string]bool{}
	for _, d := range g.v1 {
		if done[d] {
			continue
		}
		done[d] = true
		if d == g.split {
			d = filepath.Join(d, InitDir)
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("cgroup v1: place the job in %s: %w", d, err)
		}
	}
	return nil
}

// CPUTime is the CPU time the group's processes used (user+system), and
// whether the group accounts it.
func (g *Group) CPUTime() (time.Duration, bool) {
	if g == nil {
		return 0, false
	}
	switch g.mech[CPU] {
	case V2:
		for _, l := range strings.Split(readString(filepath.Join(g.v2, "cpu.stat")), "\n") {
			if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return time.Duration(n) * time.Microsecond, true
			}
		}
	case V1:
		if n, ok := readUint(filepath.Join(g.v1["cpuacct"], "cpuacct.usage")); ok {
			return time.Duration(n), true
		}
	}
	return 0, false
}

// Stats are the group's figures once the job ended.
type Stats struct {
	// PeakMemory in bytes (memory.peak, memory.max_usage_in_bytes); 0 when
	// unknown.
	PeakMemory uint64
	// OOMKills counts processes the OOM killer ended in the group; Failcnt
	// (v1) how often usage hit the limit.
	OOMKills, Failcnt uint64
	// CPU is the group's CPU time, when HasCPU.
	CPU    time.Duration
	HasCPU bool
}

// Stats reads the group's figures.
func (g *Group) Stats() Stats {
	var st Stats
	if g == nil {
		return st
	}
	switch g.mech[Memory] {
	case V2:
		st.PeakMemory, _ = readUint(filepath.Join(g.v2, "memory.peak"))
		st.OOMKills = keyed(filepath.Join(g.v2, "memory.events"), "oom_kill")
	case V1:
		d := g.v1[Memory]
		st.PeakMemory, _ = readUint(filepath.Join(d, "memory.max_usage_in_bytes"))
		st.OOMKills = keyed(filepath.Join(d, "memory.oom_control"), "oom_kill")
		st.Failcnt, _ = readUint(filepath.Join(d, "memory.failcnt"))
	}
	st.CPU, st.HasCPU = g.CPUTime()
	return st
}

// Kill ends every process in the group: cgroup.kill on v2, SIGKILL to each
// listed process on v1 (they are all the job's). Killing the job's init
// does the same for its whole pid namespace; this is the second fence.
func (g *Group) Kill() {
	if g == nil {
		return
	}
	if g.v2 != "" {
		if os.WriteFile(filepath.Join(g.v2, "cgroup.kill"), []byte("1"), 0) != nil {
			for _, s := range g.subdirs(g.v2) {
				killListed(s)
			}
		}
	}
	for _, d := range g.v1 {
		for _, s := range g.subdirs(d) {
			killListed(s)
		}
	}
}

func killListed(dir string) {
	for _, f := range strings.Fields(readString(filepath.Join(dir, "cgroup.procs"))) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// Remove kills what is left and removes the group's directories. A
// directory whose processes are still exiting is retried for up to a
// second.
func (g *Group) Remove() error {
	if g == nil {
		return nil
	}
	if g.fd >= 0 {
		unix.Close(g.fd)
		g.fd = -1
	}
	if g.jobProcs != nil {
		g.jobProcs.Close()
		g.jobProcs = nil
	}
	seen := map[string]bool{}
	var dirs []string // children before their parent
	for _, d := range append([]string{g.v2}, mapValues(g.v1)...) {
		if d != "" && !seen[d] {
			seen[d] = true
			dirs = append(dirs, g.subdirs(d)...)
		}
	}
	var errs []error
	for _, d := range dirs {
		var err error
		for i := 0; i < 100; i++ {
			if err = unix.Rmdir(d); err == nil || err == unix.ENOENT {
				err = nil
				break
			}
			if err != unix.EBUSY {
				break
			}
			killListed(d)
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	g.v2, g.v1, g.split = "", map[string]string{}, ""
	return errors.Join(errs...)
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// hierarchies finds every cgroup filesystem and closet's own directory in
// it.
func (h Host) hierarchies() ([]hierarchy, error) {
	pc, mi := h.ProcSelfCgroup, h.MountInfo
	if pc == "" {
		pc = "/proc/self/cgroup"
	}
	if mi == "" {
		mi = "/proc/self/mountinfo"
	}
	// /proc/self/cgroup: "ID:controllers:path"; v2 is "0::path".
	own := map[string]string{} // controller (or "" for v2) -> path
	b, err := os.ReadFile(pc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", pc, err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			own[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			own[c] = parts[2]
		}
	}
	f, err := os.Open(mi)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var hs []hierarchy
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || len(fields) < sep+4 {
			continue
		}
		root, mnt, fstype, super := unescape(fields[3]), unescape(fields[4]), fields[sep+1], fields[sep+3]
		var hy hierarchy
		var path string
		switch fstype {
		case "cgroup2":
			p, ok := own[""]
			if !ok {
				continue
			}
			hy.v2, path = true, p
		case "cgroup":
			for _, o := range strings.Split(super, ",") {
				if _, ok := own[o]; ok && o != "" {
					hy.controllers = append(hy.controllers, o)
				}
			}
			if len(hy.controllers) == 0 {
				continue
			}
			path = own[hy.controllers[0]]
		default:
			continue
		}
		rel, ok := strings.CutPrefix(path, root)
		if root == "/" {
			rel, ok = path, true
		}
		if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
			continue // our cgroup is outside what this mount shows
		}
		hy.own = filepath.Join(mnt, rel)
		if st, err := os.Stat(hy.own); err != nil || !st.IsDir() {
			continue
		}
		hs = append(hs, hy)
	}
	if len(hs) == 0 {
		return nil, errors.New("no cgroup filesystem is mounted")
	}
	return hs, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func readString(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

func readUint(p string) (uint64, bool) {
	n, err := strconv.ParseUint(readString(p), 10, 64)
	return n, err == nil
}

// keyed reads "key value" from a flat-keyed file.
func keyed(p, key string) uint64 {
	for _, l := range strings.Split(readString(p), "\n") {
		if v, ok := strings.CutPrefix(l, key+" "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
