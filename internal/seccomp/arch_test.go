package seccomp

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestBuildsForArm64 cross-builds closet for arm64: everything amd64-only
// must be behind build tags, and the binary must compile (its filter is the
// aarch64 one, tested in the VM only; an architecture with no table refuses
// jobs unless --seccomp off, see Supported). A few seconds with a warm build
// cache.
func TestBuildsForArm64(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-build skipped in -short")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command("go", "build", "-o", filepath.Join(t.TempDir(), "closet-arm64"), "./cmd/closet")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOARCH=arm64", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOARCH=arm64 go build ./cmd/closet: %v\n%s", err, out)
	}
}

func TestSupported(t *testing.T) {
	err := Supported()
	if (archFor(runtime.GOARCH) != nil) != (err == nil) {
		t.Errorf("GOARCH %s: Supported() = %v", runtime.GOARCH, err)
	}
	if err != nil && (!strings.Contains(err.Error(), "--seccomp off") || strings.Contains(err.Error(), "\n")) {
		t.Errorf("the refusal must be one line saying what to do: %v", err)
	}
}
