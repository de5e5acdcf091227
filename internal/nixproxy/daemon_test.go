package nixproxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// testDaemon is a real nix-daemon started by the test (as root) on a socket
// of its own, with a nix.conf of its own; the host's store and database.
type testDaemon struct {
	dir, sock string
	cmd       *exec.Cmd
}

var (
	daemonsMu sync.Mutex
	daemons   = map[string]*testDaemon{}
)

// stopDaemons kills the daemons this test process started, by pid.
func stopDaemons() {
	daemonsMu.Lock()
	defer daemonsMu.Unlock()
	for k, d := range daemons {
		d.cmd.Process.Kill()
		d.cmd.Wait()
		os.RemoveAll(d.dir)
		delete(daemons, k)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopDaemons()
	os.Exit(code)
}

// daemon returns a nix-daemon whose nix.conf has `sandbox = sandbox` and
// trusted-users = trusted (empty: nobody, not even root, is trusted, so the
// test process itself is an untrusted client). It skips when the test cannot
// start one (not root, no nix-daemon).
func daemon(t testing.TB, sandbox, trusted string) *testDaemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("starting a nix-daemon needs root (CI runs the tests as root)")
	}
	if _, err := exec.LookPath("nix-daemon"); err != nil {
		t.Skip("no nix-daemon on PATH (apt-get install nix-bin)")
	}
	key := sandbox + "/" + trusted
	daemonsMu.Lock()
	defer daemonsMu.Unlock()
	if d := daemons[key]; d != nil {
		return d
	}
	ensureBuildUsers(t)
	dir, err := os.MkdirTemp("", "closet-nixproxy-daemon-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	conf := fmt.Sprintf("sandbox = %s\nsandbox-fallback = false\nsubstituters =\nbuild-users-group = nixbld\ntrusted-users = %s\nallowed-users = *\n", sandbox, trusted)
	if err := os.WriteFile(filepath.Join(dir, "nix.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &testDaemon{dir: dir, sock: filepath.Join(dir, "socket")}
	d.cmd = exec.Command("nix-daemon")
	d.cmd.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "NIX_CONF_DIR=" + dir, "NIX_DAEMON_SOCKET_PATH=" + d.sock}
	var log bytes.Buffer
	d.cmd.Stdout, d.cmd.Stderr = &log, &log
	// Dies with the test binary even when TestMain's cleanup does not run
	// (a test timeout).
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting nix-daemon: %v", err)
	}
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", d.sock); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			d.cmd.Process.Kill()
			d.cmd.Wait()
			t.Fatalf("nix-daemon did not listen on %s: %s", d.sock, log.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	os.Chmod(d.sock, 0o666)
	daemons[key] = d
	return d
}

// ensureBuildUsers creates the nixbld group and users a sandboxed daemon
// builds as, when the host lacks them (what scripts/nixdaemon does).
func ensureBuildUsers(t testing.TB) {
	if exec.Command("getent", "group", "nixbld").Run() == nil {
		return
	}
	run := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	run("groupadd", "--system", "nixbld")
	for i := 1; i <= 4; i++ {
		run("useradd", "--system", "--no-create-home", "--home-dir", "/var/empty", "--shell", "/usr/sbin/nologin",
			"--gid", "nixbld", "--groups", "nixbld", fmt.Sprintf("nixbld%d", i))
	}
}

func (d *testDaemon) dial() (net.Conn, error) { return net.Dial("unix", d.sock) }

// proxyEnv is a running Server on a socket the unprivileged client reaches.
type proxyEnv struct {
	t      testing.TB
	sock   string
	set    *Set
	srv    *Server
	home   string
	mu     sync.Mutex
	sent   bytes.Buffer // every byte the proxy wrote to its clients
	added  [][]string
	ops    map[Op]int // requests the proxy handled, by operation
	before []bool     // per Add call: no byte naming the paths had reached a client
}

// recConn records what the proxy writes to the client.
type recConn struct {
	net.Conn
	e *proxyEnv
}

func (r recConn) Write(p []byte) (int, error) {
	r.e.mu.Lock()
	r.e.sent.Write(p)
	r.e.mu.Unlock()
	return r.Conn.Write(p)
}

func startProxy(t testing.TB, d *testDaemon, initial ...string) *proxyEnv {
	t.Helper()
	// Not t.TempDir: its parent is private to root and nobody must reach
	// the socket and its home.
	dir, err := os.MkdirTemp("", "closet-nixproxy-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	home := filepath.Join(dir, "home")
	os.Mkdir(home, 0o755)
	os.Chown(home, testutil.Nobody, testutil.Nobody)
	e := &proxyEnv{t: t, sock: filepath.Join(dir, "nix.sock"), home: home}
	var closure []string
	for _, p := range initial {
		closure = append(closure, hostClosure(t, p)...)
	}
	e.set = NewSet(closure, func(ctx context.Context, paths []string) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		ok := true
		for _, p := range paths {
			if bytes.Contains(e.sent.Bytes(), []byte(p)) {
				ok = false
			}
		}
		e.added = append(e.added, paths)
		e.before = append(e.before, ok)
		return nil
	})
	e.ops = map[Op]int{}
	e.srv = &Server{Policy: e.set, Dial: d.dial, Logf: t.Logf, Observe: func(op Op, _ time.Duration) {
		e.mu.Lock()
		e.ops[op]++
		e.mu.Unlock()
	}}
	l, err := net.Listen("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(e.sock, 0o777)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.srv.ServeListener(ctx, recListener{l, e})
	}()
	t.Cleanup(func() { cancel(); <-done; e.srv.Close() })
	return e
}

type recListener struct {
	net.Listener
	e *proxyEnv
}

func (l recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return recConn{c, l.e}, nil
}

// hostClosure is nix-store -qR as root against the host store.
func hostClosure(t testing.TB, p string) []string {
	out, err := exec.Command("nix-store", "-qR", p).Output()
	if err != nil {
		t.Fatalf("nix-store -qR %s: %v", p, err)
	}
	return strings.Fields(string(out))
}

// nixAs runs a nix client as nobody (untrusted) against the store at
// socket (the proxy's or, for controls, the daemon's).
func nixAs(t testing.TB, socket, home string, args ...string) (string, error) {
	return nixEnvAs(t, []string{"NIX_REMOTE=unix://" + socket}, home, args...)
}

// nixEnvAs runs a nix client as nobody with env added to a minimal
// environment.
func nixEnvAs(t testing.TB, env []string, home string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + home, "USER=nobody", "LANG=C.UTF-8",
		"XDG_CACHE_HOME=" + home + "/.cache", "NIX_PATH="}, env...)
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testutil.Nobody, Gid: testutil.Nobody}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (e *proxyEnv) nix(args ...string) (string, error) {
	return nixAs(e.t, e.sock, e.home, args...)
}

func (e *proxyEnv) addedPaths() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ps := range e.added {
		out = append(out, ps...)
	}
	return out
}

func (e *proxyEnv) hookBeforeReplies() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ok := range e.before {
		if !ok {
			return false
		}
	}
	return true
}

// writeExpr writes a Nix file readable by nobody.
func writeExpr(t testing.TB, dir, name, text string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildThroughProxy(t *testing.T) {
	d := daemon(t, "true", "")
	busybox := fixture.Path(t, "busybox")
	e := startProxy(t, d, busybox)
	nonce := time.Now().UnixNano()
	expr := writeExpr(t, e.home, "build.nix", fmt.Sprintf(`derivation {
  name = "closet-proxy-build"; system = builtins.currentSystem; nonce = "%d";
  builder = "${builtins.storePath %s}/bin/sh";
  args = [ "-c" "echo built > $out" ];
}`, nonce, busybox))
	out, err := e.nix("nix-build", "--no-out-link", expr)
	if err != nil {
		t.Fatalf("nix-build through the proxy: %v\n%s", err, out)
	}
	lines := strings.Fields(out)
	res := lines[len(lines)-1]
	if !strings.HasPrefix(res, "/nix/store/") || !strings.HasSuffix(res, "-closet-proxy-build") {
		t.Fatalf("nix-build printed %q", out)
	}
	if b, err := os.ReadFile(res); err != nil || string(b) != "built\n" {
		t.Fatalf("output %s: %q %v", res, b, err)
	}
	if !e.set.Visible(res) {
		t.Errorf("the built output %s did not join the visible set; added: %v", res, e.addedPaths())
	}
	if !e.hookBeforeReplies() {
		t.Errorf("a reply naming a new path reached the client before Policy.Add was called")
	}
	var drvAdded bool
	for _, p := range e.addedPaths() {
		drvAdded = drvAdded || strings.HasSuffix(p, "-closet-proxy-build.drv")
	}
	if !drvAdded {
		t.Errorf("the .drv nix-build added did not join the visible set: %v", e.addedPaths())
	}
}

func TestAddThroughProxy(t *testing.T) {
	d := daemon(t, "true", "")
	e := startProxy(t, d, fixture.Path(t, "busybox"))
	f := writeExpr(t, e.home, fmt.Sprintf("added-%d.txt", time.Now().UnixNano()), "hello from the job\n")
	out, err := e.nix("nix-store", "--add", f)
	if err != nil {
		t.Fatalf("nix-store --add through the proxy: %v\n%s", err, out)
	}
	p := strings.TrimSpace(out)
	if !strings.HasPrefix(p, "/nix/store/") || !e.set.Visible(p) {
		t.Fatalf("nix-store --add printed %q; visible: %v", out, e.set.Visible(p))
	}
	if !e.hookBeforeReplies() {
		t.Errorf("the reply naming the added path reached the client before Policy.Add")
	}
	// The new path is usable through the proxy afterwards.
	if out, err := e.nix("nix-store", "-q", "--hash", p); err != nil || !strings.HasPrefix(out, "sha256:") {
		t.Errorf("nix-store -q --hash of the added path: %v %s", err, out)
	}
}

// TestOtherTenantNotValid: another tenant's path exists (the control shows
// the raw daemon answers for it) but the proxy says it is not valid.
func TestOtherTenantNotValid(t *testing.T) {
	d := daemon(t, "true", "")
	e := startProxy(t, d, fixture.Path(t, "busybox"))
	alice := fixture.Path(t, "tenant-alice-src")
	if out, err := nixAs(t, d.sock, e.home, "nix-store", "-q", "--hash", alice); err != nil {
		t.Fatalf("control: the raw daemon should answer for %s: %v %s", alice, err, out)
	}
	for _, q := range []string{"--references", "--hash", "--deriver", "--size"} {
		out, err := e.nix("nix-store", "-q", q, alice)
		if err == nil || !strings.Contains(out, "is not valid") {
			t.Errorf("nix-store -q %s of another tenant's path through the proxy: err %v, output %q; want a failure saying it is not valid", q, err, out)
		}
	}
}

// TestReferrersCut: busybox is shared (app and snoop refer to it); through
// the proxy its referrers outside the view disappear.
func TestReferrersCut(t *testing.T) {
	d := daemon(t, "true", "")
	busybox := fixture.Path(t, "busybox")
	e := startProxy(t, d, busybox)
	raw, err := nixAs(t, d.sock, e.home, "nix-store", "-q", "--referrers", busybox)
	if err != nil || !strings.Contains(raw, "-app") {
		t.Fatalf("control: the raw daemon lists busybox's referrers (app among them): %v %q", err, raw)
	}
	out, err := e.nix("nix-store", "-q", "--referrers", busybox)
	if err != nil {
		t.Fatalf("nix-store -q --referrers through the proxy: %v %s", err, out)
	}
	for _, p := range strings.Fields(out) {
		if !e.set.Visible(p) {
			t.Errorf("--referrers through the proxy named %s, outside the view", p)
		}
	}
	if out, err := e.nix("nix-store", "-q", "--roots", busybox); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("nix-store -q --roots through the proxy: err %v, output %q; want nothing", err, out)
	}
}

// TestStorePathOfOtherTenant: a build that names another tenant's path with
// builtins.storePath and prints it. The control, on the raw daemon, leaks the
// secret; through the proxy it fails.
func TestStorePathOfOtherTenant(t *testing.T) {
	d := daemon(t, "true", "")
	busybox := fixture.Path(t, "busybox")
	alice := fixture.Path(t, "tenant-alice-src")
	e := startProxy(t, d, busybox)
	secret, err := os.ReadFile(filepath.Join(alice, "secret.txt"))
	if err != nil {
		t.Fatal(err)
	}
	expr := writeExpr(t, e.home, "steal.nix", fmt.Sprintf(`derivation {
  name = "closet-proxy-steal"; system = builtins.currentSystem; nonce = "%d";
  builder = "${builtins.storePath %s}/bin/sh";
  args = [ "-c" "read -r s < ${builtins.storePath %s}/secret.txt; echo \"$s\" > $out" ];
}`, time.Now().UnixNano(), busybox, alice))
	raw, err := nixAs(t, d.sock, e.home, "nix-build", "--no-out-link", expr)
	if err != nil {
		t.Fatalf("control: the raw daemon builds the stealing derivation: %v %s", err, raw)
	}
	rawOut := strings.Fields(raw)
	if b, _ := os.ReadFile(rawOut[len(rawOut)-1]); strings.TrimSpace(string(b)) != strings.TrimSpace(string(secret)) {
		t.Fatalf("control: the stealing build did not print the secret: %q", b)
	}
	out, err := e.nix("nix-build", "--no-out-link", strings.Replace(expr, "", "", 1))
	if err == nil {
		t.Fatalf("a build naming another tenant's path succeeded through the proxy: %s", out)
	}
	if strings.Contains(out, strings.TrimSpace(string(secret))) {
		t.Fatalf("the secret leaked through the proxy: %s", out)
	}
	if !strings.Contains(out, "is not valid") {
		t.Errorf("want closet's 'is not valid' error, got: %s", out)
	}
}

func TestGarbageCollectionRefused(t *testing.T) {
	d := daemon(t, "true", "")
	e := startProxy(t, d, fixture.Path(t, "busybox"))
	out, err := e.nix("nix-store", "--gc", "--print-dead")
	if err == nil || !strings.Contains(out, "CollectGarbage") || !strings.Contains(out, "not allowed") {
		t.Fatalf("nix-store --gc through the proxy: err %v, output %q; want closet's refusal", err, out)
	}
	out, err = e.nix("nix-store", "--optimise")
	if err == nil || !strings.Contains(out, "not allowed") {
		t.Errorf("nix-store --optimise through the proxy: err %v, output %q; want closet's refusal", err, out)
	}
}

func TestCheckDaemonSandboxed(t *testing.T) {
	shell := filepath.Join(fixture.Path(t, "busybox"), "bin", "sh")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Run("sandboxed", func(t *testing.T) {
		d := daemon(t, "true", "")
		if err := CheckDaemonSandboxed(ctx, d.dial, shell); err != nil {
			t.Fatalf("sandbox = true, untrusted: %v", err)
		}
	})
	t.Run("unsandboxed", func(t *testing.T) {
		d := daemon(t, "false", "")
		err := CheckDaemonSandboxed(ctx, d.dial, shell)
		if !errorsIs(err, ErrNotSandboxed) {
			t.Fatalf("sandbox = false: got %v, want ErrNotSandboxed", err)
		}
		t.Logf("refusal: %v", err)
	})
	t.Run("relaxed", func(t *testing.T) {
		d := daemon(t, "relaxed", "")
		err := CheckDaemonSandboxed(ctx, d.dial, shell)
		if !errorsIs(err, ErrNotSandboxed) {
			t.Fatalf("sandbox = relaxed: got %v, want ErrNotSandboxed", err)
		}
	})
	t.Run("trusted", func(t *testing.T) {
		d := daemon(t, "true", "root")
		err := CheckDaemonSandboxed(ctx, d.dial, shell)
		if !errorsIs(err, ErrTrusted) {
			t.Fatalf("trusted caller: got %v, want ErrTrusted", err)
		}
		t.Logf("refusal: %v", err)
	})
}

// TestNixCommandThroughProxy: the newer CLI (BuildPathsWithResults, path
// info) and nix-instantiate + nix-store --realise (QueryMissing, BuildPaths
// of a .drv, QueryDerivationOutputMap) through the proxy.
func TestNixCommandThroughProxy(t *testing.T) {
	d := daemon(t, "true", "")
	busybox := fixture.Path(t, "busybox")
	e := startProxy(t, d, busybox)
	expr := func(tag string) string {
		return writeExpr(t, e.home, tag+".nix", fmt.Sprintf(`derivation {
  name = "closet-proxy-%s"; system = builtins.currentSystem; nonce = "%d";
  builder = "${builtins.storePath %s}/bin/sh"; args = [ "-c" "echo %s > $out" ];
}`, tag, time.Now().UnixNano(), busybox, tag))
	}
	nix := []string{"nix", "--extra-experimental-features", "nix-command"}
	out, err := e.nix(append(nix, "build", "--no-link", "--json", "-f", expr("new"))...)
	if err != nil || !strings.Contains(out, "-closet-proxy-new") {
		t.Fatalf("nix build -f through the proxy: %v %s", err, out)
	}
	var built string
	for _, f := range strings.FieldsFunc(out, func(r rune) bool { return r == '"' }) {
		if strings.HasPrefix(f, "/nix/store/") && strings.HasSuffix(f, "-closet-proxy-new") {
			built = f
		}
	}
	if built == "" || !e.set.Visible(built) {
		t.Fatalf("nix build's output %q is not in the view", built)
	}
	out, err = e.nix(append(nix, "path-info", "--json", built)...)
	if err != nil || !strings.Contains(out, built) {
		t.Fatalf("nix path-info of the built output: %v %s", err, out)
	}
	if strings.Contains(out, "registrationTime\":1") || strings.Contains(out, "signatures") {
		t.Errorf("path info is not censored: %s", out)
	}
	alice := fixture.Path(t, "tenant-alice-src")
	if out, err := e.nix(append(nix, "path-info", alice)...); err == nil || !strings.Contains(out, "is not valid") {
		t.Errorf("nix path-info of another tenant's path: %v %s", err, out)
	}

	drv, err := e.nix("nix-instantiate", expr("old"))
	if err != nil {
		t.Fatalf("nix-instantiate through the proxy: %v %s", err, drv)
	}
	drv = lastField(drv)
	out, err = e.nix("nix-store", "--realise", drv)
	if err != nil || !strings.HasSuffix(lastField(out), "-closet-proxy-old") || !e.set.Visible(lastField(out)) {
		t.Fatalf("nix-store --realise %s through the proxy: %v %s", drv, err, out)
	}
	if !e.hookBeforeReplies() {
		t.Errorf("a reply naming a new path reached the client before Policy.Add")
	}
	for _, op := range []Op{OpBuildPathsWithResults, OpBuildPaths, OpQueryMissing, OpQueryDerivationOutputMap, OpAddToStore, OpQueryPathInfo} {
		if e.waitOp(op) == 0 {
			e.mu.Lock()
			t.Errorf("the clients never sent %s; seen: %v", op, e.ops)
			e.mu.Unlock()
		}
	}
}

// TestJobConfig: a client configured as a job is (NixConf's nix.conf,
// JobEnv, the socket at the standard path, which NIX_DAEMON_SOCKET_PATH
// stands in for here) builds through the proxy.
func TestJobConfig(t *testing.T) {
	d := daemon(t, "true", "")
	busybox := fixture.Path(t, "busybox")
	e := startProxy(t, d, busybox)
	confDir := filepath.Join(e.home, "etc-nix")
	os.Mkdir(confDir, 0o755)
	if err := os.WriteFile(filepath.Join(confDir, "nix.conf"), []byte(NixConf(1, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	expr := writeExpr(t, e.home, "conf.nix", fmt.Sprintf(`derivation {
  name = "closet-proxy-conf"; system = builtins.currentSystem; nonce = "%d";
  builder = "${builtins.storePath %s}/bin/sh"; args = [ "-c" "echo conf > $out" ];
}`, time.Now().UnixNano(), busybox))
	env := append([]string{"NIX_CONF_DIR=" + confDir, "NIX_DAEMON_SOCKET_PATH=" + e.sock}, JobEnv...)
	out, err := nixEnvAs(t, env, e.home, "nix", "build", "--no-link", "-f", expr)
	if err != nil {
		t.Fatalf("nix build with the job's nix.conf: %v %s", err, out)
	}
	if e.waitOp(OpBuildPathsWithResults) == 0 {
		t.Fatalf("the build did not go through the proxy")
	}
}

// waitOp is how many op requests the proxy has handled, waiting up to 10 s
// for the first: the proxy counts a request (Server.Observe) after its
// reply is written, so a client can have its answer, and have exited,
// before the count moves.
func (e *proxyEnv) waitOp(op Op) int {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		e.mu.Lock()
		n := e.ops[op]
		e.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			return n
		}
	}
}
