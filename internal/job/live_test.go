package job_test

import (
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/job"
	"github.com/closet-sandbox/closet/internal/report"
)

// TestAddPathsLive: Job.AddPaths on a running job makes a path and its
// closure appear before it returns; the job, waiting for it, runs it; the
// report records exactly the paths added; a path never added stays out.
func TestAddPathsLive(t *testing.T) {
	bb, app, lib := fixture.Path(t, "busybox"), fixture.Path(t, "app"), fixture.Path(t, "lib")
	ctx := context.Background()
	script := "i=0; while [ ! -e " + app + "/bin/app ] && [ $i -lt 4000 ]; do sleep 0.005; i=$((i+1)); done; " +
		app + "/bin/app live; ls /nix/store"
	req := baseRequest([]string{bb}, bb+"/bin/sh", "-c", script)
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	req.Stdout = outW
	j, err := job.Prepare(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(outR)
		done <- string(b)
	}()
	if err := j.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := j.AddPaths(ctx, []string{"/etc/passwd"}); err == nil {
		t.Error("AddPaths accepted a path outside the store")
	}
	if err := j.AddPaths(ctx, []string{app}); err != nil {
		r := j.Wait()
		outW.Close()
		t.Fatalf("%v; the job: %s exit %d signal %d (%s), output %q", err, r.Status, r.ExitCode, r.Signal, r.Message, <-done)
	}
	if err := j.AddPaths(ctx, []string{lib, bb}); err != nil {
		t.Errorf("adding visible paths again: %v", err)
	}
	r := j.Wait()
	outW.Close()
	out := <-done
	if r.Status != report.OK {
		t.Fatalf("%s exit %d (%s): %s", r.Status, r.ExitCode, r.Message, out)
	}
	if !strings.Contains(out, ", live") {
		t.Errorf("app did not run from the grown view: %q", out)
	}
	var seen []string
	for _, l := range strings.Fields(out) {
		if strings.Contains(l, "-") && !strings.Contains(l, ",") {
			seen = append(seen, "/nix/store/"+l)
		}
	}
	slices.Sort(seen)
	if want := requisites(t, bb, app); !slices.Equal(seen, want) {
		t.Errorf("/nix/store after AddPaths: %v, want %v", seen, want)
	}
	added := append([]string(nil), r.AddedPaths...)
	slices.Sort(added)
	if want := []string{app, lib}; !slices.Equal(added, sorted(want)) {
		t.Errorf("report.addedPaths = %v, want %v", r.AddedPaths, want)
	}
	if err := j.AddPaths(ctx, []string{fixture.Path(t, "dag-10")}); err == nil {
		t.Error("AddPaths after the end: no error")
	}
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	slices.Sort(s)
	return s
}
