package sandbox

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/viewcache"
)

// TestCachedViewNoGrowth: a job started in a copy of a cached view (fd 9)
// shows exactly its closure, and its init, which has no view it could
// grow, refuses a request to grow over the control socket (fd 8) with why
// instead of failing: the job runs on to its end, its view unchanged.
func TestCachedViewNoGrowth(t *testing.T) {
	if !asNobody(t) {
		return
	}
	bb, lib := fixture.Path(t, "busybox"), fixture.Path(t, "lib")
	store := closureOf(t, bb)
	slices.Sort(store)
	views, err := viewcache.New(viewcache.Options{MinPaths: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer views.Close()
	v, err := views.Take(context.Background(), "", store)
	if err != nil {
		t.Fatalf("take a cached view: %v", err)
	}
	defer v.Close()
	var growErr error
	// The job cannot see when the request ends; it lists its store a
	// second after it starts, long after the refusal (AddPaths returns
	// with the init's answer).
	script := `sleep 1; ls /nix/store; ls ` + lib + ` >/dev/null 2>&1 && echo GREW; true`
	stdout, stderr, out, _ := liveJobIn(t, bb, store, v, "best-effort", script, func(c *Control) {
		growErr = c.AddPaths(context.Background(), []string{lib})
	})
	var se *stage.Error
	if !errors.As(growErr, &se) || se.Stage != stage.Init || !strings.Contains(se.Error(), "cached store view") {
		t.Errorf("growing a cached view: %v, want the init's refusal", growErr)
	}
	if out.Result.Code != 0 {
		t.Fatalf("job exit %d\nstdout: %s\nstderr: %s", out.Result.Code, stdout, stderr)
	}
	var want []string
	for _, p := range store {
		want = append(want, strings.TrimPrefix(p, "/nix/store/"))
	}
	got := strings.Fields(stdout)
	if slices.Contains(got, "GREW") {
		t.Errorf("the refused path is visible: %s", stdout)
	}
	if !slices.Equal(got, want) {
		t.Errorf("/nix/store in a cached view: %v, want exactly %v", got, want)
	}
}
