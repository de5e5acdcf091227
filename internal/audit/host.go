package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Host is the machine under audit, seen from outside: a root directory that
// stands for "/", where its sysctls live, and the environment Nix would see.
// Tests build a fake tree in a temporary directory; LocalHost is the running
// system.
type Host struct {
	// Root is the directory that stands for "/". Absolute symlinks inside
	// it are resolved inside it, as in a chroot.
	Root string
	// ProcSys is the sysctl tree; empty means Root/proc/sys.
	ProcSys string
	// Env is the environment Nix would run with (NIX_CONF_DIR,
	// NIX_USER_CONF_FILES, XDG_CONFIG_HOME, HOME, NIX_CONFIG, ...).
	Env map[string]string
	// NixVersion runs `nix --version` and returns its output and the
	// command line used. Nil skips the version check (a fake root has no
	// Nix to run).
	NixVersion func(ctx context.Context) (out, cmd string, err error)

	users  map[int]user
	groups map[int]group
	loaded bool
}

type user struct {
	name, home, shell string
	uid, gid          int
}

type group struct {
	name    string
	gid     int
	members []string
}

// LocalHost is the running system: root "/", /proc/sys, this process's
// environment, and the nix on PATH.
func LocalHost() *Host {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return &Host{Root: "/", ProcSys: "/proc/sys", Env: env, NixVersion: runNixVersion}
}

func runNixVersion(ctx context.Context) (string, string, error) {
	bin, err := exec.LookPath("nix")
	if err != nil {
		return "", "nix --version", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	return strings.TrimSpace(string(out)), bin + " --version", err
}

func (h *Host) root() string {
	if h.Root == "" {
		return "/"
	}
	return h.Root
}

func (h *Host) getenv(k string) (string, bool) {
	v, ok := h.Env[k]
	return v, ok
}

// envNonEmpty is Nix's getEnvNonEmpty: an empty variable counts as unset.
func (h *Host) envNonEmpty(k, def string) string {
	if v, ok := h.Env[k]; ok && v != "" {
		return v
	}
	return def
}

// path maps an absolute path on the audited host to the path to open here.
// All symlinks are followed inside Root (followLast decides for the last
// component), so that an absolute link in a fake tree, or in a mounted
// system image, does not lead out into the auditing machine.
func (h *Host) path(p string, followLast bool) string {
	root := h.root()
	if root == "/" {
		return path.Clean("/" + p)
	}
	return filepath.Join(root, resolveIn(root, p, followLast))
}

// resolveIn resolves p as a process chrooted at root would, returning the
// resolved absolute path inside root. Components that do not exist are
// kept as they are; more than 40 links stop resolution, as ELOOP would.
func resolveIn(root, p string, followLast bool) string {
	rest := splitPath(p)
	done := "/"
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		if c == ".." {
			done = path.Dir(done)
			continue
		}
		next := path.Join(done, c)
		if len(rest) == 0 && !followLast {
			done = next
			break
		}
		onDisk := filepath.Join(root, next)
		fi, err := os.Lstat(onDisk)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			done = next
			continue
		}
		target, err := os.Readlink(onDisk)
		links++
		if err != nil || links > 40 {
			done = path.Join(append([]string{next}, rest...)...)
			break
		}
		if path.IsAbs(target) {
			done = "/"
		}
		rest = append(splitPath(target), rest...)
	}
	return done
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

// sysctl reads a kernel knob by its dotted name.
func (h *Host) sysctl(name string) (value, file string, err error) {
	dir := h.ProcSys
	if dir == "" {
		dir = filepath.Join(h.root(), "proc", "sys")
	}
	file = filepath.Join(dir, filepath.FromSlash(strings.ReplaceAll(name, ".", "/")))
	b, err := os.ReadFile(file)
	return strings.TrimSpace(string(b)), file, err
}

// statInfo is what the filesystem checks need of a file.
type statInfo struct {
	file  string // the path on disk, for evidence
	mode  fs.FileMode
	uid   int
	gid   int
	isDir bool
}

func (s statInfo) perm() uint32 { return uint32(s.mode.Perm()) }

func (s statInfo) otherWritable() bool { return s.mode.Perm()&0o002 != 0 }
func (s statInfo) groupWritable() bool { return s.mode.Perm()&0o020 != 0 }
func (s statInfo) otherReadable() bool { return s.mode.Perm()&0o004 != 0 }
func (s statInfo) otherExec() bool     { return s.mode.Perm()&0o001 != 0 }
func (s statInfo) sticky() bool        { return s.mode&fs.ModeSticky != 0 }

// stat stats a host path. follow decides whether a final symlink is
// followed.
func (h *Host) stat(p string, follow bool) (statInfo, error) {
	file := h.path(p, follow)
	var fi fs.FileInfo
	var err error
	if follow {
		fi, err = os.Stat(file)
	} else {
		fi, err = os.Lstat(file)
	}
	if err != nil {
		return statInfo{file: file}, err
	}
	return toStatInfo(file, fi), nil
}

func toStatInfo(file string, fi fs.FileInfo) statInfo {
	s := statInfo{file: file, mode: fi.Mode(), isDir: fi.IsDir(), uid: -1, gid: -1}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.uid, s.gid = int(st.Uid), int(st.Gid)
	}
	return s
}

// describe renders "drwxrwx--- root:nix-users (0770)".
func (h *Host) describe(s statInfo) string {
	return fmt.Sprintf("%s %s:%s (%s)", s.mode, h.userName(s.uid), h.groupName(s.gid), octalMode(s.mode))
}

func octalMode(m fs.FileMode) string {
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return fmt.Sprintf("%04o", v)
}

// loadAccounts reads Root/etc/passwd and Root/etc/group once. Missing files
// leave the maps empty: names then print as numbers.
func (h *Host) loadAccounts() {
	if h.loaded {
		return
	}
	h.loaded = true
	h.users = map[int]user{}
	h.groups = map[int]group{}
	if b, err := os.ReadFile(h.path("/etc/passwd", true)); err == nil {
		eachColonLine(b, 7, func(f []string) {
			uid, err1 := strconv.Atoi(f[2])
			gid, err2 := strconv.Atoi(f[3])
			if err1 == nil && err2 == nil {
				if _, dup := h.users[uid]; !dup {
					h.users[uid] = user{name: f[0], uid: uid, gid: gid, home: f[5], shell: f[6]}
				}
			}
		})
	}
	if b, err := os.ReadFile(h.path("/etc/group", true)); err == nil {
		eachColonLine(b, 4, func(f []string) {
			gid, err := strconv.Atoi(f[2])
			if err != nil {
				return
			}
			var members []string
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					members = append(members, m)
				}
			}
			if _, dup := h.groups[gid]; !dup {
				h.groups[gid] = group{name: f[0], gid: gid, members: members}
			}
		})
	}
}

func eachColonLine(b []byte, fields int, f func([]string)) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) < fields {
			continue
		}
		f(parts)
	}
}

func (h *Host) userName(uid int) string {
	h.loadAccounts()
	if u, ok := h.users[uid]; ok {
		return u.name
	}
	return strconv.Itoa(uid)
}

func (h *Host) groupName(gid int) string {
	h.loadAccounts()
	if g, ok := h.groups[gid]; ok {
		return g.name
	}
	return strconv.Itoa(gid)
}

func (h *Host) userByName(name string) (user, bool) {
	h.loadAccounts()
	for _, u := range h.users {
		if u.name == name {
			return u, true
		}
	}
	return user{}, false
}

func (h *Host) groupByName(name string) (group, bool) {
	h.loadAccounts()
	for _, g := range h.groups {
		if g.name == name {
			return g, true
		}
	}
	return group{}, false
}

// groupMembers lists a group's members: those named in /etc/group and those
// whose primary group it is, sorted, without duplicates.
func (h *Host) groupMembers(g group) []string {
	seen := map[string]bool{}
	var out []string
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, m := range g.members {
		add(m)
	}
	for _, u := range h.users {
		if u.gid == g.gid {
			add(u.name)
		}
	}
	slices.Sort(out)
	return out
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// writableByNonRoot says whether someone other than root can change the
// file: it is owned by a non-root uid, or it is group- or world-writable
// (group-writable counts unless the group is root's).
func (s statInfo) writableByNonRoot() bool {
	if s.uid != 0 {
		return true
	}
	if s.otherWritable() {
		return true
	}
	return s.groupWritable() && s.gid != 0
}

// readableByNonRoot says whether someone other than root can read the
// file: it is owned by a non-root uid, world-readable, or group-readable
// by a group other than root's.
func (s statInfo) readableByNonRoot() bool {
	return s.uid != 0 || s.otherReadable() || (s.perm()&0o040 != 0 && s.gid != 0)
}
