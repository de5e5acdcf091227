package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// installablesNix builds with the fixture's busybox, no nixpkgs. SALT
// makes the derivations new to the store on every test run, so the
// realisation really happens.
const installablesNix = `let bb = builtins.storePath "BB"; in rec {
  hello = derivation {
    name = "closet-inst-hello"; system = "x86_64-linux"; builder = "${bb}/bin/sh"; salt = "SALT";
    args = [ "-c" "mkdir -p $out/bin; printf '#!${bb}/bin/sh\\necho inst-ok $GREETING\\n' > $out/bin/hi; ${bb}/bin/chmod +x $out/bin/hi" ];
  };
  dev = derivation {
    name = "closet-inst-dev"; system = "x86_64-linux"; builder = "${bb}/bin/sh"; salt = "SALT";
    inherit hello; GREETING = "from-the-drv";
    args = [ "-c" "echo > $out" ];
  };
  broken = derivation { name = "closet-inst-broken"; system = "x86_64-linux"; builder = "${bb}/bin/sh"; args = [ "-c" "exit 3" ]; };
}
`

// TestRunInstallables: -f/-A, --expr and a build environment (shell
// --drv) are realised with the caller's own nix through the daemon, and
// the job sees them; what does not evaluate or build is refused with
// nix's reason, exit 125, and nothing runs.
func TestRunInstallables(t *testing.T) {
	d := fixture.NixDaemon(t)
	bb := fixture.Path(t, "busybox")
	dir := testutil.TempDir(t)
	salt := time.Now().Format("150405.000000000")
	src := strings.NewReplacer("BB", bb, "SALT", salt).Replace(installablesNix)
	file := filepath.Join(dir, "default.nix")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	closet := func(args ...string) testutil.Result {
		cmd := testutil.Command(t, dir, args...)
		d.Untrusted(cmd)
		return testutil.Run(t, cmd)
	}
	if r := closet("run", "--cwd", "ro", "-f", file, "-A", "hello", bb, "--", "hi"); r.Code != 0 || !strings.Contains(r.Stdout, "inst-ok") {
		t.Errorf("-f -A: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	expr := "(import " + file + ").hello"
	if r := closet("run", "--cwd", "none", "--expr", expr, bb, "--", "sh", "-c", "ls /nix/store"); r.Code != 0 || !strings.Contains(r.Stdout, "closet-inst-hello") {
		t.Errorf("--expr: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	// shell --drv: the derivation's inputs and its environment.
	drvOut := testutil.Run(t, nixInstantiate(t, d, file, "dev"))
	drv := strings.TrimSpace(drvOut.Stdout)
	if !strings.HasSuffix(drv, ".drv") {
		t.Fatalf("nix-instantiate: %q %q", drvOut.Stdout, drvOut.Stderr)
	}
	cmd := testutil.Command(t, dir, "shell", "--cwd", "none", "--tty", "never", "--drv", drv, "--shell", bb+"/bin/sh", bb)
	d.Untrusted(cmd)
	cmd.Stdin = strings.NewReader("echo GREETING=$GREETING; hi\n")
	r := testutil.Run(t, cmd)
	if r.Code != 0 || !strings.Contains(r.Stdout, "GREETING=from-the-drv") || !strings.Contains(r.Stdout, "inst-ok") {
		t.Errorf("shell --drv: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	// Refusals: nothing runs, nix's reason is on stderr.
	for _, bad := range [][]string{
		{"-f", file, "-A", "nope"},
		{"-f", file, "-A", "broken"},
		{"--expr", "this is not nix"},
	} {
		args := append(append([]string{"run", "--cwd", "rw"}, bad...), bb, "--", "sh", "-c", "touch ran")
		r := closet(args...)
		if r.Code != exitcode.Sandbox || r.Stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want 125 with nix's reason", bad, r.Code, r.Stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
			t.Fatalf("%v: the command ran", bad)
		}
	}
}

// nixInstantiate is the untrusted caller's nix-instantiate FILE -A ATTR.
func nixInstantiate(t *testing.T, d fixture.Daemon, file, attr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("nix-instantiate", file, "-A", attr)
	d.Untrusted(cmd)
	return cmd
}
