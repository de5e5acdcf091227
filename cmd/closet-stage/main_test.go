package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// deps lists the packages pkg links.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH:", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// closet-stage is the init alone: neither the view cache's holder nor
// what only the holder and the cache need is linked into every job's init.
// The control: the dispatcher closet and closet-serve use links them.
func TestStageBinaryIsTheInitAlone(t *testing.T) {
	holderOnly := []string{"github.com/closet-sandbox/closet/internal/viewcache", "net", "os/exec", "crypto/sha256"}
	stage := deps(t, ".")
	for _, p := range holderOnly {
		if slices.Contains(stage, p) {
			t.Errorf("closet-stage links %s", p)
		}
	}
	all := deps(t, "github.com/closet-sandbox/closet/internal/sandbox/stages")
	for _, p := range holderOnly {
		if !slices.Contains(all, p) {
			t.Errorf("control: package stages does not link %s", p)
		}
	}
}
