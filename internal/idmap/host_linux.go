package idmap

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// helperDirs are where newuidmap and newgidmap are looked for, in order;
// PATH is not consulted (internal/ never reads the environment, and a
// setuid helper is found where the system installs it): NixOS's setuid
// wrappers first, then the usual system directories.
var helperDirs = []string{"/run/wrappers/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"}

// ProbeHost reads what Decide needs for the caller (uid, gid, user name):
// /etc/subuid, /etc/subgid, and where the helpers are. stateDir is the
// caller's directory for slot locks (the CLI picks it: e.g.
// $XDG_RUNTIME_DIR/closet/slots, else /tmp/closet-UID/slots).
func ProbeHost(uid, gid int, name, stateDir string) Host {
	h := Host{UID: uid, GID: gid, Name: name, StateDir: stateDir}
	h.SubUID, _ = os.ReadFile("/etc/subuid")
	h.SubGID, _ = os.ReadFile("/etc/subgid")
	h.NewUIDMap = findHelper("newuidmap")
	h.NewGIDMap = findHelper("newgidmap")
	return h
}

func findHelper(name string) string {
	for _, d := range helperDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// DefaultStateDir is the slot directory for a caller whose
// $XDG_RUNTIME_DIR is runtimeDir ("" when unset) and whose uid is uid.
func DefaultStateDir(runtimeDir string, uid int) string {
	if runtimeDir != "" && filepath.IsAbs(runtimeDir) {
		return filepath.Join(runtimeDir, "closet", "slots")
	}
	return filepath.Join("/tmp", "closet-"+strconv.Itoa(uid), "slots")
}

// OthersCanRead says whether a job with a host uid of its own (not the
// caller's, none of the caller's groups) could use path as a read-only
// bind: every directory on the way searchable by others, and path itself
// readable by others (and searchable, for a directory). When it is not,
// the reason names the first path that stops it. Auto picks an identity
// of the job's own only where every bind passes (a job of another uid
// could not read the caller's private directory it was given).
func OthersCanRead(path string) (bool, string) { return othersCan(path, true) }

// OthersCanSearch says whether a process of another uid can reach path by
// name: every directory on the way, path included, searchable by others.
// The sandbox's mount point must be, for a job with a uid of its own: its
// init builds the root by path once it has taken the job's uid.
func OthersCanSearch(path string) (bool, string) { return othersCan(path, false) }

func othersCan(path string, read bool) (bool, string) {
	if !filepath.IsAbs(path) {
		return false, path + " is not absolute"
	}
	clean := filepath.Clean(path)
	for p := "/"; ; {
		fi, err := os.Stat(p)
		if err != nil {
			return false, err.Error()
		}
		m := fi.Mode().Perm()
		last := p == clean
		switch {
		case fi.IsDir() && m&0o001 == 0:
			return false, p + " is not searchable by other users"
		case read && last && m&0o004 == 0:
			return false, p + " is not readable by other users"
		}
		if last {
			return true, ""
		}
		rest := strings.TrimPrefix(clean, p)
		rest = strings.TrimPrefix(rest, "/")
		next, _, _ := strings.Cut(rest, "/")
		p = filepath.Join(p, next)
	}
}

// FirstUnreadable is the reason the first of the read-only bind sources
// other users cannot read (see OthersCanRead), or "" when they all can.
func FirstUnreadable(sources []string) string {
	for _, p := range sources {
		if ok, why := OthersCanRead(p); !ok {
			return why
		}
	}
	return ""
}
