package nixproxy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/nix-community/go-nix/pkg/derivation"
)

// hostileClient speaks the protocol to the proxy directly, as a job that
// does not use the nix client could.
func hostileClient(t *testing.T, e *proxyEnv) *daemonConn {
	c, err := net.Dial("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	dc, err := greetDaemon(c, maxVersion)
	if err != nil {
		t.Fatalf("greeting the proxy: %v", err)
	}
	return dc
}

// addText sends AddToStore (text) with the given content and references.
func (dc *daemonConn) addText(name, text string, refs []string) (string, error) {
	if err := (&Request{Op: OpAddToStore, Name: name, CAMethod: "text:sha256", Refs: refs}).Encode(dc.w, dc.version); err != nil {
		return "", err
	}
	e := &enc{w: dc.w}
	e.u64(uint64(len(text)))
	dc.w.WriteString(text)
	e.u64(0)
	if err := e.flush(); err != nil {
		return "", err
	}
	d := &dec{r: dc.r}
	de, err := readStderr(d, dc.version, nil)
	if err != nil {
		return "", err
	}
	if de != nil {
		return "", de
	}
	p := d.str(maxStringLen)
	readPathInfo(d)
	return p, d.err
}

func drvText(t *testing.T, name, builder string, srcs []string, env map[string]string) (text, path string) {
	drv := &derivation.Derivation{
		Outputs:          map[string]*derivation.Output{"out": {}},
		InputSources:     srcs,
		InputDerivations: map[string][]string{},
		Platform:         nixSystem(),
		Builder:          builder,
		Arguments:        []string{"-c", "cat " + srcs[len(srcs)-1] + "/secret.txt > $out"},
		Env:              map[string]string{"name": name, "builder": builder, "system": nixSystem(), "out": ""},
	}
	for k, v := range env {
		drv.Env[k] = v
	}
	outs, err := drv.CalculateOutputPaths(nil)
	if err != nil {
		t.Fatal(err)
	}
	drv.Outputs["out"].Path = outs["out"]
	drv.Env["out"] = outs["out"]
	var b bytes.Buffer
	if err := drv.WriteDerivation(&b); err != nil {
		t.Fatal(err)
	}
	p, err := drv.DrvPath()
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), p
}

func hostValid(p string) bool {
	return exec.Command("nix-store", "--check-validity", p).Run() == nil
}

// TestHostileDerivationsRefused: a job that writes its own .drv cannot
// give it another tenant's input, hide that input from the references, or
// ask for __noChroot; the daemon never receives such a derivation, and the
// connection stays usable.
func TestHostileDerivationsRefused(t *testing.T) {
	d := daemon(t, "true", "")
	busybox := fixture.Path(t, "busybox")
	alice := fixture.Path(t, "tenant-alice-src")
	e := startProxy(t, d, busybox)
	dc := hostileClient(t, e)
	sh := busybox + "/bin/sh"
	nonce := map[string]string{"nonce": fmt.Sprint(time.Now().UnixNano())}
	cases := []struct {
		name, want string
		srcs, refs []string
		env        map[string]string
	}{
		{"refs name the other tenant", "not in the job's view", []string{busybox, alice}, []string{busybox, alice}, nil},
		{"inputs name it, refs hide it", "not in the job's view", []string{busybox, alice}, []string{busybox}, nil},
		{"__noChroot", "__noChroot", []string{busybox}, []string{busybox}, map[string]string{"__noChroot": "1"}},
	}
	for _, c := range cases {
		env := map[string]string{}
		for k, v := range nonce {
			env[k] = v
		}
		for k, v := range c.env {
			env[k] = v
		}
		text, drvPath := drvText(t, "closet-hostile", sh, c.srcs, env)
		_, err := dc.addText(filepath.Base(drvPath)[33:], text, c.refs)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: AddToStore answered %v; want closet's refusal containing %q", c.name, err, c.want)
		}
		if hostValid(drvPath) {
			t.Errorf("%s: the daemon registered %s", c.name, drvPath)
		}
	}
	// AddTextToStore (8), the older operation, is held to the same rule.
	if err := dc.do(&Request{Op: OpAddTextToStore, Name: "x", Text: "x", Refs: []string{alice}}, func(d *dec) { d.str(maxStringLen) }); err == nil || !strings.Contains(err.Error(), "not in the job's view") {
		t.Errorf("AddTextToStore referring to another tenant's path: %v", err)
	}
	// A derivation added as a file (the daemon would build it all the
	// same) escapes nothing either.
	text, drvPath := drvText(t, "closet-hostile-nar", sh, []string{busybox, alice}, nonce)
	f := writeExpr(t, e.home, filepath.Base(drvPath)[33:], text)
	// Control: the raw daemon registers it and builds it with the other
	// tenant's path among the inputs.
	if out, err := nixAs(t, d.sock, e.home, "nix-store", "--add", f); err != nil {
		t.Errorf("control: the raw daemon should take a .drv added as a file: %v %s", err, out)
	} else if out, err := nixAs(t, d.sock, e.home, "nix-store", "--realise", strings.TrimSpace(out)); err != nil {
		t.Errorf("control: the raw daemon should build the .drv added as a file: %v %s", err, out)
	} else if b, _ := os.ReadFile(lastField(out)); !strings.Contains(string(b), "alice") {
		t.Errorf("control: the build did not copy alice's secret: %q", b)
	}
	if out, err := e.nix("nix-store", "--add", f); err == nil || !strings.Contains(out, "derivations must be added as text") {
		t.Errorf("nix-store --add of a .drv file naming another tenant's path: err %v, output %q; want closet's refusal", err, out)
	}
	// The connection survived every refusal.
	var ok bool
	if err := dc.do(&Request{Op: OpIsValidPath, Path: busybox}, func(d *dec) { ok = d.boolean() }); err != nil || !ok {
		t.Errorf("after the refusals, IsValidPath(busybox) = %v, %v", ok, err)
	}
	if err := dc.do(&Request{Op: OpIsValidPath, Path: alice}, func(d *dec) { ok = d.boolean() }); err != nil || ok {
		t.Errorf("IsValidPath(another tenant's path) = %v, %v; want false", ok, err)
	}
}

// TestContentByHashRefused: a fixed-output derivation whose builder does
// nothing, given the hash of another tenant's added file, is answered with
// that file by the raw daemon (the control). Through the proxy the daemon
// must reproduce the content, which it cannot, so the build is refused.
func TestContentByHashRefused(t *testing.T) {
	d := daemon(t, "true", "")
	busybox := fixture.Path(t, "busybox")
	e := startProxy(t, d, busybox)
	// The other tenant adds a private file (as root, straight to the store).
	secretDir, err := os.MkdirTemp("", "closet-nixproxy-secret-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(secretDir)
	name := fmt.Sprintf("tenant-carol-%d", time.Now().UnixNano())
	secretFile := filepath.Join(secretDir, name)
	os.WriteFile(secretFile, []byte("carol's grade: B\n"), 0o644)
	out, err := exec.Command("nix-store", "--add", secretFile).Output()
	if err != nil {
		t.Fatalf("nix-store --add: %v", err)
	}
	secretPath := strings.TrimSpace(string(out))
	hash, err := exec.Command("nix-store", "-q", "--hash", secretPath).Output()
	if err != nil {
		t.Fatal(err)
	}
	expr := writeExpr(t, e.home, "byhash.nix", fmt.Sprintf(`derivation {
  name = %q; system = builtins.currentSystem;
  builder = "${builtins.storePath %s}/bin/sh"; args = [ "-c" "exit 1" ];
  outputHashMode = "recursive"; outputHashAlgo = "sha256"; outputHash = %q;
}`, name, busybox, strings.TrimSpace(string(hash))))
	raw, err := nixAs(t, d.sock, e.home, "nix-build", "--no-out-link", expr)
	if err != nil || !strings.Contains(raw, secretPath) {
		t.Fatalf("control: the raw daemon should hand over %s by its hash: %v %s", secretPath, err, raw)
	}
	out2, err := e.nix("nix-build", "--no-out-link", expr)
	if err == nil || strings.Contains(out2, secretPath) {
		t.Fatalf("through the proxy a known hash granted the content: %v %s", err, out2)
	}
	if e.set.Visible(secretPath) {
		t.Fatalf("%s joined the job's view", secretPath)
	}
	if !strings.Contains(out2, "rebuilding it to prove its content failed") {
		t.Errorf("want closet's refusal, got: %s", out2)
	}
}

func lastField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}
