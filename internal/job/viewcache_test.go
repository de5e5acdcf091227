package job_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/report"
	"github.com/closet-sandbox/closet/internal/viewcache"
)

// lsStore runs ls /nix/store in a job of roots and returns what it saw.
func lsStore(ctx context.Context, t *testing.T, views *viewcache.Cache, roots ...string) []string {
	got, _ := lsStoreWarm(ctx, t, views, roots...)
	return got
}

// lsStoreWarm is lsStore, and whether the report says the job started in
// a view already cached (a hit). The job asks for an early init, as the
// service's do: one that a cached view may serve (it runs as the caller,
// here nobody without subordinate ids) launches none.
func lsStoreWarm(ctx context.Context, t *testing.T, views *viewcache.Cache, roots ...string) ([]string, bool) {
	t.Helper()
	bb := fixture.Path(t, "busybox")
	req := baseRequest(append([]string{bb}, roots...), bb+"/bin/ls", "-1", "/nix/store")
	req.Views = views
	early := earlyPids(&req)
	out, err := runJob(ctx, t, req)
	if err != nil {
		t.Fatalf("job: %v", err)
	}
	if p := early(); len(p) > 0 && out.report.HostIdentity == "caller" {
		t.Errorf("a job a cached view may serve launched its init early (pid %v)", p)
	}
	if out.report.Status != report.OK {
		t.Fatalf("job: %s %s; stderr %s", out.report.Status, out.report.Message, out.stderr)
	}
	var got []string
	for _, name := range strings.Fields(out.stdout) {
		got = append(got, "/nix/store/"+name)
	}
	slices.Sort(got)
	return got, out.report.WarmView
}

// TestViewCache: jobs started from cached views see exactly their closure,
// the second job of a closure is a hit, and the cache stays within its
// bound, evicting the least recently used view.
func TestViewCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	views, err := viewcache.New(viewcache.Options{MaxViews: 2, MinPaths: 1, Exe: stageBinary})
	if err != nil {
		t.Fatal(err)
	}
	defer views.Close()
	bb := fixture.Path(t, "busybox")
	dag10, dag100, app := fixture.Path(t, "dag-10"), fixture.Path(t, "dag-100"), fixture.Path(t, "app")
	for i, step := range []struct {
		root      string
		hit       bool
		views     int
		evictions int
	}{
		{dag10, false, 1, 0},
		{dag10, true, 1, 0}, // a hit: the same closure
		{dag100, false, 2, 0},
		{dag10, true, 2, 0},   // dag-10 is now the most recently used
		{app, false, 2, 1},    // over the bound: dag-100 goes
		{dag10, true, 2, 1},   // still there
		{dag100, false, 2, 2}, // built again; app goes
	} {
		got, warm := lsStoreWarm(ctx, t, views, step.root)
		if warm != step.hit {
			t.Errorf("step %d: the report's warmView is %v, want %v (a hit)", i, warm, step.hit)
		}
		if want := requisites(t, bb, step.root); !slices.Equal(got, want) {
			t.Fatalf("step %d: the job sees %d paths, want exactly its closure of %d:\n got %v\nwant %v", i, len(got), len(want), got, want)
		}
		st := views.Stats()
		if st.Hit != step.hit || st.Views != step.views || st.Evictions != step.evictions {
			t.Errorf("step %d (%s): %+v, want hit %v, %d views, %d evictions", i, step.root, st, step.hit, step.views, step.evictions)
		}
	}
}

// TestViewCacheClosed: a cache that cannot serve does not stop a job, which
// builds its view as without a cache.
func TestViewCacheClosed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	views, err := viewcache.New(viewcache.Options{MinPaths: 1, Exe: stageBinary})
	if err != nil {
		t.Fatal(err)
	}
	views.Close()
	bb, dag := fixture.Path(t, "busybox"), fixture.Path(t, "dag-10")
	if got, want := lsStore(ctx, t, views, dag), requisites(t, bb, dag); !slices.Equal(got, want) {
		t.Fatalf("the job sees %v, want %v", got, want)
	}
}

// TestViewCacheNoGrowth: a job started in a cached view refuses to grow
// (its view's tmpfs is shared by every copy) and says what to do.
func TestViewCacheNoGrowth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	views, err := viewcache.New(viewcache.Options{MinPaths: 1, Exe: stageBinary})
	if err != nil {
		t.Fatal(err)
	}
	defer views.Close()
	bb := fixture.Path(t, "busybox")
	req := baseRequest([]string{bb, fixture.Path(t, "dag-10")}, bb+"/bin/sleep", "30")
	req.Views = views
	j := startJob(ctx, t, req)
	err = j.AddPaths(ctx, []string{fixture.Path(t, "lib")})
	j.Kill()
	j.Wait()
	if err == nil || !strings.Contains(err.Error(), "without Request.Views") {
		t.Fatalf("AddPaths in a cached view: %v, want a refusal", err)
	}
}
