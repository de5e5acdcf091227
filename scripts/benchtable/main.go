// Command benchtable times whole processes — closet against nix-store and
// bubblewrap on the same store paths, in the same run — and prints a
// Markdown table of medians and ratios for BENCHMARKS.md.
//
// It is run by scripts/bench, which builds the fixture store (with the
// large DAGs) and closet first.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var (
	closet   = flag.String("closet", "./closet", "the closet binary")
	fixture  = flag.String("fixture", ".fixture", "the fixture directory")
	runs     = flag.Int("runs", 15, "runs per measurement (the median is reported)")
	asUser   = flag.String("user", "nobody", "when run as root, the unprivileged user every measured command runs as, in the nix-users group as a Debian Nix user is (\"root\": as root)")
	warm     = flag.String("benchwarm", "", "the benchwarm binary (scripts/benchwarm) for the warm-start rows; \"\" skips them")
	floor    = flag.String("floor", "", "the benchfloor binary (scripts/benchfloor), timed with and without -confine beside closet and bwrap at 1 and 10 paths; \"\" skips it")
	noBuild  = flag.Bool("no-concurrent-build", false, "skip the rows measured while nix-build registers paths")
	bwrapMax = flag.Int("bwrap-max", 2000, "largest closure to give bubblewrap: it is quadratic (13 s at 2,000 binds) and refuses about 3,000 (its 9,000-argument cap)")
)

func main() {
	flag.Parse()
	if abs, err := filepath.Abs(*closet); err == nil {
		*closet = abs // the run measurements start in a scratch directory
	}
	sizes := []string{"10", "100", "1000", "3000", "10000"}
	bb := link("busybox")
	fmt.Printf("Runs per cell: %d (median). Machine: %s. User: %s\n\n", *runs, machine(), who())

	fmt.Println("### closet closure vs nix-store -qR")
	fmt.Println()
	fmt.Println("| closure | paths | closet closure | nix-store -qR | closet / nix-store |")
	fmt.Println("|---|---:|---:|---:|---:|")
	for _, n := range sizes[1:] {
		root, ok := optLink("dag-" + n)
		if !ok {
			continue
		}
		paths := closureLen(root)
		c := median(*runs, *closet, "closure", root)
		x := median(*runs, "nix-store", "--query", "--requisites", root)
		fmt.Printf("| dag-%s | %d | %s | %s | %.3f |\n", n, paths, ms(c), ms(x), float64(c)/float64(x))
	}

	fmt.Println()
	fmt.Println("### closet run of a no-op vs bubblewrap with the same binds")
	fmt.Println()
	fmt.Println("| closure | paths | closet run | bwrap | nix-store -qR + bwrap | closet / bwrap | closet / (qR + bwrap) |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	dir, _ := os.MkdirTemp("", "closet-bench-")
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755) // the unprivileged user's working directory
	for _, n := range append([]string{"1"}, sizes...) {
		root, ok := optLink("dag-" + n)
		if n == "1" {
			root, ok = bb, true // busybox alone: a 1-path closure
		}
		if !ok {
			continue
		}
		paths := strings.Fields(run("nix-store", "--query", "--requisites", root, bb))
		c := medianIn(dir, *runs, *closet, "run", "--cwd", "none", root, bb, "--", "true")
		var bw, qb time.Duration
		bwCell, qbCell, r1, r2 := "not run", "not run", "-", "-"
		if len(paths) <= *bwrapMax {
			k := *runs
			if len(paths) > 500 {
				k = 3 // seconds per run: a few are enough to see the shape
			}
			args := bwrapArgs(paths, bb)
			bw = medianIn(dir, k, "bwrap", args...)
			script := fmt.Sprintf(`set -e; paths=$(nix-store --query --requisites %s %s); a=""; for p in $paths; do a="$a --ro-bind $p $p"; done; exec bwrap --unshare-all --die-with-parent --proc /proc --dev /dev --tmpfs /tmp $a -- %s/bin/true`, root, bb, bb)
			qb = medianIn(dir, k, "sh", "-c", script)
			bwCell, qbCell = ms(bw), ms(qb)
			r1, r2 = fmt.Sprintf("%.3f", float64(c)/float64(bw)), fmt.Sprintf("%.3f", float64(c)/float64(qb))
		}
		fmt.Printf("| %s | %d | %s | %s | %s | %s | %s |\n", name(n), len(paths), ms(c), bwCell, qbCell, r1, r2)
		if n == "1" {
			bw1 = bw
		} else if n == "10" {
			bw10 = bw
		}
	}
	floors(dir, bb, bw1)
	if *warm != "" {
		warmStarts(bb, bw1, bw10)
	}
	if !*noBuild {
		duringBuild(dir, bb)
	}
}

// bw1, bw10: bubblewrap's times at 1 and 10 paths, the warm starts' peers.
var bw1, bw10 time.Duration

func name(n string) string {
	if n == "1" {
		return "busybox"
	}
	return "dag-" + n
}

// warmStarts prints benchwarm's rows: whole no-op jobs in one long-lived
// process (as the service runs them), building the view per job and
// copying a cached one.
func warmStarts(bb string, bw1, bw10 time.Duration) {
	fmt.Println()
	fmt.Println("### warm starts: no-op jobs in one process, view built per job vs copied from the cache (job = Prepare + Start + Wait; Start = until the target runs)")
	fmt.Println()
	fmt.Printf("bubblewrap, same run: %s at 1 path, %s at 10.\n\n", ms(bw1), ms(bw10))
	fmt.Println("| paths | job, view built | job, cached view | cached / built | Start, view built | Start, cached view | cached / built |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|")
	args := []string{*warm, "-closet", *closet, "-runs", fmt.Sprint(*runs), "-busybox", bb}
	for _, n := range []string{"10", "3000", "10000"} {
		if root, ok := optLink("dag-" + n); ok {
			args = append(args, root)
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = os.TempDir()
	unprivileged(cmd)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "benchtable: benchwarm: %v\n", err)
		os.Exit(1)
	}
}

// duringBuild measures closet closure and closet run again while a
// nix-build registers a few hundred new paths, against the same commands
// idle, in the same run.
func duringBuild(dir, bb string) {
	root, ok := optLink("dag-3000")
	if !ok {
		root = link("dag-100")
	}
	small := link("dag-10")
	fmt.Println()
	fmt.Println("### while nix-build registers new paths")
	fmt.Println()
	idleC := median(*runs, *closet, "closure", root)
	idleR := medianIn(dir, *runs, *closet, "run", "--cwd", "none", small, bb, "--", "true")
	build, done, err := startBuild(400)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtable: start the concurrent build: %v\n", err)
		os.Exit(1)
	}
	var busyC, busyR time.Duration
	var rss int64
	for {
		// Re-measure until the build outlived the measurements: the
		// figures must come from while it writes.
		busyC = median(*runs, *closet, "closure", root)
		rss = peakRSS(*closet, "closure", root)
		busyR = medianIn(dir, *runs, *closet, "run", "--cwd", "none", small, bb, "--", "true")
		select {
		case <-done:
			fmt.Fprintln(os.Stderr, "benchtable: the build ended before the measurements did; measuring again with a larger one")
			build, done, err = startBuild(1600)
			if err != nil {
				fmt.Fprintf(os.Stderr, "benchtable: %v\n", err)
				os.Exit(1)
			}
			continue
		default:
		}
		break
	}
	wal, _ := os.Stat("/nix/var/nix/db/db.sqlite-wal")
	build.Process.Kill()
	<-done
	walSize := int64(0)
	if wal != nil {
		walSize = wal.Size()
	}
	fmt.Printf("| measurement | idle | during the build | during / idle |\n")
	fmt.Printf("|---|---:|---:|---:|\n")
	fmt.Printf("| closet closure %s | %s | %s | %.2f |\n", filepath.Base(root)[33:], ms(idleC), ms(busyC), float64(busyC)/float64(idleC))
	fmt.Printf("| closet run dag-10 | %s | %s | %.2f |\n", ms(idleR), ms(busyR), float64(busyR)/float64(idleR))
	fmt.Printf("\nPeak RSS of closet closure during the build: %.1f MiB; WAL size then: %.1f MiB.\n", float64(rss)/1024, float64(walSize)/(1<<20))
}

// startBuild starts, as root (the store's writer), a nix-build of n
// trivial derivations no store holds yet (a fresh salt), which registers
// n new paths one by one; done is closed when it ends.
func startBuild(n int) (*exec.Cmd, chan struct{}, error) {
	expr := `builtins.genList (i: derivation { name = "bench-${toString i}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo SALT-${toString i} > $out" ]; }) N`
	expr = strings.NewReplacer("SALT", fmt.Sprint(time.Now().UnixNano()), "N", fmt.Sprint(n)).Replace(expr)
	cmd := exec.Command("nix-build", "--no-out-link", "--option", "sandbox", "false", "--option", "substituters", "", "-j", "1", "-E", expr)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	time.Sleep(2 * time.Second) // evaluation done, builds registering
	return cmd, done, nil
}

// peakRSS runs the command once and returns its peak resident set (KiB).
func peakRSS(name string, args ...string) int64 {
	cmd := exec.Command(name, args...)
	unprivileged(cmd)
	if err := cmd.Run(); err != nil {
		return -1
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss
	}
	return -1
}

func bwrapArgs(paths []string, bb string) []string {
	args := []string{"--unshare-all", "--die-with-parent", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"}
	for _, p := range paths {
		args = append(args, "--ro-bind", p, p)
	}
	return append(args, "--", bb+"/bin/true")
}

func link(name string) string {
	p, ok := optLink(name)
	if !ok {
		fmt.Fprintf(os.Stderr, "benchtable: %s/%s missing: run scripts/teststore --large\n", *fixture, name)
		os.Exit(1)
	}
	return p
}

func optLink(name string) (string, bool) {
	p, err := filepath.EvalSymlinks(filepath.Join(*fixture, name))
	return p, err == nil
}

// unprivileged makes cmd run as the -user when benchtable runs as root,
// with a HOME it can use and the nix-users group (a Debian Nix user's:
// nix-store needs it to reach the daemon).
func unprivileged(cmd *exec.Cmd) {
	if os.Geteuid() != 0 || *asUser == "root" {
		return
	}
	u, err := user.Lookup(*asUser)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtable: -user %s: %v\n", *asUser, err)
		os.Exit(1)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	if g, err := user.LookupGroup("nix-users"); err == nil {
		n, _ := strconv.Atoi(g.Gid)
		cred.Groups = []uint32{uint32(n)}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Env = []string{"HOME=" + os.TempDir(), "PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8", "USER=" + *asUser}
}

func who() string {
	if os.Geteuid() != 0 || *asUser == "root" {
		if u, err := user.Current(); err == nil {
			return u.Username
		}
	}
	return *asUser
}

func closureLen(root string) int { return len(strings.Fields(run("nix-store", "-qR", root))) }

func run(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtable: %s %s: %v\n", name, strings.Join(args[:min(len(args), 4)], " "), err)
		os.Exit(1)
	}
	return string(out)
}

func median(k int, name string, args ...string) time.Duration { return medianIn("", k, name, args...) }

// medianIn runs the command k times (after one warm-up) and returns the
// median wall time of the whole process.
func medianIn(dir string, k int, name string, args ...string) time.Duration {
	var ds []time.Duration
	for i := 0; i <= k; i++ {
		if d := timed(dir, name, args...); i > 0 {
			ds = append(ds, d)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// floors times, interleaved round by round so that all of them see the
// same machine, what lies under a cold run at 1 and 10 paths: closet's
// own process start and exit (--version), the target run bare, bubblewrap,
// closet, and the two benchfloor floors (scripts/benchfloor): a Go
// parent and an init of raw system calls making closet's mounts with no
// confinement, and with closet's confinement (-confine). Neither floor
// reads a closure, holds a GC root or reports; neither is a sandbox.
func floors(dir, bb string, bw1 time.Duration) {
	if *floor == "" {
		v := medianIn(dir, *runs, *closet, "--version")
		bare := medianIn(dir, *runs, bb+"/bin/true")
		fmt.Printf("\nFloors, same run: `closet --version` (closet's own start and exit) %s; `true` run bare %s; bwrap at 1 path %s.\n", ms(v), ms(bare), ms(bw1))
		return
	}
	fmt.Println()
	fmt.Println("### floors under a cold run (interleaved: every command once per round)")
	fmt.Println()
	fmt.Println("| paths | `true` bare | `closet --version` | bwrap | benchfloor | benchfloor -confine | closet run | floor / bwrap | floor -confine / bwrap | closet / bwrap |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, n := range []string{"1", "10"} {
		root := bb
		if n != "1" {
			var ok bool
			if root, ok = optLink("dag-" + n); !ok {
				continue
			}
		}
		paths := strings.Fields(run("nix-store", "--query", "--requisites", root, bb))
		// The floors bind the same paths, busybox (with bin/true) first.
		fl := []string{bb}
		for _, p := range paths {
			if p != bb {
				fl = append(fl, p)
			}
		}
		m := interleaved(dir, *runs, [][]string{
			{bb + "/bin/true"},
			{*closet, "--version"},
			append([]string{"bwrap"}, bwrapArgs(paths, bb)...),
			append([]string{*floor}, fl...),
			append([]string{*floor, "-confine"}, fl...),
			{*closet, "run", "--cwd", "none", root, bb, "--", "true"},
		})
		r := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(m[2])) }
		fmt.Printf("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", len(paths), ms(m[0]), ms(m[1]), ms(m[2]), ms(m[3]), ms(m[4]), ms(m[5]), r(m[3]), r(m[4]), r(m[5]))
	}
}

// interleaved runs each of cmds once per round, k rounds after one
// warm-up round, and returns each one's median.
func interleaved(dir string, k int, cmds [][]string) []time.Duration {
	ds := make([][]time.Duration, len(cmds))
	for i := 0; i <= k; i++ {
		for j, c := range cmds {
			if d := timed(dir, c[0], c[1:]...); i > 0 {
				ds[j] = append(ds[j], d)
			}
		}
	}
	m := make([]time.Duration, len(cmds))
	for j := range ds {
		sort.Slice(ds[j], func(a, b int) bool { return ds[j][a] < ds[j][b] })
		m[j] = ds[j][len(ds[j])/2]
	}
	return m
}

// timed runs the command once in dir, as the unprivileged user, and
// returns the wall time of the whole process; a failure ends benchtable.
func timed(dir, name string, args ...string) time.Duration {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	unprivileged(cmd)
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtable: %s: %v: %.300s\n", name, err, out)
		os.Exit(1)
	}
	return d
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

func machine() string {
	k, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("Linux %s, %s cores", strings.TrimSpace(string(k)), strings.TrimSpace(run("nproc")))
}
