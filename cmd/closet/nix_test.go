package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// TestRunNix: closet run --nix gives the job a working Nix that cannot see
// past the job's view. Inside, with the real nix client from the store and
// the real daemon (sandbox on) behind closet's proxy: nix-build of a local
// expression works and its output appears in /nix/store; nix-store --add
// works; another tenant's path is "not valid"; --referrers shows nothing
// outside the view; a build naming another tenant's path fails; --gc is
// refused; ls /nix/store shows only the view.
func TestRunNix(t *testing.T) {
	d := fixture.NixDaemon(t)
	bb := fixture.Path(t, "busybox")
	nix := fixture.Path(t, "nix-client")
	alice := fixture.Path(t, "tenant-alice-src")
	dir := testutil.TempDir(t)
	salt := time.Now().Format("150405.000000000")
	expr := strings.NewReplacer("BB", bb, "SALT", salt, "ALICE", alice).Replace(`let bb = builtins.storePath "BB"; in {
  hello = derivation {
    name = "closet-nix-hello"; system = "x86_64-linux"; builder = "${bb}/bin/sh"; salt = "SALT";
    args = [ "-c" "echo built-inside > $out" ];
  };
  steal = derivation {
    name = "closet-nix-steal"; system = "x86_64-linux"; builder = "${bb}/bin/sh"; salt = "SALT";
    args = [ "-c" "${bb}/bin/cat ${builtins.storePath "ALICE"}/secret.txt > $out" ];
  };
}
`)
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "note.txt"), []byte("added-inside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer("DIR", dir, "ALICE", alice, "BB", bb).Replace(`
out=$(nix-build --no-out-link DIR/default.nix -A hello) || { echo BUILD-FAILED; exit 1; }
echo "OUT=$(cat $out)"
ls /nix/store | grep -q closet-nix-hello && echo OUT-VISIBLE
added=$(nix-store --add DIR/note.txt) && echo "ADDED=$(cat $added)"
nix-store -q --references ALICE 2>&1 | grep -q "is not valid" && echo OTHER-NOT-VALID
nix-store -q --hash ALICE >/dev/null 2>&1 || echo OTHER-HASH-REFUSED
nix-store -q --referrers BB | grep -v -e busybox -e nix-client -e closet-nix -e note.txt -e glibc > /tmp/others; test -s /tmp/others || echo REFERRERS-CUT
nix-build --no-out-link DIR/default.nix -A steal >/dev/null 2>&1 || echo STEAL-FAILED
nix-store --gc >/dev/null 2>&1 || echo GC-REFUSED
ls /nix/store | grep -e tenant- -e alice && echo SEES-TENANT
echo END
`)
	cmd := testutil.Command(t, dir, "run", "--nix", "--cwd", "ro", nix, bb, "--", "sh", "-c", script)
	d.Untrusted(cmd)
	r := testutil.Run(t, cmd)
	if r.Code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, want := range []string{"OUT=built-inside", "OUT-VISIBLE", "ADDED=added-inside", "OTHER-NOT-VALID", "OTHER-HASH-REFUSED", "REFERRERS-CUT", "STEAL-FAILED", "GC-REFUSED", "END"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("missing %s\nstdout:\n%s\nstderr:\n%s", want, r.Stdout, r.Stderr)
		}
	}
	if strings.Contains(r.Stdout, "SEES-TENANT") || strings.Contains(r.Stdout, "the tenant's secret") {
		t.Errorf("the job saw another tenant:\n%s", r.Stdout)
	}
}
