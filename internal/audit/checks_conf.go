package audit

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

// checker carries what the checks share: the host, its configuration, the
// facts gathered before (multi-user or not, user namespaces) and the
// findings so far.
type checker struct {
	h   *Host
	c   *Config
	out []Finding

	// multiUser is true when a daemon serves several users: the socket
	// directory exists or the store is root-owned. Daemon-only settings
	// (allowed-users, trusted-users, build-users-group) are judged only
	// then.
	multiUser bool
	// usernsOff says no process may create user namespaces
	// (user.max_user_namespaces = 0); usernsUnprivOff says unprivileged
	// processes may not.
	usernsOff, usernsUnprivOff bool
	usernsWhy                  string
}

func (k *checker) add(f Finding) { k.out = append(k.out, f) }

// checkConfIssues turns parse problems into findings.
func (k *checker) checkConfIssues() {
	mainFound := false
	for _, f := range k.c.Files {
		if f.Layer == "system" && f.Path == k.c.MainFile && f.Found {
			mainFound = true
		}
	}
	mainUnreadable := false
	for _, is := range k.c.Issues {
		if is.ID == "NIX007" && is.Pos.File == k.c.MainFile {
			mainUnreadable = true
		}
		k.add(newFinding(is.ID, Evidence{File: is.Pos.File, Line: is.Pos.Line}, is.Detail))
	}
	if !mainFound && !mainUnreadable {
		k.add(newFinding("NIX008", Evidence{File: k.c.MainFile, Value: "no such file"}, ""))
	}
}

// checkConfFiles flags system configuration files (and the directories
// holding them) that someone other than root can change.
func (k *checker) checkConfFiles() {
	for _, f := range k.c.Files {
		if f.Layer != "system" || !f.Found {
			continue
		}
		if bad, st := k.writableChain(f.Host); bad {
			k.add(newFinding("NIX009", Evidence{File: st.file, Value: k.h.describe(st)}, ""))
		}
	}
}

// writableChain reports the first of p (followed) and its parent
// directories that a non-root user can change. A sticky root-owned
// directory such as /tmp protects entries it does not own... but not the
// name of a missing one, so it still counts; /nix/store's group-writable
// sticky mode is how the store is meant to be and stops the walk.
func (k *checker) writableChain(p string) (bool, statInfo) {
	st, err := k.h.stat(p, true)
	if err != nil {
		return false, st
	}
	if st.writableByNonRoot() {
		return true, st
	}
	real := resolveIn(k.h.root(), p, true)
	storeDir := k.storeDir()
	if real == storeDir || strings.HasPrefix(real, storeDir+"/") {
		return false, st
	}
	for dir := path.Dir(real); ; dir = path.Dir(dir) {
		ds, err := k.h.stat(dir, true)
		if err == nil && ds.writableByNonRoot() && !(ds.sticky() && st.uid == 0 && ds.uid == 0) {
			return true, ds
		}
		if dir == "/" {
			return false, st
		}
	}
}

func (k *checker) storeDir() string {
	return path.Clean(k.h.envNonEmpty("NIX_STORE_DIR", k.h.envNonEmpty("NIX_STORE", "/nix/store")))
}

func (k *checker) stateDir() string {
	return path.Clean(k.h.envNonEmpty("NIX_STATE_DIR", "/nix/var/nix"))
}

func (k *checker) settingBool(name string) bool {
	v, _ := k.c.Get(name).Bool()
	return v
}

func (k *checker) itemEvidence(s Setting, it Item) Evidence {
	return Evidence{File: it.Pos.File, Line: it.Pos.Line, Value: fmt.Sprintf("%s = %s", s.Name, s.Value), Default: s.Default}
}

func (k *checker) checkSandbox() {
	s := k.c.Get("sandbox")
	switch s.Value {
	case "false":
		k.add(newFinding("NIX010", k.c.evidence("sandbox"), "builds see the host's files and network"))
	case "relaxed":
		k.add(newFinding("NIX010", k.c.evidence("sandbox"),
			"relaxed: derivations with __noChroot = true, and fixed-output ones, build outside the sandbox").at(Medium))
	}
	if s.Value == "false" || !k.settingBool("sandbox-fallback") {
		return
	}
	f := newFinding("NIX011", k.c.evidence("sandbox-fallback"), "")
	switch {
	case k.usernsOff:
		f = f.at(High)
		f.Detail = "and this kernel refuses user namespaces (" + k.usernsWhy + "), so builds run unsandboxed now"
	case k.usernsUnprivOff && !k.multiUser:
		f = f.at(High)
		f.Detail = "and this single-user install cannot create user namespaces (" + k.usernsWhy + "), so builds run unsandboxed now"
	}
	k.add(f)
}

func (k *checker) checkAllowedUsers() {
	if !k.multiUser {
		return
	}
	s := k.c.Get("allowed-users")
	for _, it := range s.Items {
		if it.Value == "*" {
			k.add(newFinding("NIX012", k.itemEvidence(s, it), ""))
			return
		}
	}
}

// adminGroups already grant root through sudo; a trusted-users entry for
// them removes the password, not a boundary.
var adminGroups = []string{"wheel", "sudo", "admin"}

func (k *checker) checkTrustedUsers() {
	if !k.multiUser {
		return
	}
	s := k.c.Get("trusted-users")
	sockGroup := k.socketGroup()
	for _, it := range s.Items {
		v := it.Value
		if v == "root" {
			continue
		}
		f := newFinding("NIX013", k.itemEvidence(s, it), "")
		switch {
		case v == "*":
			f = f.at(Critical)
			f.Detail = "`*`: every local user is effectively root"
		case strings.HasPrefix(v, "@"):
			name := v[1:]
			members := "no members found in /etc/group"
			if g, ok := k.h.groupByName(name); ok {
				if m := k.h.groupMembers(g); len(m) > 0 {
					members = "members: " + strings.Join(m, ", ")
				} else {
					members = "no members"
				}
			}
			f.Detail = fmt.Sprintf("group `%s` (%s) is effectively root", v, members)
			switch {
			case name == "users" || name == "nixbld" || (sockGroup != "" && name == sockGroup):
				f = f.at(Critical)
				f.Detail += "; it is a group of ordinary users"
			case slices.Contains(adminGroups, name):
				f = f.at(Medium)
				f.Detail += "; its members can already sudo, but now without a password and from any process they run"
			}
		default:
			f.Detail = fmt.Sprintf("user `%s` is effectively root", v)
		}
		k.add(f)
	}
}

func (k *checker) socketGroup() string {
	st, err := k.h.stat(path.Dir(k.socketPath()), true)
	if err != nil || st.gid <= 0 {
		return ""
	}
	return k.h.groupName(st.gid)
}

func (k *checker) socketPath() string {
	return path.Clean(k.h.envNonEmpty("NIX_DAEMON_SOCKET_PATH", path.Join(k.stateDir(), "daemon-socket", "socket")))
}

var loginShellOff = []string{"nologin", "false", "sync", "true"}

func (k *checker) checkBuildUsersGroup() {
	if !k.multiUser {
		return
	}
	s := k.c.Get("build-users-group")
	if s.Value == "" {
		if !k.settingBool("auto-allocate-uids") {
			k.add(newFinding("NIX014", k.c.evidence("build-users-group"), "build-users-group is empty"))
		}
		return
	}
	k.h.loadAccounts()
	if len(k.h.groups) == 0 {
		return // no /etc/group to judge by
	}
	g, ok := k.h.groupByName(s.Value)
	if !ok {
		if !k.settingBool("auto-allocate-uids") {
			k.add(newFinding("NIX015", k.c.evidence("build-users-group"), fmt.Sprintf("group `%s` is not in /etc/group", s.Value)))
		}
		return
	}
	for _, m := range k.h.groupMembers(g) {
		u, ok := k.h.userByName(m)
		if !ok {
			continue
		}
		if shell := path.Base(u.shell); u.shell != "" && !slices.Contains(loginShellOff, shell) {
			k.add(newFinding("NIX016", k.c.evidence("build-users-group"),
				fmt.Sprintf("`%s` (uid %d) is in `%s` and has the login shell %s", u.name, u.uid, g.name, u.shell)))
		}
	}
}

func (k *checker) checkSignatures() {
	requireSigs := k.settingBool("require-sigs")
	if !requireSigs {
		k.add(newFinding("NIX017", k.c.evidence("require-sigs"), ""))
	}
	for _, name := range []string{"substituters", "trusted-substituters"} {
		s := k.c.Get(name)
		for _, it := range s.Items {
			if f, ok := k.judgeSubstituter(s, it, requireSigs); ok {
				k.add(f)
			}
		}
	}
}

func (k *checker) judgeSubstituter(s Setting, it Item, requireSigs bool) (Finding, bool) {
	u := it.Value
	ev := k.itemEvidence(s, it)
	switch {
	case strings.HasPrefix(u, "http://"):
		f := newFinding("NIX018", ev, fmt.Sprintf("`%s` is plain HTTP: anyone on the network path can change or withhold what it serves", u))
		if requireSigs {
			f = f.at(Low)
			f.Detail += " (signatures are still checked)"
		} else {
			f = f.at(High)
			f.Detail += ", and require-sigs is off, so nothing checks it"
		}
		return f, true
	case strings.HasPrefix(u, "file://") || strings.HasPrefix(u, "/") || strings.HasPrefix(u, "local"):
		dir := localStoreDir(u)
		if dir == "" {
			return Finding{}, false
		}
		st, err := k.h.stat(dir, true)
		if err != nil || !st.writableByNonRoot() {
			return Finding{}, false
		}
		f := newFinding("NIX018", ev, fmt.Sprintf("local cache %s is writable by users (%s)", st.file, k.h.describe(st)))
		if !requireSigs {
			f = f.at(High)
			f.Detail += ", and require-sigs is off"
		}
		return f, true
	}
	return Finding{}, false
}

// localStoreDir extracts the directory of a file:// or local store URL.
func localStoreDir(u string) string {
	u, _, _ = strings.Cut(u, "?")
	switch {
	case strings.HasPrefix(u, "file://"):
		return strings.TrimPrefix(u, "file://")
	case strings.HasPrefix(u, "local://"):
		return strings.TrimPrefix(u, "local://")
	case strings.HasPrefix(u, "/"):
		return u
	}
	return ""
}

func (k *checker) checkSigningKeys() {
	s := k.c.Get("secret-key-files")
	if len(s.Items) == 0 {
		return
	}
	for _, it := range s.Items {
		st, err := k.h.stat(it.Value, true)
		if err != nil {
			continue
		}
		if st.readableByNonRoot() {
			k.add(newFinding("NIX019", Evidence{File: it.Pos.File, Line: it.Pos.Line, Value: fmt.Sprintf("%s: %s", st.file, k.h.describe(st))}, ""))
		}
	}
	if k.multiUser {
		first := s.Items[0]
		k.add(newFinding("NIX020", Evidence{File: first.Pos.File, Line: first.Pos.Line, Value: "secret-key-files is set"}, ""))
	}
}

// judgeSandboxSource rates a host path that sandbox-paths binds into every
// build; ok is false for paths that are safe to expose.
func judgeSandboxSource(src string) (sev Severity, why string, ok bool) {
	src = path.Clean(strings.TrimSuffix(src, "?"))
	under := func(dirs ...string) bool {
		for _, d := range dirs {
			if src == d || strings.HasPrefix(src, strings.TrimSuffix(d, "/")+"/") {
				return true
			}
		}
		return false
	}
	lower := strings.ToLower(src)
	switch {
	case under("/nix/store") && src != "/nix/store":
		return 0, "", false
	case src == "/bin/sh" || src == "/usr/bin/env" || under("/etc/ssl/certs", "/etc/pki/tls/certs") ||
		src == "/etc/resolv.conf" || src == "/etc/hosts" || src == "/etc/nsswitch.conf" || src == "/etc/protocols" || src == "/etc/services":
		return 0, "", false
	case src == "/" || src == "/nix" || src == "/nix/store" || under("/nix/var", "/run", "/var/run", "/etc/nix", "/root", "/etc/shadow", "/etc/ssh", "/etc/sudoers") ||
		strings.HasSuffix(src, ".sock") || strings.Contains(lower, "daemon-socket"):
		return Critical, "root-owned sockets, the Nix state or secrets", true
	case under("/home", "/etc", "/var", "/tmp", "/dev/shm", "/proc", "/sys", "/srv", "/mnt", "/media", "/opt", "/usr/local") ||
		strings.Contains(lower, ".ssh") || strings.Contains(lower, "secret") || strings.Contains(lower, "credential") ||
		strings.Contains(lower, "token") || strings.Contains(lower, "password") || strings.Contains(lower, "key"):
		return High, "host data other users' builds should not see", true
	case under("/dev"):
		return Low, "a device every build can use", true
	}
	return Medium, "a host path outside the store", true
}

func (k *checker) checkSandboxPaths() {
	s := k.c.Get("sandbox-paths")
	for _, it := range s.Items {
		inside, src, found := strings.Cut(it.Value, "=")
		if !found {
			src = inside
		}
		sev, why, bad := judgeSandboxSource(src)
		if !bad {
			continue
		}
		f := newFinding("NIX021", k.itemEvidence(s, it), fmt.Sprintf("`%s` exposes %s to every build", it.Value, why))
		if sev != High {
			f = f.at(sev)
		}
		k.add(f)
	}
}

// boolRules are the boolean settings whose unsafe value alone is a
// finding.
var boolRules = []struct {
	setting string
	unsafe  bool
	id      string
}{
	{"allow-import-from-derivation", true, "NIX022"},
	{"restrict-eval", false, "NIX024"},
	{"accept-flake-config", true, "NIX025"},
	{"filter-syscalls", false, "NIX026"},
	{"allow-new-privileges", true, "NIX027"},
	{"keep-failed", true, "NIX029"},
	{"allow-unsafe-native-code-during-evaluation", true, "NIX034"},
}

func (k *checker) checkBoolSettings() {
	for _, r := range boolRules {
		if k.settingBool(r.setting) == r.unsafe {
			k.add(newFinding(r.id, k.c.evidence(r.setting), ""))
		}
	}
}

func (k *checker) checkBuildSettings() {
	if k.multiUser {
		t, _ := k.c.Get("timeout").Int()
		m, _ := k.c.Get("max-silent-time").Int()
		if t == 0 && m == 0 {
			ev := k.c.evidence("timeout")
			ev.Value = "timeout = 0, max-silent-time = 0"
			k.add(newFinding("NIX030", ev, ""))
		}
	}
	if bd := k.c.Get("build-dir"); bd.Value != "" && !bd.Default {
		for _, dir := range []string{bd.Value, path.Dir(path.Clean(bd.Value))} {
			st, err := k.h.stat(dir, true)
			if err == nil && st.otherWritable() {
				k.add(newFinding("NIX028", k.c.evidence("build-dir"), fmt.Sprintf("%s is world-writable (%s)", st.file, k.h.describe(st))))
				break
			}
		}
	}
	if k.c.IsSet("pasta-path") && k.c.Get("pasta-path").Value == "" {
		k.add(newFinding("NIX033", k.c.evidence("pasta-path"), ""))
	}
}

// checkAutoAllocate compares the auto-allocated build id range with
// /etc/subuid, /etc/subgid and real accounts.
func (k *checker) checkAutoAllocate() {
	if !k.settingBool("auto-allocate-uids") {
		return
	}
	start, _ := k.c.Get("start-id").Int()
	count, _ := k.c.Get("id-count").Int()
	end := start + count
	for _, file := range []string{"/etc/subuid", "/etc/subgid"} {
		b, err := os.ReadFile(k.h.path(file, true))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		ln := 0
		for sc.Scan() {
			ln++
			f := strings.Split(strings.TrimSpace(sc.Text()), ":")
			if len(f) != 3 {
				continue
			}
			s, err1 := strconv.ParseInt(f[1], 10, 64)
			c, err2 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			if s < end && start < s+c {
				k.add(newFinding("NIX023", Evidence{File: k.h.path(file, true), Line: ln, Value: sc.Text()},
					fmt.Sprintf("%s's range %d-%d overlaps Nix's build ids %d-%d", f[0], s, s+c-1, start, end-1)))
			}
		}
	}
	k.h.loadAccounts()
	for _, u := range k.h.users {
		if int64(u.uid) >= start && int64(u.uid) < end {
			k.add(newFinding("NIX023", Evidence{File: k.h.path("/etc/passwd", true), Value: fmt.Sprintf("%s uid %d", u.name, u.uid)},
				fmt.Sprintf("account %s has uid %d, inside Nix's build ids %d-%d", u.name, u.uid, start, end-1)))
		}
	}
}

// checkHooks lists the programs the daemon runs as root and flags those
// someone else can change.
func (k *checker) checkHooks() {
	type prog struct {
		setting string
		it      Item
	}
	var progs []prog
	for _, name := range []string{"pre-build-hook", "post-build-hook", "diff-hook"} {
		s := k.c.Get(name)
		if s.Value == "" || s.Default {
			continue
		}
		if name == "diff-hook" && !k.settingBool("run-diff-hook") {
			continue
		}
		progs = append(progs, prog{name, Item{Value: strings.Fields(s.Value)[0], Pos: s.Pos}})
	}
	for _, name := range []string{"plugin-files", "build-hook"} {
		s := k.c.Get(name)
		if s.Default {
			continue
		}
		for i, it := range s.Items {
			if name == "build-hook" && i > 0 {
				break // the rest are its arguments
			}
			progs = append(progs, prog{name, it})
		}
	}
	for _, p := range progs {
		ev := Evidence{File: p.it.Pos.File, Line: p.it.Pos.Line, Value: fmt.Sprintf("%s = %s", p.setting, p.it.Value)}
		k.add(newFinding("NIX031", ev, fmt.Sprintf("%s runs %s", p.setting, p.it.Value)))
		if bad, st := k.writableChain(p.it.Value); bad {
			k.add(newFinding("NIX032", ev, fmt.Sprintf("%s can be changed by others: %s", st.file, k.h.describe(st))))
		}
	}
}

// checkCredentials flags access tokens and netrc files other users can
// read. It never prints the tokens.
func (k *checker) checkCredentials() {
	s := k.c.Get("access-tokens")
	seen := map[string]bool{}
	for _, it := range s.Items {
		if it.Pos.File == "" || it.Pos.File == "NIX_CONFIG" || seen[it.Pos.File] {
			continue
		}
		seen[it.Pos.File] = true
		fi, err := os.Stat(it.Pos.File)
		if err != nil {
			continue
		}
		st := toStatInfo(it.Pos.File, fi)
		if st.readableByNonRoot() {
			n := 0
			for _, x := range s.Items {
				if x.Pos.File == it.Pos.File {
					n++
				}
			}
			k.add(newFinding("NIX035", Evidence{File: it.Pos.File, Line: it.Pos.Line, Value: fmt.Sprintf("access-tokens = (%d hidden)", n)},
				fmt.Sprintf("%s holds access tokens and is readable by others (%s)", it.Pos.File, k.h.describe(st))))
		}
	}
	netrc := k.c.Get("netrc-file")
	if netrc.Value == "" {
		return
	}
	st, err := k.h.stat(netrc.Value, true)
	if err != nil || st.isDir {
		return
	}
	if st.readableByNonRoot() {
		ev := k.c.evidence("netrc-file")
		k.add(newFinding("NIX035", ev, fmt.Sprintf("netrc file %s is readable by others (%s)", st.file, k.h.describe(st))))
	}
}
