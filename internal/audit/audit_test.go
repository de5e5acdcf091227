package audit

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestHardenedHostHasNothingAboveInfo(t *testing.T) {
	tr := newTree(t)
	rep := tr.audit()
	if n := rep.AtLeast(Low); n != 0 {
		t.Fatalf("%d findings above info on the hardened tree:%s", n, dump(rep))
	}
	for _, id := range []string{"NIX101", "NIX200"} {
		if len(find(rep, id)) != 1 {
			t.Errorf("want one %s on the hardened tree:%s", id, dump(rep))
		}
	}
}

// Each deliberately unsafe change must produce its finding, at its
// severity.
func TestUnsafeConfigurations(t *testing.T) {
	tests := []struct {
		name  string
		setup func(tr *tree)
		id    string
		sev   Severity
		// in, when set, must appear in the finding's detail or evidence.
		in string
	}{
		{"sandbox off", func(tr *tree) { tr.appendConf("sandbox = false") }, "NIX010", High, "sandbox = false"},
		{"sandbox relaxed", func(tr *tree) { tr.appendConf("sandbox = relaxed") }, "NIX010", Medium, "relaxed"},
		{"sandbox fallback", func(tr *tree) { tr.appendConf("sandbox-fallback = true") }, "NIX011", Medium, ""},
		{"sandbox fallback without user namespaces", func(tr *tree) {
			tr.appendConf("sandbox-fallback = true")
			tr.write("proc/sys/user/max_user_namespaces", 0o644, "0\n")
		}, "NIX011", High, "max_user_namespaces = 0"},
		{"sandbox fallback by default", func(tr *tree) {
			tr.write("etc/nix/nix.conf", 0o644, "allowed-users = @nix-users\n")
		}, "NIX011", Medium, "(not set: Nix's default)"},
		{"allowed-users everyone", func(tr *tree) { tr.appendConf("allowed-users = *") }, "NIX012", Medium, ""},
		{"trusted user", func(tr *tree) { tr.appendConf("extra-trusted-users = runner") }, "NIX013", High, "runner"},
		{"trusted wheel", func(tr *tree) { tr.appendConf("trusted-users = root @wheel") }, "NIX013", Medium, "members: alice"},
		{"trusted everyone", func(tr *tree) { tr.appendConf("trusted-users = *") }, "NIX013", Critical, ""},
		{"trusted socket group", func(tr *tree) { tr.appendConf("trusted-users = root @nix-users") }, "NIX013", Critical, "alice, runner"},
		{"builds as root", func(tr *tree) { tr.appendConf("build-users-group =") }, "NIX014", High, ""},
		{"build group missing", func(tr *tree) { tr.appendConf("build-users-group = builders") }, "NIX015", Low, "builders"},
		{"build user is a person", func(tr *tree) {
			tr.write("etc/group", 0o644, "root:x:0:\nnix-users:x:997:\nnixbld:x:30000:nixbld1,alice\n")
		}, "NIX016", Medium, "alice"},
		{"unsigned paths", func(tr *tree) { tr.appendConf("require-sigs = false") }, "NIX017", High, ""},
		{"http substituter", func(tr *tree) { tr.appendConf("extra-substituters = http://cache.lan") }, "NIX018", Low, "http://cache.lan"},
		{"http substituter without sigs", func(tr *tree) {
			tr.appendConf("extra-trusted-substituters = http://cache.lan", "require-sigs = false")
		}, "NIX018", High, ""},
		{"writable local cache", func(tr *tree) {
			tr.dir("srv/cache", 0o777, 0, 0)
			tr.appendConf("extra-substituters = file:///srv/cache?trusted=1")
		}, "NIX018", Medium, "writable"},
		{"signing key readable", func(tr *tree) {
			tr.write("etc/nix/signing.sec", 0o644, "k:x\n")
			tr.appendConf("secret-key-files = /etc/nix/signing.sec")
		}, "NIX019", Critical, "signing.sec"},
		{"signing all builds", func(tr *tree) {
			tr.write("etc/nix/signing.sec", 0o400, "k:x\n")
			tr.appendConf("secret-key-files = /etc/nix/signing.sec")
		}, "NIX020", Medium, ""},
		{"sandbox path home", func(tr *tree) { tr.appendConf("extra-sandbox-paths = /home") }, "NIX021", High, "/home"},
		{"sandbox path docker socket", func(tr *tree) {
			tr.appendConf("extra-sandbox-paths = /var/run/docker.sock=/run/docker.sock")
		}, "NIX021", Critical, "docker.sock"},
		{"sandbox path daemon socket", func(tr *tree) {
			tr.appendConf("sandbox-paths = /bin/sh /nix/var/nix/daemon-socket?")
		}, "NIX021", Critical, ""},
		{"sandbox path device", func(tr *tree) { tr.appendConf("extra-sandbox-paths = /dev/kvm") }, "NIX021", Low, ""},
		{"sandbox path other", func(tr *tree) { tr.appendConf("extra-sandbox-paths = /usr/share/fonts") }, "NIX021", Medium, ""},
		{"import from derivation", func(tr *tree) { tr.appendConf("allow-import-from-derivation = true") }, "NIX022", Low, ""},
		{"auto uids overlap subuid", func(tr *tree) {
			tr.appendConf("extra-experimental-features = auto-allocate-uids", "auto-allocate-uids = true")
			tr.write("etc/subuid", 0o644, "alice:100000:65536\nci:872415232:65536\n")
		}, "NIX023", High, "ci's range"},
		{"unrestricted eval", func(tr *tree) { tr.appendConf("restrict-eval = false") }, "NIX024", Info, ""},
		{"flake config", func(tr *tree) { tr.appendConf("accept-flake-config = true") }, "NIX025", High, ""},
		{"no syscall filter", func(tr *tree) { tr.appendConf("filter-syscalls = false") }, "NIX026", High, ""},
		{"new privileges", func(tr *tree) { tr.appendConf("allow-new-privileges = true") }, "NIX027", Medium, ""},
		{"build dir in tmp", func(tr *tree) {
			tr.dir("tmp", 0o1777, 0, 0)
			tr.appendConf("build-dir = /tmp/nix-builds")
		}, "NIX028", High, "world-writable"},
		{"keep failed", func(tr *tree) { tr.appendConf("keep-failed = true") }, "NIX029", Medium, ""},
		{"no time limits", func(tr *tree) { tr.appendConf("timeout = 0", "max-silent-time = 0") }, "NIX030", Low, ""},
		{"post-build hook", func(tr *tree) {
			tr.write("usr/local/bin/upload", 0o755, "#!/bin/sh\n")
			tr.appendConf("post-build-hook = /usr/local/bin/upload")
		}, "NIX031", Info, "/usr/local/bin/upload"},
		{"post-build hook writable", func(tr *tree) {
			tr.write("usr/local/bin/upload", 0o777, "#!/bin/sh\n")
			tr.appendConf("post-build-hook = /usr/local/bin/upload")
		}, "NIX032", Critical, "upload"},
		{"plugin in a user's directory", func(tr *tree) {
			tr.dir("home/alice", 0o755, uidAlice, uidAlice)
			tr.write("home/alice/plugin.so", 0o755, "")
			tr.appendConf("plugin-files = /home/alice/plugin.so")
		}, "NIX032", Critical, ""},
		{"pasta off", func(tr *tree) { tr.appendConf("pasta-path =") }, "NIX033", Medium, ""},
		{"native code", func(tr *tree) { tr.appendConf("allow-unsafe-native-code-during-evaluation = true") }, "NIX034", Medium, ""},
		{"tokens in readable nix.conf", func(tr *tree) {
			tr.appendConf("access-tokens = github.com=PLACEHOLDER gitlab.com=PAT:PLACEHOLDER")
		}, "NIX035", High, "(2 hidden)"},
		{"readable netrc", func(tr *tree) { tr.write("etc/nix/netrc", 0o644, "machine x login y password z\n") }, "NIX035", High, "netrc"},
		{"world-writable nix.conf", func(tr *tree) { tr.own("etc/nix/nix.conf", 0o666, 0, 0) }, "NIX009", Critical, ""},
		{"include owned by a user", func(tr *tree) {
			tr.write("etc/nix/local.conf", 0o644, "keep-going = true\n")
			tr.own("etc/nix/local.conf", 0o644, uidAlice, uidAlice)
			tr.appendConf("!include local.conf")
		}, "NIX009", Critical, "local.conf"},
		{"conf dir writable by a group", func(tr *tree) { tr.own("etc/nix", 0o775, 0, gidNixUsers) }, "NIX009", Critical, ""},
		{"syntax error", func(tr *tree) { tr.appendConf("sandbox=false") }, "NIX001", High, "spaces around ="},
		{"missing include", func(tr *tree) { tr.appendConf("include /etc/nix/missing.conf") }, "NIX002", High, "missing.conf"},
		{"include cycle", func(tr *tree) { tr.appendConf("include nix.conf") }, "NIX003", High, ""},
		{"bad value", func(tr *tree) { tr.appendConf("sandbox = yes") }, "NIX004", High, ""},
		{"unknown setting", func(tr *tree) { tr.appendConf("trusted-user = alice") }, "NIX005", Info, "trusted-users"},
		{"backslash", func(tr *tree) { tr.appendConf("extra-allowed-users = runner \\", "  alice") }, "NIX006", Low, ""},
		{"unreadable include", func(tr *tree) { tr.dir("etc/nix/d.conf", 0o755, 0, 0); tr.appendConf("include d.conf") }, "NIX007", Info, "directory"},
		{"no nix.conf", func(tr *tree) { tr.remove("etc/nix/nix.conf") }, "NIX008", Info, ""},
		{"socket open to all", func(tr *tree) {
			tr.own("nix/var/nix/daemon-socket", 0o755, 0, 0)
			tr.appendConf("allowed-users = *")
		}, "NIX100", Medium, ""},
		{"socket open but allowed-users narrow", func(tr *tree) { tr.own("nix/var/nix/daemon-socket", 0o755, 0, 0) }, "NIX100", Low, "allowed-users"},
		{"socket dir group-writable", func(tr *tree) { tr.own("nix/var/nix/daemon-socket", 0o770, 0, gidNixUsers) }, "NIX102", High, "alice, runner"},
		{"socket dir owned by a user", func(tr *tree) { tr.own("nix/var/nix/daemon-socket", 0o750, uidAlice, gidNixUsers) }, "NIX102", Critical, ""},
		{"store world-writable", func(tr *tree) { tr.own("nix/store", 0o1777, 0, gidNixbld) }, "NIX110", Critical, ""},
		{"store without sticky bit", func(tr *tree) { tr.own("nix/store", 0o775, 0, gidNixbld) }, "NIX111", High, "sticky"},
		{"store writable by users", func(tr *tree) { tr.own("nix/store", 0o1775, 0, 100) }, "NIX111", High, "users"},
		{"state dir writable", func(tr *tree) { tr.own("nix/var/nix", 0o777, 0, 0) }, "NIX113", Critical, ""},
		{"database writable by a user", func(tr *tree) { tr.own("nix/var/nix/db/db.sqlite", 0o644, uidAlice, 0) }, "NIX113", Critical, ""},
		{"database readable", func(tr *tree) { tr.own("nix/var/nix/db/db.sqlite", 0o644, 0, 0) }, "NIX114", Info, ""},
		{"per-user world-writable", func(tr *tree) { tr.own("nix/var/nix/profiles/per-user", 0o777, 0, 0) }, "NIX115", High, ""},
		{"per-user sticky", func(tr *tree) { tr.own("nix/var/nix/gcroots/per-user", 0o1777, 0, 0) }, "NIX115", Low, "sticky"},
		{"build logs", func(tr *tree) { tr.own("nix/var/log/nix/drvs", 0o755, 0, 0) }, "NIX116", Low, "list"},
		{"single-user store", func(tr *tree) {
			tr.remove("nix/var/nix/daemon-socket")
			tr.own("nix/store", 0o755, uidAlice, uidAlice)
		}, "NIX117", Info, "alice"},
		{"no yama", func(tr *tree) { tr.remove("proc/sys/kernel/yama") }, "NIX201", Medium, "Yama"},
		{"ptrace", func(tr *tree) { tr.write("proc/sys/kernel/yama/ptrace_scope", 0o644, "0\n") }, "NIX201", Medium, "= 0"},
		{"bpf", func(tr *tree) { tr.write("proc/sys/kernel/unprivileged_bpf_disabled", 0o644, "0\n") }, "NIX202", Medium, ""},
		{"kptr", func(tr *tree) { tr.write("proc/sys/kernel/kptr_restrict", 0o644, "0\n") }, "NIX203", Low, ""},
		{"dmesg", func(tr *tree) { tr.write("proc/sys/kernel/dmesg_restrict", 0o644, "0\n") }, "NIX204", Low, ""},
		{"perf", func(tr *tree) { tr.write("proc/sys/kernel/perf_event_paranoid", 0o644, "1\n") }, "NIX205", Medium, ""},
		{"io_uring", func(tr *tree) { tr.write("proc/sys/kernel/io_uring_disabled", 0o644, "0\n") }, "NIX206", Medium, ""},
		{"io_uring no switch", func(tr *tree) { tr.remove("proc/sys/kernel/io_uring_disabled") }, "NIX206", Medium, "6.6"},
		{"symlinks", func(tr *tree) { tr.write("proc/sys/fs/protected_symlinks", 0o644, "0\n") }, "NIX207", High, ""},
		{"hardlinks", func(tr *tree) { tr.write("proc/sys/fs/protected_hardlinks", 0o644, "0\n") }, "NIX208", High, ""},
		{"fifos", func(tr *tree) { tr.write("proc/sys/fs/protected_fifos", 0o644, "1\n") }, "NIX209", Low, ""},
		{"regular", func(tr *tree) { tr.write("proc/sys/fs/protected_regular", 0o644, "0\n") }, "NIX210", Low, ""},
		{"suid dumpable", func(tr *tree) { tr.write("proc/sys/fs/suid_dumpable", 0o644, "2\n") }, "NIX211", Medium, ""},
		{"userfaultfd", func(tr *tree) { tr.write("proc/sys/vm/unprivileged_userfaultfd", 0o644, "1\n") }, "NIX212", Low, ""},
		{"tiocsti", func(tr *tree) { tr.write("proc/sys/dev/tty/legacy_tiocsti", 0o644, "1\n") }, "NIX213", Medium, ""},
		{"ldisc", func(tr *tree) { tr.write("proc/sys/dev/tty/ldisc_autoload", 0o644, "1\n") }, "NIX214", Low, ""},
		{"shm", func(tr *tree) { tr.write("proc/sys/kernel/shm_rmid_forced", 0o644, "0\n") }, "NIX215", Low, ""},
		{"userns off", func(tr *tree) { tr.write("proc/sys/user/max_user_namespaces", 0o644, "0\n") }, "NIX200", Low, "closet cannot"},
		{"userns debian switch", func(tr *tree) { tr.write("proc/sys/kernel/unprivileged_userns_clone", 0o644, "0\n") }, "NIX200", Low, ""},
		{"userns apparmor", func(tr *tree) {
			tr.write("proc/sys/kernel/apparmor_restrict_unprivileged_userns", 0o644, "1\n")
		}, "NIX200", Low, "AppArmor"},
		{"old nix", func(tr *tree) { tr.nix = "nix (Nix) 2.18.1" }, "NIX040", High, "2.18.1"},
		{"old determinate nix", func(tr *tree) { tr.nix = "nix (Determinate Nix 3.6.0) 2.28.3" }, "NIX040", High, "2.28.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTree(t)
			tt.setup(tr)
			rep := tr.audit()
			fs := find(rep, tt.id)
			if len(fs) == 0 {
				t.Fatalf("no %s:%s", tt.id, dump(rep))
			}
			ok := false
			for _, f := range fs {
				text := f.Evidence.String() + " | " + f.Detail
				if f.Severity == tt.sev && strings.Contains(text, tt.in) {
					ok = true
				}
				if f.Why == "" || f.Fix == "" || (f.Evidence.File == "" && f.Evidence.Command == "") {
					t.Errorf("finding without why, fix or evidence: %+v", f)
				}
			}
			if !ok {
				t.Fatalf("no %s at %s containing %q:%s", tt.id, tt.sev, tt.in, dump(rep))
			}
		})
	}
}

func TestFixedNixVersionsPass(t *testing.T) {
	for _, v := range []string{"nix (Nix) 2.24.15", "nix (Nix) 2.26.4", "nix (Nix) 2.28.4", "nix (Nix) 2.29.1", "nix (Nix) 2.31.2", "nix (Lix, like Nix) 2.93.3"} {
		tr := newTree(t)
		tr.nix = v
		if fs := find(tr.audit(), "NIX040"); len(fs) != 0 {
			t.Errorf("%s: unexpected %+v", v, fs)
		}
	}
}

func TestNixVulnerable(t *testing.T) {
	for _, c := range []struct {
		v    [3]int
		want bool
	}{
		{[3]int{2, 8, 0}, true}, {[3]int{2, 24, 14}, true}, {[3]int{2, 24, 15}, false},
		{[3]int{2, 25, 9}, true}, {[3]int{2, 26, 3}, true}, {[3]int{2, 26, 4}, false},
		{[3]int{2, 27, 1}, true}, {[3]int{2, 28, 4}, false}, {[3]int{2, 29, 0}, true},
		{[3]int{2, 29, 1}, false}, {[3]int{2, 30, 0}, false}, {[3]int{1, 11, 16}, true},
	} {
		if got := nixVulnerable(c.v[0], c.v[1], c.v[2]); got != c.want {
			t.Errorf("nixVulnerable(%v) = %v", c.v, got)
		}
	}
}

// The configuration shapes people actually run, each with what it must
// and must not produce.
func TestRealConfigurationShapes(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(tr *tree)
		want    map[string]Severity
		notWant []string
	}{
		{
			name:    "NixOS multi-user",
			setup:   func(tr *tree) { tr.write("etc/nix/nix.conf", 0o644, tr.fixture("nixos-multiuser.conf")) },
			want:    map[string]Severity{"NIX012": Medium, "NIX013": Medium, "NIX022": Low, "NIX030": Low, "NIX024": Info},
			notWant: []string{"NIX001", "NIX005", "NIX010", "NIX011", "NIX014", "NIX017", "NIX018", "NIX021"},
		},
		{
			name:    "Debian nix-bin",
			setup:   func(tr *tree) { tr.write("etc/nix/nix.conf", 0o644, tr.fixture("debian-nix-bin.conf")) },
			want:    map[string]Severity{"NIX010": High, "NIX012": Medium},
			notWant: []string{"NIX001", "NIX005", "NIX011"},
		},
		{
			name:    "GitHub Actions runner",
			setup:   func(tr *tree) { tr.write("etc/nix/nix.conf", 0o644, tr.fixture("github-actions-runner.conf")) },
			want:    map[string]Severity{"NIX013": High, "NIX035": High, "NIX011": Medium, "NIX012": Medium},
			notWant: []string{"NIX001", "NIX005", "NIX010"},
		},
		{
			name: "Determinate installer with nix.custom.conf",
			setup: func(tr *tree) {
				tr.write("etc/nix/nix.conf", 0o644, tr.fixture("determinate.conf"))
				tr.write("etc/nix/nix.custom.conf", 0o644, tr.fixture("determinate.custom.conf"))
			},
			want:    map[string]Severity{"NIX013": High, "NIX018": Low, "NIX011": Medium},
			notWant: []string{"NIX001", "NIX002", "NIX005"},
		},
		{
			name:    "Determinate installer before nix.custom.conf exists",
			setup:   func(tr *tree) { tr.write("etc/nix/nix.conf", 0o644, tr.fixture("determinate.conf")) },
			want:    map[string]Severity{"NIX011": Medium},
			notWant: []string{"NIX002", "NIX013"},
		},
		{
			name:    "nixos/nix container image",
			setup:   func(tr *tree) { tr.write("etc/nix/nix.conf", 0o644, tr.fixture("docker-nixos-nix.conf")) },
			want:    map[string]Severity{"NIX010": High},
			notWant: []string{"NIX001", "NIX005"},
		},
		{
			name: "single-user install",
			setup: func(tr *tree) {
				tr.remove("etc/nix/nix.conf")
				tr.remove("nix/var/nix/daemon-socket")
				tr.own("nix/store", 0o755, uidAlice, uidAlice)
				tr.own("nix/var/nix", 0o755, uidAlice, uidAlice)
				tr.write("home/alice/.config/nix/nix.conf", 0o644, tr.fixture("single-user.conf"))
				tr.env["HOME"] = "/home/alice"
			},
			want:    map[string]Severity{"NIX117": Info, "NIX008": Info, "NIX011": Medium},
			notWant: []string{"NIX012", "NIX013", "NIX014", "NIX113", "NIX001"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTree(t)
			tt.setup(tr)
			rep := tr.audit()
			for id, sev := range tt.want {
				fs := find(rep, id)
				if !slices.ContainsFunc(fs, func(f Finding) bool { return f.Severity == sev }) {
					t.Errorf("want %s at %s:%s", id, sev, dump(rep))
				}
			}
			for _, id := range tt.notWant {
				if fs := find(rep, id); len(fs) > 0 {
					t.Errorf("unexpected %s: %+v", id, fs)
				}
			}
		})
	}
}

func TestFindingPointsAtTheLineThatAddedIt(t *testing.T) {
	tr := newTree(t)
	tr.write("etc/nix/nix.conf", 0o644, tr.fixture("determinate.conf"))
	tr.write("etc/nix/nix.custom.conf", 0o644, tr.fixture("determinate.custom.conf"))
	rep := tr.audit()
	fs := find(rep, "NIX013")
	if len(fs) != 1 {
		t.Fatalf("NIX013: %+v", fs)
	}
	want := tr.abs("etc/nix/nix.custom.conf")
	if fs[0].Evidence.File != want || fs[0].Evidence.Line != 3 || !strings.Contains(fs[0].Detail, "alice") {
		t.Errorf("evidence %+v detail %q, want %s:3 about alice", fs[0].Evidence, fs[0].Detail, want)
	}
}

func TestAbsoluteSymlinksResolveInsideRoot(t *testing.T) {
	// NixOS: /etc/nix/nix.conf -> /etc/static/nix/nix.conf; the link must
	// resolve inside the audited root, not on the auditing machine.
	tr := newTree(t)
	tr.remove("etc/nix/nix.conf")
	tr.write("etc/static/nix/nix.conf", 0o644, "sandbox = false\n")
	if err := symlink("/etc/static/nix/nix.conf", tr.abs("etc/nix/nix.conf")); err != nil {
		t.Fatal(err)
	}
	rep := tr.audit()
	fs := find(rep, "NIX010")
	if len(fs) != 1 || fs[0].Evidence.Line != 1 {
		t.Fatalf("NIX010 through an absolute symlink: %+v", fs)
	}
}

func TestOutputsAreValid(t *testing.T) {
	tr := newTree(t)
	tr.appendConf("sandbox = false", "trusted-users = root alice", "keep-failed = true")
	rep := tr.audit()

	var js bytes.Buffer
	if err := WriteJSON(&js, rep); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Version  int       `json:"version"`
		Findings []Finding `json:"findings"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not parse: %v", err)
	}
	if back.Version != 1 || len(back.Findings) != len(rep.Findings) || back.Findings[0].Severity != rep.Findings[0].Severity {
		t.Errorf("JSON round trip lost findings")
	}

	var sb bytes.Buffer
	if err := WriteSARIF(&sb, rep, "test"); err != nil {
		t.Fatal(err)
	}
	var sarif map[string]any
	if err := json.Unmarshal(sb.Bytes(), &sarif); err != nil {
		t.Fatalf("SARIF does not parse: %v", err)
	}
	if sarif["version"] != "2.1.0" {
		t.Errorf("SARIF version %v", sarif["version"])
	}
	run := sarif["runs"].([]any)[0].(map[string]any)
	rules := run["tool"].(map[string]any)["driver"].(map[string]any)["rules"].([]any)
	results := run["results"].([]any)
	if len(results) != len(rep.Findings) {
		t.Fatalf("%d SARIF results for %d findings", len(results), len(rep.Findings))
	}
	levels := map[string]bool{"error": true, "warning": true, "note": true}
	sawLine := false
	for _, r := range results {
		res := r.(map[string]any)
		idx := int(res["ruleIndex"].(float64))
		if rules[idx].(map[string]any)["id"] != res["ruleId"] {
			t.Errorf("ruleIndex %d does not point at %v", idx, res["ruleId"])
		}
		if !levels[res["level"].(string)] {
			t.Errorf("bad level %v", res["level"])
		}
		if res["message"].(map[string]any)["text"].(string) == "" {
			t.Errorf("empty message")
		}
		if locs, ok := res["locations"].([]any); ok {
			pl := locs[0].(map[string]any)["physicalLocation"].(map[string]any)
			uri := pl["artifactLocation"].(map[string]any)["uri"].(string)
			if !strings.HasPrefix(uri, "file:///") {
				t.Errorf("uri %q", uri)
			}
			if reg, ok := pl["region"].(map[string]any); ok && reg["startLine"].(float64) > 0 {
				sawLine = true
			}
		}
	}
	if !sawLine {
		t.Errorf("no SARIF result carries a startLine")
	}

	var tb bytes.Buffer
	if err := WriteTable(&tb, rep, TableOptions{Width: 100}); err != nil {
		t.Fatal(err)
	}
	out := tb.String()
	for _, want := range []string{"SEVERITY", "NIX010", "builds run without the sandbox", "why", "fix", "nix.conf:"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("colour without Color")
	}
	tb.Reset()
	_ = WriteTable(&tb, rep, TableOptions{Color: true, Min: High})
	if !strings.Contains(tb.String(), "\x1b[1;31m") || strings.Contains(tb.String(), "NIX029") {
		t.Errorf("colour or --min-severity not applied:\n%s", tb.String())
	}
}

func TestRunRejectsARootThatIsNotADirectory(t *testing.T) {
	_, err := Run(t.Context(), &Host{Root: "/nonexistent/closet-audit-root"}, Options{})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/closet-audit-root") {
		t.Fatalf("err = %v", err)
	}
}

func TestRulesAreComplete(t *testing.T) {
	names := map[string]bool{}
	for _, r := range Rules {
		if r.ID == "" || r.Name == "" || r.Title == "" || r.Why == "" || r.Fix == "" {
			t.Errorf("incomplete rule %+v", r)
		}
		if names[r.Name] {
			t.Errorf("duplicate rule name %s", r.Name)
		}
		names[r.Name] = true
		if !strings.HasSuffix(r.Why, ".") || strings.Contains(strings.TrimSuffix(r.Why, "."), ". ") {
			t.Errorf("%s: why is not one sentence: %q", r.ID, r.Why)
		}
	}
}
