package initstage_test

import (
	"os"
	"os/exec"
	"slices"
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

// rootLayout prints what the steps built: every mount with its options,
// the modes of the scratch directories, /dev and /etc, and which scratch
// directories the job can write.
const rootLayout = `cat /proc/self/mountinfo
echo "--modes"; for d in /tmp /dev/shm "$HOME"; do echo "$d $(stat -c %a "$d")"; done
echo "--dev"; ls -A /dev | sort | tr '\n' ' '; echo
echo "--etc"; ls -A /etc | sort | tr '\n' ' '; echo
echo "--write"; for d in /tmp /dev/shm "$HOME"; do if echo x > "$d/.w"; then echo "wrote $d"; fi; done
echo "--home"; echo "$HOME"`

// mountOptions maps each mount point in a mountinfo text to its
// per-mount options.
func mountOptions(mountinfo string) map[string][]string {
	m := map[string][]string{}
	for l := range strings.Lines(mountinfo) {
		f := strings.Fields(l)
		if len(f) > 6 && strings.HasPrefix(f[4], "/") {
			m[f[4]] = strings.Split(f[5], ",")
		}
	}
	return m
}

// TestRootLayout: every mount the init makes has the flags it always had
// (the root read-only, /proc and the scratch directories nosuid and
// nodev, /dev and /dev/shm noexec, the /proc masks read-only, the view
// read-only), /dev, /etc and the scratch directories hold what they
// should with the modes they should, and the job can write its scratch
// directories. It guards the steps against a faster build that loses a
// flag.
func TestRootLayout(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	r := testutil.Closet(t, "", "run", "--cwd", "none", "--landlock", "off", bb, "--", "sh", "-c", rootLayout)
	if r.Code != 0 {
		t.Fatalf("exit %d: %s%s", r.Code, r.Stdout, r.Stderr)
	}
	mountinfo, rest, _ := strings.Cut(r.Stdout, "--modes\n")
	sec := map[string]string{}
	name := "modes"
	for l := range strings.Lines(rest) {
		if n, ok := strings.CutPrefix(strings.TrimSpace(l), "--"); ok {
			name = n
			continue
		}
		sec[name] += l
	}
	home := strings.TrimSpace(sec["home"])
	if home == "" || home == "/" {
		t.Fatalf("no $HOME in the job: %q", home)
	}
	opts := mountOptions(mountinfo)
	want := map[string][]string{
		"/":          {"ro", "nosuid", "nodev"},
		"/nix/store": {"ro", "nosuid", "nodev"},
		"/dev":       {"nosuid", "noexec"},
		"/dev/pts":   {"nosuid", "noexec"},
		"/dev/shm":   {"rw", "nosuid", "nodev", "noexec"},
		"/tmp":       {"rw", "nosuid", "nodev"},
		home:         {"rw", "nosuid", "nodev"},
		"/proc":      {"nosuid", "nodev", "noexec"},
		"/proc/sys":  {"ro", "nosuid", "noexec"},
	}
	for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		want["/dev/"+n] = nil // a bind of the host's node
	}
	for p, w := range want {
		got, ok := opts[p]
		if !ok {
			t.Errorf("no mount on %s", p)
			continue
		}
		for _, o := range w {
			if !slices.Contains(got, o) {
				t.Errorf("%s is mounted %v, without %s", p, got, o)
			}
		}
	}
	// The masks of /proc, where this kernel has the paths.
	for _, p := range []string{"/proc/keys", "/proc/key-users", "/proc/kcore", "/proc/timer_list", "/proc/sysrq-trigger", "/proc/cmdline", "/proc/fs"} {
		if got, ok := opts[p]; ok {
			for _, o := range []string{"ro", "nosuid", "noexec"} {
				if !slices.Contains(got, o) {
					t.Errorf("mask %s is mounted %v, without %s", p, got, o)
				}
			}
		}
	}
	for _, p := range []string{"/proc/acpi", "/proc/asound", "/proc/scsi", "/proc/bus", "/proc/irq", "/proc/driver"} {
		if got, ok := opts[p]; ok {
			for _, o := range []string{"ro", "nosuid", "nodev", "noexec"} {
				if !slices.Contains(got, o) {
					t.Errorf("mask %s is mounted %v, without %s", p, got, o)
				}
			}
		}
	}
	if _, ok := opts["/proc/cmdline"]; !ok {
		t.Errorf("/proc/cmdline is not masked:\n%s", mountinfo)
	}
	for _, l := range []string{"/tmp 1777", "/dev/shm 1777", home + " 700"} {
		if !strings.Contains(sec["modes"], l+"\n") {
			t.Errorf("want %q among the modes:\n%s", l, sec["modes"])
		}
	}
	if got, want := strings.TrimSpace(sec["dev"]), "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"; got != want {
		t.Errorf("/dev holds %q, want %q", got, want)
	}
	for _, f := range []string{"group", "hosts", "nsswitch.conf", "passwd"} {
		if !strings.Contains(" "+sec["etc"], " "+f+" ") {
			t.Errorf("/etc lacks %s: %q", f, sec["etc"])
		}
	}
	for _, d := range []string{"/tmp", "/dev/shm", home} {
		if !strings.Contains(sec["write"], "wrote "+d+"\n") {
			t.Errorf("the job cannot write %s: %q %s", d, sec["write"], r.Stderr)
		}
	}
}
