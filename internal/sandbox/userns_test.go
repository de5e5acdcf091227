package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckUserNamespacesNamesTheKnob(t *testing.T) {
	tests := []struct {
		file, value string
		euid        int
		want        string // "" = allowed
	}{
		{"kernel/unprivileged_userns_clone", "0\n", 1000, "kernel.unprivileged_userns_clone=1"},
		{"kernel/unprivileged_userns_clone", "1\n", 1000, ""},
		{"user/max_user_namespaces", "0\n", 1000, "user.max_user_namespaces"},
		{"user/max_user_namespaces", "100\n", 1000, ""},
		{"kernel/apparmor_restrict_unprivileged_userns", "1\n", 1000, "apparmor_restrict_unprivileged_userns=0"},
		{"kernel/apparmor_restrict_unprivileged_userns", "1\n", 0, ""},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, filepath.Dir(tt.file)), 0o755)
		os.WriteFile(filepath.Join(dir, tt.file), []byte(tt.value), 0o644)
		err := checkUserNamespaces(dir, tt.euid)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s=%q: %v, want allowed", tt.file, tt.value, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s=%q: %v, want an error naming %q", tt.file, tt.value, err, tt.want)
		}
	}
	if err := CheckUserNamespaces(); err != nil {
		t.Errorf("this host: %v (the sandbox tests need user namespaces)", err)
	}
}
