package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree is a fake host root: a hardened multi-user Nix install that the
// tests then break one thing at a time.
type tree struct {
	t    *testing.T
	root string
	env  map[string]string
	nix  string // what NixVersion answers; "" skips the check
}

// Groups and users of the fake host.
const (
	gidNixbld   = 30000
	gidNixUsers = 997
	uidAlice    = 1000
)

var safeSysctls = map[string]string{
	"kernel/yama/ptrace_scope":         "1",
	"kernel/unprivileged_bpf_disabled": "2",
	"kernel/kptr_restrict":             "1",
	"kernel/dmesg_restrict":            "1",
	"kernel/perf_event_paranoid":       "2",
	"kernel/io_uring_disabled":         "2",
	"kernel/shm_rmid_forced":           "1",
	"fs/protected_symlinks":            "1",
	"fs/protected_hardlinks":           "1",
	"fs/protected_fifos":               "2",
	"fs/protected_regular":             "2",
	"fs/suid_dumpable":                 "0",
	"vm/unprivileged_userfaultfd":      "0",
	"dev/tty/legacy_tiocsti":           "0",
	"dev/tty/ldisc_autoload":           "0",
	"user/max_user_namespaces":         "63000",
}

// needRoot skips tests that must create files owned by other users or
// groups (chown). CI runs as root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown files in the fake host tree; CI runs as root")
	}
}

func newTree(t *testing.T) *tree {
	t.Helper()
	needRoot(t)
	tr := &tree{t: t, root: t.TempDir(), env: map[string]string{}}
	tr.write("etc/passwd", 0o644, strings.Join([]string{
		"root:x:0:0:root:/root:/bin/bash",
		"nixbld1:x:30001:30000:Nix build user 1:/var/empty:/usr/sbin/nologin",
		"nixbld2:x:30002:30000:Nix build user 2:/var/empty:/run/current-system/sw/bin/nologin",
		"alice:x:1000:1000:Alice:/home/alice:/bin/bash",
		"runner:x:1001:1001::/home/runner:/bin/bash",
	}, "\n")+"\n")
	tr.write("etc/group", 0o644, strings.Join([]string{
		"root:x:0:",
		"wheel:x:10:alice",
		"users:x:100:",
		"nix-users:x:997:alice,runner",
		"nixbld:x:30000:nixbld1,nixbld2",
		"alice:x:1000:",
	}, "\n")+"\n")
	tr.dir("nix", 0o755, 0, 0)
	tr.dir("nix/store", 0o1775, 0, gidNixbld)
	tr.dir("nix/var", 0o755, 0, 0)
	tr.dir("nix/var/nix", 0o755, 0, 0)
	tr.dir("nix/var/nix/daemon-socket", 0o750, 0, gidNixUsers)
	tr.dir("nix/var/nix/db", 0o755, 0, 0)
	tr.write("nix/var/nix/db/db.sqlite", 0o600, "")
	tr.dir("nix/var/nix/profiles/per-user", 0o755, 0, 0)
	tr.dir("nix/var/nix/gcroots/per-user", 0o755, 0, 0)
	tr.dir("nix/var/log/nix/drvs", 0o750, 0, 0)
	for k, v := range safeSysctls {
		tr.write("proc/sys/"+k, 0o644, v+"\n")
	}
	tr.write("etc/nix/nix.conf", 0o644, tr.fixture("hardened-ci-builder.conf"))
	return tr
}

func (tr *tree) fixture(name string) string {
	tr.t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "audit", "conf", name))
	if err != nil {
		tr.t.Fatal(err)
	}
	return string(b)
}

func (tr *tree) abs(p string) string { return filepath.Join(tr.root, p) }

func (tr *tree) dir(p string, mode os.FileMode, uid, gid int) {
	tr.t.Helper()
	d := tr.abs(p)
	if err := os.MkdirAll(d, 0o755); err != nil {
		tr.t.Fatal(err)
	}
	tr.own(p, mode, uid, gid)
}

func (tr *tree) own(p string, mode os.FileMode, uid, gid int) {
	tr.t.Helper()
	if err := os.Chown(tr.abs(p), uid, gid); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Chmod(tr.abs(p), goMode(mode)); err != nil {
		tr.t.Fatal(err)
	}
}

// goMode turns octal 0o4000/0o2000/0o1000 into Go's setuid, setgid and
// sticky bits, which os.Chmod expects.
func goMode(m os.FileMode) os.FileMode {
	out := m & 0o777
	if m&0o4000 != 0 {
		out |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}

func (tr *tree) write(p string, mode os.FileMode, content string) {
	tr.t.Helper()
	f := tr.abs(p)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte(content), mode); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Chmod(f, goMode(mode)); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) appendConf(lines ...string) {
	tr.t.Helper()
	f, err := os.OpenFile(tr.abs("etc/nix/nix.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		tr.t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		fmt.Fprintln(f, l)
	}
}

func (tr *tree) remove(p string) {
	tr.t.Helper()
	if err := os.RemoveAll(tr.abs(p)); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) host() *Host {
	h := &Host{Root: tr.root, Env: tr.env}
	if tr.nix != "" {
		out := tr.nix
		h.NixVersion = func(context.Context) (string, string, error) { return out, "nix --version", nil }
	}
	return h
}

func (tr *tree) audit() *Report {
	tr.t.Helper()
	rep, err := Run(context.Background(), tr.host(), Options{})
	if err != nil {
		tr.t.Fatal(err)
	}
	return rep
}

// find returns the findings with this id.
func find(rep *Report, id string) []Finding {
	var out []Finding
	for _, f := range rep.Findings {
		if f.ID == id {
			out = append(out, f)
		}
	}
	return out
}

func dump(rep *Report) string {
	var b strings.Builder
	for _, f := range rep.Findings {
		fmt.Fprintf(&b, "\n  %s %s %s | %s | %s", f.Severity, f.ID, f.Title, f.Evidence, f.Detail)
	}
	return b.String()
}

func symlink(target, link string) error { return os.Symlink(target, link) }
