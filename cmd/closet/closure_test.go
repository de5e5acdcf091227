package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/testutil"
)

func TestClosureCLI(t *testing.T) {
	app := fixture.Path(t, "app")
	dir := testutil.TempDir(t)
	os.Symlink(app, filepath.Join(dir, "result"))
	os.Symlink(filepath.Join(dir, "result"), filepath.Join(dir, "chain"))
	os.Symlink("/nix/store/00000000000000000000000000000000-gone", filepath.Join(dir, "dangling"))
	os.WriteFile(filepath.Join(dir, "plain"), []byte("x"), 0o644)

	plain := testutil.Closet(t, dir, "closure", app)
	if plain.Code != 0 || !strings.Contains(plain.Stdout, app+"\n") {
		t.Fatalf("closure %s: exit %d\n%s%s", app, plain.Code, plain.Stdout, plain.Stderr)
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string // exact, when set
		inStderr string
	}{
		{"result link", []string{"closure", "result"}, 0, plain.Stdout, ""},
		{"link chain", []string{"closure", "./chain"}, 0, plain.Stdout, ""},
		{"path inside", []string{"closure", app + "/bin/app"}, 0, plain.Stdout, ""},
		{"outside the store", []string{"closure", "plain"}, 1, "", "not in the Nix store"},
		{"dangling link", []string{"closure", "dangling"}, 1, "", "does not exist"},
		{"invalid name", []string{"closure", "/nix/store/00000000000000000000000000000000-.bad"}, 1, "", "invalid store path"},
		{"not registered", []string{"closure", "/nix/store/00000000000000000000000000000000-gone"}, 1, "", "gone"},
		{"unknown command", []string{"closure", "no-such-command-xyz"}, 1, "", "command not found on PATH"},
		{"command outside store", []string{"closure", "ls"}, 1, "", "not in the Nix store"},
		{"no roots", []string{"closure"}, 1, "", "at least one ROOT"},
		{"partial failure prints nothing", []string{"closure", app, "plain"}, 1, "", "plain"},
		{"bad store root", []string{"closure", "--store", dir, app}, 1, "", "no /nix/store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testutil.Closet(t, dir, tt.args...)
			if r.Code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", r.Code, tt.code, r.Stderr)
			}
			if tt.code != 0 && r.Stdout != "" {
				t.Errorf("failure printed to stdout: %q", r.Stdout)
			}
			if tt.stdout != "" && r.Stdout != tt.stdout {
				t.Errorf("stdout %q, want %q", r.Stdout, tt.stdout)
			}
			if !strings.Contains(r.Stderr, tt.inStderr) {
				t.Errorf("stderr %q does not mention %q", r.Stderr, tt.inStderr)
			}
			if tt.code != 0 && strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
				t.Errorf("error is more than one line: %q", r.Stderr)
			}
		})
	}

	r := testutil.Closet(t, dir, "closure", "--json", app)
	var doc struct {
		Paths []struct {
			Path       string   `json:"path"`
			NarSize    uint64   `json:"narSize"`
			References []string `json:"references"`
		} `json:"paths"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil || len(doc.Paths) != strings.Count(plain.Stdout, "\n") {
		t.Fatalf("--json: %v, %d paths: %s", err, len(doc.Paths), r.Stdout)
	}
	r = testutil.Closet(t, dir, "closure", "--size", app)
	if r.Code != 0 || !strings.Contains(r.Stdout, "paths, ") || !strings.Contains(r.Stdout, "bytes") {
		t.Errorf("--size: %q", r.Stdout)
	}
}

// A store that cannot be read at all exits 2.
func TestClosureUnreadableStore(t *testing.T) {
	root := testutil.TempDir(t)
	os.MkdirAll(filepath.Join(root, "nix/store"), 0o755)
	os.MkdirAll(filepath.Join(root, "nix/var/nix/db"), 0o755)
	os.WriteFile(filepath.Join(root, "nix/var/nix/db/db.sqlite"), []byte("not a database"), 0o644)
	r := testutil.Closet(t, "", "closure", "--store", root, "/nix/store/00000000000000000000000000000000-x")
	if r.Code != 2 || !strings.Contains(r.Stderr, "db.sqlite") {
		t.Fatalf("exit %d, stderr %q; want 2 naming the database", r.Code, r.Stderr)
	}
}
