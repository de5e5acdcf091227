package serve

import (
	"context"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// countingRunner is a stand-in for queue-mechanics tests only: it counts
// runs and answers OK. Every sandbox test uses the real runners.
type countingRunner struct{ runs atomic.Int64 }

func (r *countingRunner) Run(ctx context.Context, s Spec) (Result, error) {
	r.runs.Add(1)
	return Result{Verdict: "OK", Stdout: "ran\n"}, nil
}

// TestCrashLoop: a job that was started MaxRuns times and never finished
// (each time the server died under it) is not run again: it gets XX with
// the reason, and exactly one verdict. A job cancelled while queued never
// runs and gets XX "cancelled".
func TestCrashLoop(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		r := &countingRunner{}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s, err := New(ctx, Config{DataDir: t.TempDir(), Database: db, Runner: r, MaxRuns: 3, Poll: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		hs := httptest.NewServer(s.Handler())
		defer hs.Close()
		ts := &testServer{Server: s, URL: hs.URL}
		tok := ts.token(t, "alice")
		// Accepted while no worker runs: River inserts without a started client.
		_, looping, _ := ts.submit(t, tok, map[string]any{"roots": []string{"/nix/store/x"}, "command": []string{"x"}})
		_, fine, _ := ts.submit(t, tok, map[string]any{"roots": []string{"/nix/store/x"}, "command": []string{"x"}})
		_, cancelled, _ := ts.submit(t, tok, map[string]any{"roots": []string{"/nix/store/x"}, "command": []string{"x"}})
		if _, err := s.db.SQL.Exec(`UPDATE closet_jobs SET runs = 3, state = 'running' WHERE id = $1`, looping); err != nil {
			t.Fatal(err)
		}
		if resp, b := do(t, "DELETE", ts.URL+"/v1/jobs/"+cancelled, tok, nil); resp.StatusCode != 202 {
			t.Fatalf("cancel a queued job: %d %s", resp.StatusCode, b)
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, nil) }()
		v := ts.wait(t, tok, looping)
		if v.Verdict != "XX" || v.Message != "the server stopped 3 times while this job ran; it is not run again" {
			t.Errorf("crash-looping job: %s %q", v.Verdict, v.Message)
		}
		if v := ts.wait(t, tok, fine); v.Verdict != "OK" || v.Runs != 1 {
			t.Errorf("the other job: %s, %d runs", v.Verdict, v.Runs)
		}
		if v := ts.wait(t, tok, cancelled); v.Verdict != "XX" || v.Message != "cancelled" || v.Runs != 0 {
			t.Errorf("a job cancelled while queued: %s %q, %d runs", v.Verdict, v.Message, v.Runs)
		}
		if n := r.runs.Load(); n != 1 {
			t.Errorf("the runner ran %d jobs, want 1", n)
		}
		cancel()
		<-done
	})
}
