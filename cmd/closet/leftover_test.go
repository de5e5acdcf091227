package main

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// listDir is the sorted names in dir, recursively, as paths relative to it.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, rel)
		}
		return nil
	})
	slices.Sort(names)
	return names
}

// TestNestedBindLeavesNothingOnTheHost: a bind whose target lies inside the
// writable current directory (issue 10 #12) must not create its mount
// point there. A missing one is refused, saying what to do, and the
// directory holds nothing new; an existing one is used.
func TestNestedBindLeavesNothingOnTheHost(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	cwd, src := testutil.TempDir(t), testutil.TempDir(t)
	os.WriteFile(filepath.Join(src, "in.txt"), []byte("data\n"), 0o644)
	file := filepath.Join(src, "in.txt")
	before := listDir(t, cwd)
	for _, expose := range []string{src + "=" + cwd + "/a/b", file + "=" + cwd + "/f", file + "=" + cwd + "/a/f"} {
		r := run(t, cwd, "--expose", expose, bb, "--", "true")
		if r.Code == 0 || !strings.Contains(r.Stderr, "closet creates nothing in your directories") {
			t.Errorf("--expose %s: exit %d, stderr %q; want a refusal that says why", expose, r.Code, r.Stderr)
		}
		if after := listDir(t, cwd); !slices.Equal(after, before) {
			t.Errorf("--expose %s left %v in the current directory (was %v)", expose, after, before)
		}
	}
	// Where the mount point exists, the bind works, read-only as asked.
	os.MkdirAll(filepath.Join(cwd, "a/b"), 0o777)
	os.Chmod(filepath.Join(cwd, "a"), 0o777)
	os.Chmod(filepath.Join(cwd, "a/b"), 0o777)
	before = listDir(t, cwd)
	r := run(t, cwd, "--expose", src+"="+cwd+"/a/b", bb, "--", "sh", "-c", "cat a/b/in.txt; echo x > a/b/new")
	if !strings.Contains(r.Stdout, "data") || !strings.Contains(r.Stderr, "Read-only") {
		t.Errorf("existing mount point: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	if after := listDir(t, cwd); !slices.Equal(after, before) {
		t.Errorf("the run left %v in the current directory (was %v)", after, before)
	}
}

// TestKilledClosetLeavesNoRootDir: closet killed with SIGKILL while its job
// runs leaves nothing in TMPDIR (issue 10 #13).
func TestKilledClosetLeavesNoRootDir(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	tmp := testutil.TempDir(t)
	cmd := testutil.Command(t, "", "run", "--cwd", "none", bb, "--", "sh", "-c", "echo started; sleep 30")
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- l
	}()
	select {
	case l := <-line:
		if l != "started\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the job did not start: %q", l)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the job did not start within 30 s")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if left := listDir(t, tmp); len(left) != 0 {
		t.Errorf("closet killed mid-run left %v in TMPDIR", left)
	}
}
