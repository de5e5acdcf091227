package check

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// runPosture reads, from outside, the posture of a target that waits
// inside a sandbox: what /proc on the host says about it.
func (h *host) runPosture(ctx context.Context) error {
	cmd, _, wait, err := h.startHold(ctx, "hold")
	if err != nil {
		return err
	}
	defer wait()
	closet := cmd.Process.Pid
	var initPid, target int
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		initPid = childOf(closet)
		if initPid != 0 {
			target = childOf(initPid)
		}
		if target != 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if target == 0 {
		return fmt.Errorf("could not find the target below closet (pid %d, init %d)", closet, initPid)
	}
	for _, f := range []func(init, target int) Posture{
		postureThreads, postureUIDMap, postureGIDMap, postureSetgroups, postureNamespaces,
		postureMounts, postureFDs, postureRoot, postureTTY, postureEnv(h.p.EnvCanary), postureInit,
	} {
		h.rep.Posture = append(h.rep.Posture, f(initPid, target))
	}
	return nil
}

// childOf finds a child of pid by walking /proc/*/stat.
func childOf(pid int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _ := statField(n, 4); ppid == pid {
			return n
		}
	}
	return 0
}

// statField returns field i (1-based, as in proc(5)) of /proc/pid/stat.
func statField(pid, i int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	j := strings.LastIndexByte(s, ')')
	if j < 0 {
		return 0, fmt.Errorf("bad stat")
	}
	f := strings.Fields(s[j+1:]) // field 3 onwards
	if i-3 >= len(f) || i < 3 {
		return 0, fmt.Errorf("no field %d", i)
	}
	return strconv.Atoi(f[i-3])
}

func postureThreads(_, t int) Posture {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", t))
	if err != nil {
		return Posture{Name: "threads", Value: err.Error()}
	}
	var bad []string
	filters := map[string]bool{}
	for _, task := range tasks {
		st := readStatus(fmt.Sprintf("/proc/%d/task/%s/status", t, task.Name()))
		bad = append(bad, statusProblems("tid "+task.Name(), st)...)
		filters[st["Seccomp_filters"]] = true
	}
	if len(filters) > 1 {
		bad = append(bad, "threads differ in Seccomp_filters")
	}
	if len(bad) > 0 {
		return Posture{Name: "threads", Value: strings.Join(first(bad, 6), "; ")}
	}
	var fs []string
	for f := range filters {
		fs = append(fs, f)
	}
	return Posture{Name: "threads", OK: true, Value: fmt.Sprintf("target pid %d, %d threads: CapInh/Prm/Eff/Bnd/Amb all 0, NoNewPrivs 1, Seccomp 2 (filters %s) on every thread", t, len(tasks), strings.Join(fs, ","))}
}

func idMap(name string, t int, want int) Posture {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", t, name))
	if err != nil {
		return Posture{Name: name, Value: err.Error()}
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	v := strings.Join(strings.Fields(strings.Join(lines, " | ")), " ")
	if len(lines) != 1 {
		return Posture{Name: name, Value: v + ": more than one range"}
	}
	f := strings.Fields(lines[0])
	if len(f) != 3 || f[2] != "1" {
		return Posture{Name: name, Value: v + ": want a single id"}
	}
	outside, _ := strconv.Atoi(f[1])
	if outside == 0 {
		return Posture{Name: name, Value: v + ": the job is host root"}
	}
	if outside != want {
		// A host id of the job's own (--host-uid): a subordinate id of the
		// caller's, or root's range; never the caller's, never 0.
		return Posture{Name: name, OK: true, Value: fmt.Sprintf("%s (inside %s -> host %d, one id of the job's own, not closet's %d)", v, f[0], outside, want)}
	}
	return Posture{Name: name, OK: true, Value: fmt.Sprintf("%s (inside %s -> host %d, one id)", v, f[0], outside)}
}

func postureUIDMap(_, t int) Posture { return idMap("uid_map", t, os.Getuid()) }
func postureGIDMap(_, t int) Posture { return idMap("gid_map", t, os.Getgid()) }

func postureSetgroups(_, t int) Posture {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/setgroups", t))
	v := strings.TrimSpace(string(b))
	if err != nil {
		return Posture{Name: "setgroups", Value: err.Error()}
	}
	st := readStatus(fmt.Sprintf("/proc/%d/status", t))
	// deny: the caller's groups stay, and cannot be changed; allow with
	// no groups: a job with ids of its own dropped them all (and has no
	// capability to take any back).
	ok := v == "deny" || strings.TrimSpace(st["Groups"]) == ""
	return Posture{Name: "setgroups", OK: ok, Value: fmt.Sprintf("%s; Groups: %q", v, st["Groups"])}
}

func postureNamespaces(_, t int) Posture {
	var same, diff []string
	var bad []string
	for _, ns := range []string{"user", "mnt", "pid", "ipc", "uts", "net", "cgroup", "time"} {
		mine, err1 := os.Readlink("/proc/self/ns/" + ns)
		theirs, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", t, ns))
		if err1 != nil || err2 != nil {
			if err1 == nil {
				bad = append(bad, ns+": unreadable")
			}
			continue
		}
		if mine == theirs {
			same = append(same, ns)
			if ns != "time" {
				bad = append(bad, ns+" shared with the host")
			}
		} else {
			diff = append(diff, ns)
		}
	}
	v := fmt.Sprintf("own: %s; shared with closet: %s", strings.Join(diff, " "), strings.Join(same, " "))
	if len(bad) > 0 {
		return Posture{Name: "namespaces", Value: v + "; " + strings.Join(bad, "; ")}
	}
	return Posture{Name: "namespaces", OK: true, Value: v}
}

func postureMounts(_, t int) Posture {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", t))
	if err != nil {
		return Posture{Name: "mounts", Value: err.Error()}
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var bad []string
	store, rw := 0, []string{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 7 {
			continue
		}
		mp, opts := f[4], ","+f[5]+","
		for _, tag := range f[6:] {
			if tag == "-" {
				break
			}
			if strings.HasPrefix(tag, "shared:") || strings.HasPrefix(tag, "master:") {
				bad = append(bad, mp+" propagates ("+tag+")")
			}
		}
		if mp == "/nix/store" || strings.HasPrefix(mp, "/nix/store/") {
			store++
			for _, want := range []string{",ro,", ",nosuid,", ",nodev,"} {
				if !strings.Contains(opts, want) {
					bad = append(bad, mp+" lacks "+strings.Trim(want, ","))
				}
			}
		}
		if !strings.Contains(opts, ",ro,") {
			rw = append(rw, mp)
		}
		if !strings.Contains(opts, ",nosuid,") && mp != "/" && !isDevNode(mp) {
			bad = append(bad, mp+" lacks nosuid")
		}
	}
	v := fmt.Sprintf("%d mounts, %d under /nix/store all ro,nosuid,nodev, none propagating; writable: %s", len(lines), store, strings.Join(rw, " "))
	if len(bad) > 0 {
		return Posture{Name: "mounts", Value: strings.Join(first(bad, 5), "; ")}
	}
	return Posture{Name: "mounts", OK: true, Value: v}
}

// notObservable judges a /proc file of the target that closet's caller
// could not read: not applicable when the job runs as a host uid of its
// own (the caller has no right to another uid's fds or environment; the
// inside attacks check both from within), bad otherwise.
func notObservable(name string, t int, err error) Posture {
	st := readStatus(fmt.Sprintf("/proc/%d/status", t))
	uid := strings.Fields(st["Uid"])
	if errors.Is(err, fs.ErrPermission) && len(uid) > 1 && uid[1] != strconv.Itoa(os.Getuid()) {
		return Posture{Name: name, OK: true, Value: fmt.Sprintf("not applicable: the job runs as host uid %s, its own, whose /proc files closet's caller cannot read (the inside attacks check them)", uid[1])}
	}
	return Posture{Name: name, Value: err.Error()}
}

func postureFDs(_, t int) Posture {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", t))
	if err != nil {
		return notObservable("fds", t, err)
	}
	var all, bad []string
	for _, e := range ents {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", t, e.Name()))
		all = append(all, e.Name()+"="+link)
		n, _ := strconv.Atoi(e.Name())
		if n > 2 && !strings.HasPrefix(link, "anon_inode:[eventpoll]") && !strings.HasPrefix(link, "anon_inode:[eventfd]") {
			bad = append(bad, e.Name()+"="+link)
		}
		if strings.HasPrefix(link, "/") && n <= 2 && !strings.HasPrefix(link, "/dev/") {
			bad = append(bad, e.Name()+"="+link)
		}
	}
	if len(bad) > 0 {
		return Posture{Name: "fds", Value: "unexpected: " + strings.Join(bad, " ")}
	}
	return Posture{Name: "fds", OK: true, Value: strings.Join(all, " ")}
}

func postureRoot(_, t int) Posture {
	var mine, theirs unix.Stat_t
	if err := unix.Stat("/", &mine); err != nil {
		return Posture{Name: "root", Value: err.Error()}
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root/", t), &theirs); err != nil {
		return Posture{Name: "root", Value: err.Error()}
	}
	cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", t))
	if mine.Dev == theirs.Dev && mine.Ino == theirs.Ino {
		return Posture{Name: "root", Value: "the target's root is the host's root"}
	}
	return Posture{Name: "root", OK: true, Value: fmt.Sprintf("own root (dev %d:%d, not the host's); cwd %s", unix.Major(theirs.Dev), unix.Minor(theirs.Dev), cwd)}
}

func postureTTY(_, t int) Posture {
	sid, _ := statField(t, 6)
	tty, _ := statField(t, 7)
	if tty != 0 {
		return Posture{Name: "session", Value: fmt.Sprintf("controlling terminal %d:%d", unix.Major(uint64(tty)), unix.Minor(uint64(tty)))}
	}
	return Posture{Name: "session", OK: true, Value: fmt.Sprintf("session leader %d, no controlling terminal", sid)}
}

func postureEnv(canary string) func(int, int) Posture {
	return func(_, t int) Posture {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", t))
		if err != nil {
			return notObservable("environment", t, err)
		}
		var names []string
		for _, kv := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
			k, _, _ := strings.Cut(kv, "=")
			names = append(names, k)
		}
		v := strings.Join(names, " ")
		if strings.Contains(string(b), canary) {
			return Posture{Name: "environment", Value: v + ": closet's " + canary + " reached the job"}
		}
		return Posture{Name: "environment", OK: true, Value: v}
	}
}

// postureInit reports the sandbox's pid 1: it holds capabilities over the
// sandbox's own namespaces, so it must be non-dumpable (its /proc files
// then belong to root, not to the job's uid).
func postureInit(i, _ int) Posture {
	st := readStatus(fmt.Sprintf("/proc/%d/status", i))
	var fi unix.Stat_t
	err := unix.Stat(fmt.Sprintf("/proc/%d/environ", i), &fi)
	if err != nil {
		return Posture{Name: "init", Value: err.Error()}
	}
	v := fmt.Sprintf("pid %d, CapEff %s, NoNewPrivs %s, Seccomp %s, /proc files owned by uid %d", i, st["CapEff"], st["NoNewPrivs"], st["Seccomp"], fi.Uid)
	if os.Getuid() == 0 {
		return Posture{Name: "init", OK: true, Value: v + " (dumpability cannot be told apart as root)"}
	}
	if int(fi.Uid) == os.Getuid() {
		return Posture{Name: "init", Value: v + ": init is dumpable, so the job could open its /proc files"}
	}
	return Posture{Name: "init", OK: true, Value: v + " (non-dumpable)"}
}

// isDevNode reports a bind of one host device node into /dev: a device
// file cannot be executed, so nosuid means nothing there.
func isDevNode(mp string) bool {
	switch mp {
	case "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty":
		return true
	}
	return false
}
