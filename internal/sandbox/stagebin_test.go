package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStageBinaryBeside(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "closet")
	os.WriteFile(exe, []byte("x"), 0o755)
	stage := filepath.Join(dir, StageBinaryName)
	if got := StageBinaryBeside(exe); got != "" {
		t.Errorf("without a stage binary: %q", got)
	}
	os.WriteFile(stage, []byte("x"), 0o755)
	if got := StageBinaryBeside(exe); got != stage {
		t.Errorf("beside closet: %q, want %q", got, stage)
	}
	os.Chmod(stage, 0o775)
	if got := StageBinaryBeside(exe); got != "" {
		t.Errorf("group-writable: %q, want none", got)
	}
	os.Remove(stage)
	os.Symlink("/bin/true", stage)
	if got := StageBinaryBeside(exe); got != "" {
		t.Errorf("a link: %q, want none", got)
	}
}
