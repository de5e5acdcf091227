package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/audit"
	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// runCLI runs closet with args and returns its exit status and output, as
// execute would.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	root := newRootCmd(args)
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.Execute()
	code := 0
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
			if ee.err != nil {
				errb.WriteString(ee.err.Error())
			}
		} else {
			code = exitcode.Usage
			errb.WriteString(err.Error())
		}
	}
	return code, out.String(), errb.String()
}

// fakeRoot is a minimal system tree: a nix.conf and a store.
func fakeRoot(t *testing.T, conf string) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"etc/nix", "nix/store", "proc/sys"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/nix/nix.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

type jsonReport struct {
	Version  int             `json:"version"`
	Findings []audit.Finding `json:"findings"`
}

func parseReport(t *testing.T, s string) jsonReport {
	t.Helper()
	var r jsonReport
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, s)
	}
	return r
}

func TestAuditExitFollowsFailOn(t *testing.T) {
	dir := fakeRoot(t, "sandbox = false\n")
	for _, failOn := range []string{"info", "high", "critical", "never"} {
		t.Run(failOn, func(t *testing.T) {
			code, out, stderr := runCLI(t, "audit", "--root", dir, "--json", "--fail-on", failOn)
			r := parseReport(t, out)
			reach := false
			hasSandbox := false
			for _, f := range r.Findings {
				if f.ID == "NIX010" {
					hasSandbox = true
				}
				if failOn != "never" {
					s, _ := audit.ParseSeverity(failOn)
					reach = reach || f.Severity >= s
				}
			}
			if !hasSandbox {
				t.Fatalf("no NIX010 for sandbox = false: %s", out)
			}
			want := 0
			if reach {
				want = exitAuditFindings
			}
			if code != want {
				t.Errorf("--fail-on %s: exit %d, want %d (stderr %q)", failOn, code, want, stderr)
			}
		})
	}
}

func TestAuditTableSaysWhyAndExit(t *testing.T) {
	dir := fakeRoot(t, "sandbox = false\n")
	code, out, _ := runCLI(t, "audit", "--root", dir)
	if code != exitAuditFindings {
		t.Errorf("exit %d", code)
	}
	for _, want := range []string{"SEVERITY", "NIX010", "nix.conf:1", "why", "fix", "Set `sandbox = true`", "exit status 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("colour on a non-terminal")
	}
	_, out, _ = runCLI(t, "audit", "--root", dir, "--color", "always", "--fail-on", "never")
	if !strings.Contains(out, "\x1b[") {
		t.Error("--color always did not colour")
	}
}

func TestAuditSARIF(t *testing.T) {
	dir := fakeRoot(t, "require-sigs = false\n")
	_, out, _ := runCLI(t, "audit", "--root", dir, "--sarif")
	var log struct {
		Version string `json:"version"`
		Runs    []struct {
			Results []struct {
				RuleID    string `json:"ruleId"`
				Locations []struct {
					PhysicalLocation struct {
						ArtifactLocation struct{ URI string } `json:"artifactLocation"`
						Region           struct{ StartLine int }
					} `json:"physicalLocation"`
				} `json:"locations"`
			} `json:"results"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(out), &log); err != nil {
		t.Fatalf("not SARIF JSON: %v", err)
	}
	found := false
	for _, r := range log.Runs[0].Results {
		if r.RuleID == "NIX017" {
			found = true
			l := r.Locations[0].PhysicalLocation
			if !strings.HasSuffix(l.ArtifactLocation.URI, "/etc/nix/nix.conf") || l.Region.StartLine != 1 {
				t.Errorf("location %+v", l)
			}
		}
	}
	if log.Version != "2.1.0" || !found {
		t.Errorf("version %q, NIX017 found %v", log.Version, found)
	}
}

func TestAuditStoreScan(t *testing.T) {
	dir := fakeRoot(t, "")
	p := filepath.Join(dir, "nix/store/abc-app/.env")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("PASSWORD=hunter2\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	_, out, _ := runCLI(t, "audit", "--root", dir, "--store-scan", "--json", "--fail-on", "never")
	if strings.Contains(out, "hunter2") {
		t.Fatal("report shows the secret")
	}
	r := parseReport(t, out)
	for _, f := range r.Findings {
		if f.ID == "NIX303" && f.Evidence.File == p {
			return
		}
	}
	t.Errorf("no NIX303 for %s: %s", p, out)
}

func TestAuditUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"audit", "--json", "--sarif"},
		{"audit", "--fail-on", "severe"},
		{"audit", "--min-severity", "loud"},
		{"audit", "--color", "sometimes"},
		{"audit", "extra-arg"},
	} {
		if code, _, _ := runCLI(t, args...); code != exitcode.Usage {
			t.Errorf("%v: exit %d, want %d", args, code, exitcode.Usage)
		}
	}
}

func TestAuditBadRoot(t *testing.T) {
	code, _, stderr := runCLI(t, "audit", "--root", "/nonexistent/closet-root")
	if code != exitcode.BadInput || !strings.Contains(stderr, "/nonexistent/closet-root") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestAuditRulesAndHelp(t *testing.T) {
	_, out, _ := runCLI(t, "audit", "--rules")
	for _, r := range audit.Rules {
		if !strings.Contains(out, r.ID) {
			t.Errorf("--rules lacks %s", r.ID)
		}
	}
	_, out, _ = runCLI(t, "audit", "--help")
	for _, want := range []string{"--store-scan", "--fail-on", "Exit status", "sudo closet audit", "--sarif"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestProgressLine(t *testing.T) {
	var b bytes.Buffer
	p := progressLine(&b)
	p(audit.ScanProgress{Done: 5, Total: 10, Files: 7, Findings: 1})
	p(audit.ScanProgress{Final: true})
	if got := b.String(); !strings.HasPrefix(got, "\r\x1b[Kscanning store: 5/10 paths (50%)") || !strings.HasSuffix(got, "\r\x1b[K") {
		t.Errorf("progress output %q", got)
	}
}

// TestAuditProbeDaemon: closet audit --probe-daemon builds closet run
// --nix's probe through the real daemon: for an untrusted member of
// nix-users on a sandboxed daemon it finds nothing; for root, whom the
// daemon trusts, it reports NIX037, the reason --nix would refuse.
func TestAuditProbeDaemon(t *testing.T) {
	d := fixture.NixDaemon(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: the trusted-caller control runs as root")
	}
	sh := fixture.Path(t, "busybox") + "/bin/sh"
	findings := func(cmd *exec.Cmd) []string {
		t.Helper()
		out, err := cmd.Output()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%v: %v", cmd.Args, err)
		}
		var r struct {
			Findings []struct{ ID, Detail string }
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("audit output: %v: %s", err, out)
		}
		var ids []string
		for _, f := range r.Findings {
			if f.ID == "NIX036" || f.ID == "NIX037" || f.ID == "NIX038" {
				ids = append(ids, f.ID+": "+f.Detail)
			}
		}
		return ids
	}
	args := []string{"audit", "--json", "--fail-on", "never", "--probe-daemon", sh}
	untrusted := exec.Command(testutil.Binary(t), args...)
	d.Untrusted(untrusted)
	if got := findings(untrusted); len(got) != 0 {
		t.Errorf("untrusted caller on a sandboxed daemon: %v, want no probe finding", got)
	}
	root := exec.Command(testutil.Binary(t), args...)
	root.Env = []string{"PATH=/usr/bin:/bin", "NIX_REMOTE=daemon"}
	if got := findings(root); len(got) != 1 || !strings.HasPrefix(got[0], "NIX037") {
		t.Errorf("root, trusted by the daemon: %v, want NIX037", got)
	}
}
