package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/spec"
	"github.com/closet-sandbox/closet/internal/testutil"
)

const asNobodyEnv = "CLOSET_SANDBOX_TEST_AS_NOBODY"

// asNobody reruns the calling test alone as nobody when the test process
// is root (rootless is the product), and reports whether the caller goes
// on: it is then unprivileged. (TestMain, idmap_test.go's, stays root for
// the identity tests.)
func asNobody(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 || os.Getenv(asNobodyEnv) != "" {
		return true
	}
	// The test binary lives in a directory only root can enter.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	copyBin := filepath.Join(testutil.TempDir(t), "sandbox.test")
	if err := os.WriteFile(copyBin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(copyBin, "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", asNobodyEnv + "=1", fixture.EnvDir + "=" + filepath.Join(testutil.ModuleRoot(), ".fixture")}
	testutil.EnsureGCRootDir(t)
	testutil.Unprivileged(cmd)
	r := testutil.Run(t, cmd)
	t.Log(r.Stdout + r.Stderr)
	if r.Code != 0 {
		t.Fatalf("as nobody: exit %d", r.Code)
	}
	return false
}

// closureOf is the closure of roots, references before referrers.
func closureOf(t *testing.T, roots ...string) []string {
	t.Helper()
	return closure.ReferencesFirst(testutil.Closure(t, roots...).Paths, nil)
}

// liveJob runs script in a sandbox whose view starts as store, calls
// grow (in its own goroutine) once the target has started, and returns the
// job's stdout and stderr.
func liveJob(t *testing.T, bb string, store []string, landlock, script string, grow func(*Control)) (string, string, *Outcome) {
	t.Helper()
	stdout, stderr, out, _ := liveJobControl(t, bb, store, landlock, script, grow)
	return stdout, stderr, out
}

// liveJobControl is liveJob that also returns the job's Control, ended.
func liveJobControl(t *testing.T, bb string, store []string, landlock, script string, grow func(*Control)) (string, string, *Outcome, *Control) {
	t.Helper()
	return liveJobIn(t, bb, store, nil, landlock, script, grow)
}

// liveJobIn is liveJobControl in view, a cached view's copy (Hooks.View),
// when not nil.
func liveJobIn(t *testing.T, bb string, store []string, view *os.File, landlock, script string, grow func(*Control)) (string, string, *Outcome, *Control) {
	t.Helper()
	s := &spec.Spec{
		Version: spec.Version, Path: bb + "/bin/sh", Args: []string{"sh", "-c", script},
		Env: []string{"PATH=" + bb + "/bin"}, Cwd: "/", UID: 1000, GID: 100, User: "u", Home: "/home/u",
		Hostname: "live", Store: store, Mounts: []spec.Mount{}, Etc: map[string]string{},
		Seccomp: "default", Landlock: landlock,
	}
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	var stdout, stderr bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { io.Copy(&stdout, outR); wg.Done() }()
	go func() { io.Copy(&stderr, errR); wg.Done() }()
	var ctl *Control
	done := make(chan struct{})
	hooks := Hooks{
		Control: func(c *Control) { ctl = c },
		Started: func(int) {
			go func() {
				defer close(done)
				grow(ctl)
			}()
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	out, err := Run(ctx, s, LaunchOptions{Stdio: Stdio{Stdout: outW, Stderr: errW}, View: view}, hooks)
	outW.Close()
	errW.Close()
	wg.Wait()
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, stderr.String())
	}
	<-done
	return stdout.String(), stderr.String(), out, ctl
}

// waitFor is a shell loop that waits for path to appear, for at most
// about 20 seconds, so that a failed AddPaths ends the job, not the test's
// deadline.
func waitFor(path string) string {
	return "i=0; while [ ! -e " + path + " ] && [ $i -lt 4000 ]; do sleep 0.005; i=$((i+1)); done"
}

func without(all []string, drop ...string) []string {
	var out []string
	for _, p := range all {
		if !slices.Contains(drop, p) {
			out = append(out, p)
		}
	}
	return out
}

// TestLiveViewGrows: a job waits for a path that is not in its view; the
// path and its references appear, read-only, once AddPaths returns, and
// run; a path never added stays invisible; bad requests change nothing.
func TestLiveViewGrows(t *testing.T) {
	if !asNobody(t) {
		return
	}
	bb, app, lib, link := fixture.Path(t, "busybox"), fixture.Path(t, "app"), fixture.Path(t, "lib"), fixture.Path(t, "busybox-link")
	bob := fixture.Path(t, "tenant-bob-src")
	script := `
` + waitFor(app+"/bin/app") + `
` + app + `/bin/app; echo "--store"; ls /nix/store; echo "--link"; readlink ` + link + `
echo "--mountinfo"; cat /proc/self/mountinfo
echo "--writes"
touch ` + app + `/x 2>/dev/null && echo WROTE-IN-PATH
mkdir /nix/store/new 2>/dev/null && echo WROTE-IN-STORE
echo x >> ` + lib + `/share/greeting.txt 2>/dev/null && echo WROTE-FILE
ln -s /tmp /nix/store/l 2>/dev/null && echo WROTE-LINK
echo "--foreign"
ls /proc/1/task >/dev/null || echo CANNOT-LIST-INIT-THREADS
for f in /proc/[0-9]*/task/[0-9]*/mountinfo; do
  cmp -s $f /proc/self/mountinfo || { echo "== $f"; cat $f; }
done
echo "--end"`
	var errs []error
	stdout, stderr, out := liveJob(t, bb, closureOf(t, bb), "best-effort", script, func(c *Control) {
		ctx := context.Background()
		nope := "/nix/store/00000000000000000000000000000000-nope"
		// Refused before anything is sent: not store paths.
		for _, bad := range [][]string{{"/etc/passwd"}, {"/nix/store/../etc"}, {app + "/bin/app"}} {
			if err := c.AddPaths(ctx, bad); err == nil {
				errs = append(errs, errors.New("AddPaths accepted "+bad[0]))
			}
		}
		// The init checks names too, whatever the parent sent.
		for _, bad := range []string{"/nix/store/../../etc", "/nix/store/" + filepath.Base(app) + "/bin", "/etc/passwd", "/nix/store/.."} {
			err := c.send(ctx, []string{bob, bad})
			var se *stage.Error
			if !errors.As(err, &se) || se.Stage != stage.Init || !strings.Contains(se.Op, "check") {
				errs = append(errs, errors.New("the init took "+bad+": "+errString(err)))
			}
		}
		// A path the store lacks fails the whole request: bob, in it
		// too, must stay invisible.
		err := c.AddPaths(ctx, []string{bob, nope})
		var se *stage.Error
		if !errors.As(err, &se) || !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), nope) {
			errs = append(errs, errors.New("a missing path: want a stage.Error with ENOENT naming it, got "+errString(err)))
		}
		// References first; the symlink path is copied as a link; a path
		// already visible (busybox) is a no-op.
		if err := c.AddPaths(ctx, []string{lib, link, bb, app}); err != nil {
			errs = append(errs, err)
		}
		if err := c.AddPaths(ctx, []string{app, lib}); err != nil {
			errs = append(errs, errors.New("adding visible paths again: "+err.Error()))
		}
	})
	for _, err := range errs {
		t.Error(err)
	}
	if out.Result.Code != 0 {
		t.Fatalf("job exit %d\nstdout: %s\nstderr: %s", out.Result.Code, stdout, stderr)
	}
	sec := sections(stdout)
	if greeting, _ := os.ReadFile(lib + "/share/greeting.txt"); !strings.Contains(sec[""], strings.TrimSpace(string(greeting))) {
		t.Errorf("app did not run from the grown view: %q (stderr %s)", sec[""], stderr)
	}
	got := strings.Fields(sec["store"])
	want := []string{filepath.Base(bb), filepath.Base(app), filepath.Base(lib), filepath.Base(link)}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("/nix/store after growth: %v, want %v", got, want)
	}
	if target, err := os.Readlink(link); err != nil || strings.TrimSpace(sec["link"]) != target {
		t.Errorf("the symlink path reads %q inside, %q outside (%v)", sec["link"], target, err)
	}
	checkViewMounts(t, sec["mountinfo"], 3) // busybox, lib, app; the link is a link
	checkForeignMountinfo(t, sec["foreign"])
	if w := strings.TrimSpace(sec["writes"]); w != "" {
		t.Errorf("writes into the grown view succeeded: %s", w)
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

// sections splits output at lines "--name".
func sections(out string) map[string]string {
	m := map[string]string{}
	cur := ""
	for _, l := range strings.SplitAfter(out, "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(l), "--"); ok && name != "" && !strings.Contains(name, " ") {
			cur = name
			continue
		}
		m[cur] += l
	}
	return m
}

// checkViewMounts asserts that every mount under /nix/store is read-only,
// nosuid and nodev, and that there are want of them (want < 0: any).
func checkViewMounts(t *testing.T, mountinfo string, want int) {
	t.Helper()
	n := 0
	for _, l := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || !strings.HasPrefix(f[4], "/nix/store") {
			continue
		}
		opts := strings.Split(f[5], ",")
		for _, o := range []string{"ro", "nosuid", "nodev"} {
			if !slices.Contains(opts, o) {
				t.Errorf("%s is mounted %s: not %s", f[4], f[5], o)
			}
		}
		if f[4] != "/nix/store" {
			n++
		}
	}
	if want >= 0 && n != want {
		t.Errorf("%d mounts below /nix/store, want %d:\n%s", n, want, mountinfo)
	}
}

// checkForeignMountinfo looks at what the job read of mount namespaces
// other than its own (/proc/PID/task/TID/mountinfo of init's threads): the
// stager's, rooted at the store directory. It must show none of the host's
// mounts: at most a mount below the store itself.
func checkForeignMountinfo(t *testing.T, foreign string) {
	t.Helper()
	if strings.Contains(foreign, "CANNOT-LIST-INIT-THREADS") {
		t.Fatalf("control: the job cannot list init's threads, so this test sees nothing:\n%s", foreign)
	}
	files := 0
	for _, l := range strings.Split(strings.TrimSpace(foreign), "\n") {
		if strings.HasPrefix(l, "== ") {
			files++
			continue
		}
		if f := strings.Fields(l); len(f) < 5 || !strings.HasPrefix(f[3], "/nix/store/") {
			t.Errorf("the job reads a mount of another namespace that is not in the store: %q", l)
		}
	}
	if files == 0 {
		t.Errorf("no mountinfo of the stager's namespace was readable; the attack found nothing to judge:\n%s", foreign)
	}
	t.Logf("foreign mountinfo the job read:\n%s", foreign)
}

// TestLiveViewThousandPaths adds dag-1000's closure to a running job one
// path per request, measures the cost per path, and checks that the job
// then sees all of it, read-only, nosuid, nodev, readable under Landlock.
func TestLiveViewThousandPaths(t *testing.T) {
	if !asNobody(t) {
		return
	}
	top, ok := fixture.Optional("dag-1000")
	if !ok {
		t.Logf("dag-1000 is not built (scripts/teststore --large); using dag-100")
		top = fixture.Path(t, "dag-100")
	}
	bb := fixture.Path(t, "busybox")
	all := closureOf(t, top)
	add := without(all, bb)
	script := `
` + waitFor(top) + `
echo "--count"; ls /nix/store | wc -l
echo "--read"; cat ` + top + `/deps 2>&1 | head -c 0; for p in $(ls -d /nix/store/*-dag-node-*); do if [ -d $p ]; then cat $p/deps; else cat $p; fi >/dev/null || echo "CANNOT-READ $p"; done
echo "--mountinfo"; cat /proc/self/mountinfo
echo "--writes"
for p in $(ls -d /nix/store/*-dag-node-* | head -20); do touch $p/x 2>/dev/null && echo WROTE $p; echo x >> $p 2>/dev/null && echo WROTE $p; done
echo "--end"`
	var elapsed time.Duration
	var addErr error
	stdout, stderr, out := liveJob(t, bb, closureOf(t, bb), "best-effort", script, func(c *Control) {
		// References first, as closureOf lists them.
		t0 := time.Now()
		for _, p := range add {
			if addErr = c.AddPaths(context.Background(), []string{p}); addErr != nil {
				return
			}
		}
		elapsed = time.Since(t0)
	})
	if addErr != nil {
		t.Fatal(addErr)
	}
	if out.Result.Code != 0 {
		t.Fatalf("job exit %d\nstdout: %s\nstderr: %s", out.Result.Code, stdout, stderr)
	}
	t.Logf("added %d paths one by one in %v: %v per path (LandlockABI %d)", len(add), elapsed, elapsed/time.Duration(len(add)), LandlockABI())
	sec := sections(stdout)
	if n := strings.TrimSpace(sec["count"]); n != strconv.Itoa(len(all)) {
		t.Errorf("the job sees %s store paths, want %d", n, len(all))
	}
	if strings.Contains(sec["read"], "CANNOT-READ") {
		t.Errorf("added paths are not readable:\n%s", sec["read"])
	}
	checkViewMounts(t, sec["mountinfo"], len(all))
	if w := strings.TrimSpace(sec["writes"]); w != "" {
		t.Errorf("writes into the grown view succeeded:\n%s", w)
	}
}

// TestLiveViewConcurrentCallers: AddPaths from many goroutines at once,
// overlapping, one path per call; the job sees exactly the union; once
// the job has ended, AddPaths says so.
func TestLiveViewConcurrentCallers(t *testing.T) {
	if !asNobody(t) {
		return
	}
	bb, top := fixture.Path(t, "busybox"), fixture.Path(t, "dag-100")
	all := closureOf(t, top)
	add := without(all, bb, top)
	script := waitFor(top) + "; ls /nix/store | wc -l"
	var mu sync.Mutex
	var errs []error
	stdout, stderr, out, ctl := liveJobControl(t, bb, closureOf(t, bb), "best-effort", script, func(c *Control) {
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				// Each caller adds half the paths, from its own start.
				for i := 0; i < len(add)/2; i++ {
					p := add[(g*len(add)/4+i)%len(add)]
					if err := c.AddPaths(context.Background(), []string{p}); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}
			}(g)
		}
		wg.Wait()
		// The top last: the job stops waiting once everything else is in.
		if err := c.AddPaths(context.Background(), []string{top}); err != nil {
			errs = append(errs, err)
		}
	})
	for _, err := range errs {
		t.Error(err)
	}
	if out.Result.Code != 0 || strings.TrimSpace(stdout) != strconv.Itoa(len(all)) {
		t.Errorf("exit %d, the job sees %q store paths, want %d (stderr %s)", out.Result.Code, stdout, len(all), stderr)
	}
	if err := ctl.AddPaths(context.Background(), []string{top}); !errors.Is(err, ErrEnded) {
		t.Errorf("AddPaths after the job ended: %v, want ErrEnded", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ctl.AddPaths(ctx, []string{top}); err == nil {
		t.Error("AddPaths with a cancelled context succeeded")
	}
}
