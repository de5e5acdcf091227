package nixproxy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
)

// buildManyExpr is n independent small derivations, fresh for nonce.
func buildManyExpr(busybox string, n int, nonce int64) string {
	return fmt.Sprintf(`let bb = builtins.storePath %s; in
builtins.genList (i: derivation {
  name = "closet-bench-${toString i}"; system = builtins.currentSystem; nonce = "%d";
  builder = "${bb}/bin/sh"; args = [ "-c" "echo ${toString i} > $out" ];
}) %d`, busybox, nonce, n)
}

// BenchmarkBuild100: nix-build of 100 small derivations as an untrusted
// user, on the raw daemon socket and through the proxy, alternating within
// each iteration (the machine is shared: interleaving keeps load changes
// from landing on one side). Reports both times and their ratio.
func BenchmarkBuild100(b *testing.B) {
	d := daemon(b, "true", "")
	busybox := fixture.Path(b, "busybox")
	e := startProxy(b, d, busybox)
	e.set.hook = nil // a fake Add: the cost measured is the proxy's own
	var mu sync.Mutex
	took := map[Op]time.Duration{}
	count := map[Op]int{}
	e.srv.Observe = func(op Op, d time.Duration) {
		mu.Lock()
		took[op] += d
		count[op]++
		mu.Unlock()
	}
	var raw, prox time.Duration
	for i := 0; i < b.N; i++ {
		for _, via := range []string{"raw", "proxy"} {
			sock := e.sock
			if via == "raw" {
				sock = d.sock
			}
			expr := writeExpr(b, e.home, fmt.Sprintf("many-%s-%d.nix", via, i), buildManyExpr(busybox, 100, time.Now().UnixNano()))
			start := time.Now()
			out, err := nixAs(b, sock, e.home, "nix-build", "--no-out-link", expr)
			if err != nil {
				b.Fatalf("nix-build via %s: %v\n%s", via, err, out)
			}
			if via == "raw" {
				raw += time.Since(start)
			} else {
				prox += time.Since(start)
			}
			if n := strings.Count(out, "-closet-bench-"); n < 100 {
				b.Fatalf("nix-build via %s printed %d outputs", via, n)
			}
		}
	}
	b.ReportMetric(raw.Seconds()/float64(b.N), "s-raw/op")
	b.ReportMetric(prox.Seconds()/float64(b.N), "s-proxy/op")
	b.ReportMetric(prox.Seconds()/raw.Seconds(), "proxy/raw")
	for op, d := range took {
		b.Logf("%s: %d requests, %v per request", op, count[op], d/time.Duration(count[op]))
	}
}

// BenchmarkGrowPerPath: the proxy's cost to admit one new path (closure
// walk with QueryPathInfo and a temp root on the anchor) with an Add that
// does nothing: dag-100's closure, 100 paths, from an empty view each
// iteration, on one long-lived anchor (as a job has).
func BenchmarkGrowPerPath(b *testing.B) {
	d := daemon(b, "true", "")
	dag := fixture.Path(b, "dag-100")
	paths := hostClosure(b, dag)
	srv := &Server{Dial: d.dial}
	defer srv.Close()
	if err := srv.withAnchor(func(*anchor) error { return nil }); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		set := NewSet(nil, func(context.Context, []string) error { return nil })
		srv.Policy = set
		srv.withAnchor(func(a *anchor) error { a.rooted = map[string]bool{}; return nil })
		b.StartTimer()
		if err := srv.grow(context.Background(), []string{dag}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if got := len(set.Paths()); got != len(paths) {
			b.Fatalf("grow admitted %d paths, want %d", got, len(paths))
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(paths))/1e3, "µs/path")
}
