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
	"path/filepath"
	"sort"
	"strings"
	"time"
)

var (
	closet   = flag.String("closet", "./closet", "the closet binary")
	fixture  = flag.String("fixture", ".fixture", "the fixture directory")
	runs     = flag.Int("runs", 15, "runs per measurement (the median is reported)")
	bwrapMax = flag.Int("bwrap-max", 2000, "largest closure to give bubblewrap: it is quadratic (13 s at 2,000 binds) and refuses about 3,000 (its 9,000-argument cap)")
)

func main() {
	flag.Parse()
	if abs, err := filepath.Abs(*closet); err == nil {
		*closet = abs // the run measurements start in a scratch directory
	}
	sizes := []string{"10", "100", "1000", "3000", "10000"}
	bb := link("busybox")
	fmt.Printf("Runs per cell: %d (median). Machine: %s\n\n", *runs, machine())

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
	for _, n := range sizes {
		root, ok := optLink("dag-" + n)
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
		fmt.Printf("| dag-%s | %d | %s | %s | %s | %s | %s |\n", n, len(paths), ms(c), bwCell, qbCell, r1, r2)
	}
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
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(t0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchtable: %s: %v: %.300s\n", name, err, out)
			os.Exit(1)
		}
		if i > 0 {
			ds = append(ds, d)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

func machine() string {
	k, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("Linux %s, %s cores", strings.TrimSpace(string(k)), strings.TrimSpace(run("nproc")))
}
