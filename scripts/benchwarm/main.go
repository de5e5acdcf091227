// Command benchwarm times whole no-op jobs in one long-lived process, as
// the service runs them: Prepare, Start and Wait of a job whose target is
// true, with its store view built per job (cold) and taken from a view
// cache (warm, internal/viewcache). It prints one Markdown row per closure
// for BENCHMARKS.md; scripts/benchtable runs it as the unprivileged user.
//
// Usage: benchwarm -closet ./closet -runs 15 ROOT...
// (ROOT is a store path; busybox, which the target comes from, is added.)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/user"
	"sort"
	"time"

	"github.com/closet-sandbox/closet/internal/job"
	"github.com/closet-sandbox/closet/internal/report"
	"github.com/closet-sandbox/closet/internal/sandbox"
	"github.com/closet-sandbox/closet/internal/viewcache"
)

func main() {
	sandbox.RunStageIfAny()
	closet := flag.String("closet", "./closet", "the static closet binary, started as the stages and the holder")
	runs := flag.Int("runs", 15, "jobs per cell (the median is reported)")
	busybox := flag.String("busybox", "", "the busybox store path the target comes from")
	flag.Parse()
	ctx := context.Background()
	views, err := viewcache.New(viewcache.Options{Exe: *closet, MinPaths: 1}) // every size, to time the cache itself
	if err != nil {
		fail(err)
	}
	defer views.Close()
	name := "nobody"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	for _, root := range flag.Args() {
		req := job.Request{
			Roots: []string{*busybox, root}, Command: []string{*busybox + "/bin/true"},
			Env: []string{"PATH=/usr/bin:/bin"}, UserName: name, CwdMode: "none",
			UID: 1000, GID: 100, TTY: "never", StageBinary: *closet,
			// As the caller: what a cached view serves (a job with host
			// ids of its own builds its view).
			CallerUID: os.Getuid(), CallerGID: os.Getgid(), HostUID: "caller",
			Logf: logf,
		}
		cold, coldStart, paths := median(ctx, *runs, req)
		req.Views = views
		one(ctx, req) // the miss that builds the view
		warm, warmStart, _ := median(ctx, *runs, req)
		fmt.Printf("| %d | %s | %s | %.3f | %s | %s | %.3f |\n", paths, ms(cold), ms(warm), float64(warm)/float64(cold),
			ms(coldStart), ms(warmStart), float64(warmStart)/float64(coldStart))
	}
}

// median runs k jobs (after one warm-up) and returns the medians of the
// whole job and of its Start.
func median(ctx context.Context, k int, req job.Request) (whole, start time.Duration, paths int) {
	var ds, ss []time.Duration
	for i := 0; i <= k; i++ {
		d, s, n := one(ctx, req)
		paths = n
		if i > 0 {
			ds, ss = append(ds, d), append(ss, s)
		}
	}
	return mid(ds), mid(ss), paths
}

func mid(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// one runs a job to its end and returns how long that took, and how long
// its Start (from the call to the target running).
func one(ctx context.Context, req job.Request) (whole, start time.Duration, paths int) {
	t0 := time.Now()
	j, err := job.Prepare(ctx, req)
	if err != nil {
		fail(err)
	}
	defer j.Close()
	t1 := time.Now()
	if err := j.Start(ctx); err != nil {
		fail(err)
	}
	t2 := time.Now()
	r := j.Wait()
	d := time.Since(t0)
	logf("%d paths, cached view %v: prepare %v, start %v, wait %v", r.Closure.Paths, req.Views != nil,
		t1.Sub(t0).Round(time.Microsecond), t2.Sub(t1).Round(time.Microsecond), time.Since(t2).Round(time.Microsecond))
	if r.Status != report.OK {
		fail(fmt.Errorf("job ended %s: %s", r.Status, r.Message))
	}
	return d, t2.Sub(t1), r.Closure.Paths
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchwarm:", err)
	os.Exit(1)
}

var verbose = flag.Bool("v", false, "print each job's progress lines")

func logf(format string, args ...any) {
	if *verbose {
		fmt.Fprintf(os.Stderr, "benchwarm: "+format+"\n", args...)
	}
}
