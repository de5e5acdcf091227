package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/report"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// TestJobCannotKillInit attacks pid 1 with every catchable signal closet's
// init does not relay, where nothing else stops them (--landlock off: no
// signal scoping). Each run then exits 3: the verdict must be the job's
// own (RE, exit 3), not closet's (XX) with a dead init.
func TestJobCannotKillInit(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	// Every catchable signal but the relayed ones (INT TERM HUP QUIT USR1
	// USR2, which come back to the job's own group by design), SIGCHLD, and
	// the stops, which the kernel already drops for a namespace's init.
	sigs := []string{"ABRT", "TRAP", "SYS", "ILL", "STKFLT", "SEGV", "BUS", "FPE",
		"ALRM", "PIPE", "VTALRM", "XCPU", "XFSZ", "PWR", "IO", "PROF", "WINCH", "URG", "CONT", "TSTP", "TTIN", "TTOU"}
	var script strings.Builder
	for _, s := range sigs {
		// Each signal alone, then a pause, so init would die of the first
		// one that could kill it.
		fmt.Fprintf(&script, "kill -%s 1 || echo cannot-send-%s; sleep 0.02; ", s, s)
	}
	script.WriteString("kill -0 1 && echo init-alive; exit 3")
	dir := testutil.TempDir(t)
	rep := filepath.Join(dir, "report.json")
	r := testutil.Closet(t, dir, "run", "--landlock", "off", "--report", rep, bb, "--", "sh", "-c", script.String())
	rp := readReport(t, rep)
	if r.Code != 3 || rp.Status != report.RE || rp.ExitCode != 3 {
		t.Fatalf("exit %d, verdict %s (exit %d); want RE exit 3\nstdout: %s\nstderr: %s", r.Code, rp.Status, rp.ExitCode, r.Stdout, r.Stderr)
	}
	if strings.Contains(r.Stdout, "cannot-send") || !strings.Contains(r.Stdout, "init-alive") {
		t.Errorf("the attack did not reach init (control): %s", r.Stdout)
	}
}

// TestJobStartsWithDefaultSignals: the target inherits no ignored signal
// from closet's stages (init drops signals with a handler, never SIG_IGN).
func TestJobStartsWithDefaultSignals(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	r := testutil.Closet(t, "", "run", bb, "--", "grep", "^SigIgn", "/proc/self/status")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != "SigIgn:\t0000000000000000" {
		t.Errorf("exit %d, %q: the job should start with no signal ignored; stderr %s", r.Code, r.Stdout, r.Stderr)
	}
}
