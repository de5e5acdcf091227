package report

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func meta(t *testing.T, r *Report) map[string]string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteIsolate(&b); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			t.Fatalf("line %q is not key:value", l)
		}
		if _, dup := m[k]; dup {
			t.Fatalf("key %s twice", k)
		}
		m[k] = v
	}
	return m
}

func TestWriteIsolate(t *testing.T) {
	tests := []struct {
		name   string
		r      Report
		want   map[string]string
		absent []string
	}{
		{"OK", Report{Status: OK, Exited: true, CPUTime: 0.0125, WallTime: 1, MaxRSS: 2048 * 1024},
			map[string]string{"exitcode": "0", "time": "0.013", "time-wall": "1.000", "max-rss": "2048", "closet-status": "OK"},
			[]string{"status", "killed", "exitsig", "cg-mem", "cg-oom-killed", "message"}},
		{"RE", Report{Status: RE, Message: "Exited with error status 3", Exited: true, ExitCode: 3},
			map[string]string{"status": "RE", "exitcode": "3", "message": "Exited with error status 3"},
			[]string{"killed", "exitsig"}},
		{"SG", Report{Status: SG, Message: "Caught fatal signal 11 (SIGSEGV)", Signal: 11},
			map[string]string{"status": "SG", "exitsig": "11"},
			[]string{"killed", "exitcode"}},
		{"TO", Report{Status: TO, Message: "Time limit exceeded (wall clock)", Signal: 9, Killed: true, Limit: "wall-time"},
			map[string]string{"status": "TO", "killed": "1"},
			[]string{"exitcode", "exitsig"}},
		{"ML", Report{Status: ML, Message: "Memory limit exceeded", Signal: 9, Killed: true, OOMKilled: true, PeakMemory: 64 << 20},
			map[string]string{"status": "SG", "exitsig": "9", "killed": "1", "cg-oom-killed": "1", "cg-mem": "65536", "closet-status": "ML"},
			[]string{"exitcode"}},
		{"OL", Report{Status: OL, Message: "Output limit exceeded", Signal: 9, Killed: true, Output: 10, OutputKept: 5},
			map[string]string{"status": "SG", "killed": "1", "closet-status": "OL", "closet-output-bytes": "10", "closet-output-kept": "5"},
			nil},
		{"XX", Report{Status: XX, Message: "init: mount proc\nsecond line"},
			map[string]string{"status": "XX", "message": "init: mount proc second line"},
			[]string{"exitcode", "exitsig", "killed"}},
	}
	for _, tt := range tests {
		tt.r.Limits = map[string]Limit{"memory": {Value: "64M", Mechanism: "cgroup-v1"}}
		m := meta(t, &tt.r)
		for k, v := range tt.want {
			if m[k] != v {
				t.Errorf("%s: %s = %q, want %q (%v)", tt.name, k, m[k], v, m)
			}
		}
		for _, k := range tt.absent {
			if _, ok := m[k]; ok {
				t.Errorf("%s: %s present: %v", tt.name, k, m)
			}
		}
		if m["closet-limit-memory"] != "64M cgroup-v1" {
			t.Errorf("%s: limit line %q", tt.name, m["closet-limit-memory"])
		}
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "r.json")
	r := &Report{Status: TO, Killed: true, Limit: "cpu-time", Limits: map[string]Limit{"cpu-time": {"1", "cgroup-v1+rlimit-cpu"}}, ClosetExit: ExitTO}
	d, err := OpenDest(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// The job swaps in a symlink at the report's name: it is replaced.
	os.Symlink("/etc/passwd", p)
	if err := d.Write(r, "json"); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(p); err != nil || !st.Mode().IsRegular() {
		t.Fatalf("report is not a regular file: %v %v", st, err)
	}
	b, _ := os.ReadFile(p)
	var got Report
	if err := json.Unmarshal(b, &got); err != nil || got.Status != TO || got.Limits["cpu-time"].Mechanism != "cgroup-v1+rlimit-cpu" || got.ClosetExit != 124 {
		t.Fatalf("round trip: %v %+v\n%s", err, got, b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	// The directory was opened before: renaming it away and planting a
	// symlink in its place does not redirect the report.
	sub := filepath.Join(dir, "out")
	other := t.TempDir()
	os.Mkdir(sub, 0o755)
	d2, err := OpenDest(filepath.Join(sub, "meta"))
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	os.Rename(sub, filepath.Join(dir, "moved"))
	os.Symlink(other, sub)
	if err := d2.Write(r, "isolate"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(other, "meta")); err == nil {
		t.Error("the report followed the swapped-in symlink")
	}
	if _, err := os.Stat(filepath.Join(dir, "moved", "meta")); err != nil {
		t.Errorf("the report is not in the directory opened: %v", err)
	}
	if _, err := OpenDest(filepath.Join(dir, "no/such/dir/r")); err == nil {
		t.Error("a missing directory was accepted")
	}
}

func TestExitCode(t *testing.T) {
	for _, tt := range []struct {
		status       string
		code, signal int
		want         int
	}{{OK, 0, 0, 0}, {RE, 3, 0, 3}, {SG, 0, 11, 139}, {TO, 0, 9, 124}, {ML, 0, 9, 123}, {OL, 0, 9, 122}, {XX, 0, 0, 125}} {
		if got := ExitCode(tt.status, tt.code, tt.signal); got != tt.want {
			t.Errorf("ExitCode(%s) = %d, want %d", tt.status, got, tt.want)
		}
	}
}
