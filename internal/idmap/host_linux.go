package idmap

import (
	"os"
	"path/filepath"
	"strconv"
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
