package audit

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestThisMachine audits the machine the tests run on. Its expectations
// are read from the machine itself, with code independent of the parser,
// so that the test means something here and holds anywhere.
func TestThisMachine(t *testing.T) {
	h := LocalHost()
	h.Env = map[string]string{} // the system configuration only, as the daemon reads it
	rep, err := Run(context.Background(), h, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("this machine:%s", dump(rep))

	t.Run("sandbox setting", func(t *testing.T) {
		b, err := os.ReadFile("/etc/nix/nix.conf")
		if err != nil {
			t.Skipf("no readable /etc/nix/nix.conf here: %v", err)
		}
		value, line := "true", 0 // Nix's default on Linux
		for i, l := range strings.Split(string(b), "\n") {
			l, _, _ = strings.Cut(l, "#")
			f := strings.Fields(l)
			if len(f) > 0 && (f[0] == "include" || f[0] == "!include") || len(f) == 1 {
				t.Skip("nix.conf has includes or continuation lines; the simple reading here would not be exact")
			}
			if len(f) == 3 && f[1] == "=" && (f[0] == "sandbox" || f[0] == "build-use-sandbox" || f[0] == "build-use-chroot") {
				value, line = f[2], i+1
			}
		}
		fs := find(rep, "NIX010")
		switch value {
		case "false", "relaxed":
			if len(fs) != 1 || fs[0].Evidence.File != "/etc/nix/nix.conf" || fs[0].Evidence.Line != line {
				t.Fatalf("/etc/nix/nix.conf:%d sets sandbox = %s, but NIX010 is %+v", line, value, fs)
			}
			if value == "false" && fs[0].Severity != High {
				t.Errorf("sandbox = false reported at %s", fs[0].Severity)
			}
		default:
			if len(fs) != 0 {
				t.Fatalf("sandbox = %s, yet %+v", value, fs)
			}
		}
	})

	t.Run("daemon socket directory", func(t *testing.T) {
		st, err := h.stat("/nix/var/nix/daemon-socket", true)
		if err != nil {
			t.Skip("no daemon socket directory here")
		}
		m := st.perm()
		sock, serr := h.stat("/nix/var/nix/daemon-socket/socket", false)
		open := m&0o001 != 0 && (serr != nil || sock.otherWritable())
		if got := len(find(rep, "NIX100")) > 0; got != open {
			t.Errorf("mode %04o: NIX100 present = %v, want %v", m, got, open)
		}
		groupOnly := !open && m&0o010 != 0 && st.gid != 0
		if got := len(find(rep, "NIX101")) > 0; got != groupOnly {
			t.Errorf("mode %04o gid %d: NIX101 present = %v, want %v", m, st.gid, got, groupOnly)
		}
		replaceable := st.uid != 0 || m&0o002 != 0 || (m&0o020 != 0 && st.gid != 0)
		if got := len(find(rep, "NIX102")) > 0; got != replaceable {
			t.Errorf("mode %04o uid %d: NIX102 present = %v, want %v", m, st.uid, got, replaceable)
		}
	})

	t.Run("store listing", func(t *testing.T) {
		st, err := h.stat("/nix/store", true)
		if err != nil {
			t.Skip("no /nix/store here")
		}
		if got, want := len(find(rep, "NIX112")) > 0, st.perm()&0o004 != 0; got != want {
			t.Errorf("store mode %04o: NIX112 present = %v, want %v", st.perm(), got, want)
		}
	})

	t.Run("kernel knobs", func(t *testing.T) {
		for _, kn := range knobs {
			b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(kn.name, ".", "/"))
			if err != nil {
				continue
			}
			var v int64
			f := strings.Fields(string(b))
			if len(f) == 0 {
				continue
			}
			if _, err := fmt.Sscan(f[0], &v); err != nil {
				continue
			}
			if got, want := len(find(rep, kn.id)) > 0, kn.bad(v); got != want {
				t.Errorf("%s = %d: %s present = %v, want %v", kn.name, v, kn.id, got, want)
			}
		}
	})
}
