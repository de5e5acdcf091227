package initstage_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// procWrites opens for writing, and writes nothing to, files of /proc
// that reach the kernel rather than the sandbox. Opening with ": >"
// writes zero bytes even where the open succeeds, so the test can never
// change a host sysctl; it only learns whether the open was refused.
const procWrites = `for f in /proc/sys/kernel/core_pattern /proc/sys/kernel/hostname /proc/sys/vm/overcommit_memory /proc/sys/fs/file-max /proc/fs/nfsd/threads; do
  [ -e "$f" ] || continue
  if e=$( ( : > "$f" ) 2>&1 ); then echo "OPENED $f"; else echo "refused $f: $e"; fi
done
grep -E ' /proc/(sys|fs) ' /proc/self/mountinfo | cut -d' ' -f5,6
echo "cmdline bytes: $(wc -c < /proc/cmdline)"`

func checkProc(t *testing.T, r testutil.Result) {
	t.Helper()
	if r.Code != 0 {
		t.Fatalf("exit %d: %s%s", r.Code, r.Stdout, r.Stderr)
	}
	t.Logf("%s", r.Stdout)
	if strings.Contains(r.Stdout, "OPENED") {
		t.Errorf("a sysctl could be opened for writing:\n%s", r.Stdout)
	}
	if !strings.Contains(r.Stdout, "refused /proc/sys/kernel/core_pattern") || !strings.Contains(r.Stdout, "Read-only file system") {
		t.Errorf("core_pattern not refused as read-only:\n%s", r.Stdout)
	}
	for _, m := range []string{"/proc/sys ro,", "/proc/fs ro,"} {
		if !strings.Contains(r.Stdout, m) {
			t.Errorf("no %q mount:\n%s", m, r.Stdout)
		}
	}
	if !strings.Contains(r.Stdout, "cmdline bytes: 0") {
		t.Errorf("/proc/cmdline shows the host's kernel command line:\n%s", r.Stdout)
	}
}

// TestProcReadOnlyRootCaller: a root caller's job, with Landlock off, is
// host uid 0 to the sysctl permission check; /proc/sys must still refuse
// it, by being mounted read-only.
func TestProcReadOnlyRootCaller(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the attack is about root callers")
	}
	bb := fixture.Path(t, "busybox")
	cmd := exec.Command(testutil.Binary(t), "run", "--cwd", "none", "--landlock", "off", "--no-gc-root", bb, "--", "sh", "-c", procWrites)
	cmd.Dir = testutil.TempDir(t)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	checkProc(t, testutil.Run(t, cmd))
}

// TestProcReadOnlyUnprivileged is the same attack as an unprivileged
// caller.
func TestProcReadOnlyUnprivileged(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	checkProc(t, testutil.Closet(t, "", "run", "--cwd", "none", "--landlock", "off", bb, "--", "sh", "-c", procWrites))
}

// TestScratchSharesOneBudget fills /tmp, then /dev/shm and $HOME: with
// --tmp-size 8M the three together hold at most 8 MiB.
func TestScratchSharesOneBudget(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	script := `for d in /tmp /dev/shm $HOME; do dd if=/dev/zero of=$d/fill bs=1M count=8 2>/dev/null; done; du -k /tmp/fill /dev/shm/fill $HOME/fill | awk '{s+=$1} END {print "total KiB", s}'`
	r := testutil.Closet(t, "", "run", "--cwd", "none", "--tmp-size", "8M", bb, "--", "sh", "-c", script)
	t.Logf("%s%s", r.Stdout, r.Stderr)
	var kib int
	for l := range strings.Lines(r.Stdout) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "total KiB "); ok {
			for _, c := range v {
				kib = kib*10 + int(c-'0')
			}
		}
	}
	if kib == 0 || kib > 8*1024 {
		t.Errorf("the scratch mounts held %d KiB together, want 1 to 8192", kib)
	}
}

// TestHostnameEscapeRefused: a host name with a terminal escape sequence
// is refused before anything runs.
func TestHostnameEscapeRefused(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	r := testutil.Closet(t, "", "run", "--cwd", "none", "--hostname", "a\x1b]0;owned\x07", bb, "--", "sh", "-c", "echo RAN")
	if r.Code == 0 || strings.Contains(r.Stdout, "RAN") || !strings.Contains(r.Stderr, "hostname") {
		t.Errorf("exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
}

// TestMemfdUnderMemoryLimit is issue 10's #4 as filed: a 768 MiB memfd
// under --memory 64M. Without a memory cgroup (--memory is then RLIMIT_AS)
// memfd_create is refused; with one, the cgroup ends the job. Either way
// the job must never finish OK holding twelve times its limit.
func TestMemfdUnderMemoryLimit(t *testing.T) {
	py := fixture.Path(t, "python3")
	script := `import os, sys
n = int(sys.argv[1])
fd = os.memfd_create("bomb")
b = b"x" * (1 << 20)
for i in range(n):
    os.write(fd, b)
print("HELD", n, "MiB")`
	// The control: without --memory the same program holds a small memfd,
	// so a refusal below is the limit's doing.
	c := testutil.Closet(t, "", "run", "--cwd", "none", py, "--", "python3", "-c", script, "16")
	if c.Code != 0 || !strings.Contains(c.Stdout, "HELD 16 MiB") {
		t.Fatalf("control without --memory: exit %d, %q %s", c.Code, c.Stdout, c.Stderr)
	}
	r := testutil.Closet(t, "", "run", "--cwd", "none", "--memory", "64M", py, "--", "python3", "-c", script, "768")
	t.Logf("exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	if r.Code == 0 || strings.Contains(r.Stdout, "HELD") {
		t.Errorf("a 768 MiB memfd under --memory 64M: exit %d, %q", r.Code, r.Stdout)
	}
	if !strings.Contains(r.Stderr, "Operation not permitted") && r.Code != 123 && r.Code < 128 {
		t.Errorf("want memfd_create refused (EPERM) or the memory limit's verdict, got exit %d: %s", r.Code, r.Stderr)
	}
}
