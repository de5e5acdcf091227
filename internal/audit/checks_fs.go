package audit

import (
	"fmt"
	"path"
	"strings"
)

// detectMultiUser decides whether a daemon serves several users: its socket
// directory exists, or the store belongs to root.
func (k *checker) detectMultiUser() {
	if _, err := k.h.stat(path.Dir(k.socketPath()), true); err == nil {
		k.multiUser = true
		return
	}
	if st, err := k.h.stat(k.storeDir(), true); err == nil && st.uid == 0 {
		k.multiUser = true
	}
}

// checkDaemonSocket judges who can reach, and who can replace, the daemon
// socket. The directory is the control: the socket itself is recreated
// with mode 0666 on every daemon start.
func (k *checker) checkDaemonSocket() {
	sock := k.socketPath()
	dir := path.Dir(sock)
	ds, err := k.h.stat(dir, true)
	if err != nil {
		return // no daemon on this host
	}
	dirEv := Evidence{File: ds.file, Value: k.h.describe(ds)}
	switch {
	case ds.uid != 0 || ds.otherWritable():
		k.add(newFinding("NIX102", dirEv, "whoever owns or can write this directory can put their own socket in the daemon's place"))
	case ds.groupWritable() && ds.gid != 0:
		g := k.h.groupName(ds.gid)
		f := newFinding("NIX102", dirEv, fmt.Sprintf(
			"members of `%s` (%s) can delete the socket and put their own in its place; connecting needs only 0750", g, k.membersOf(ds.gid))).at(High)
		if k.groupHasMembers(ds.gid) == 0 {
			f = f.at(Low)
			f.Detail = fmt.Sprintf("members of `%s` could delete the socket and put their own in its place, but the group has no members today; connecting needs only 0750", g)
		}
		k.add(f)
	}
	ss, serr := k.h.stat(sock, false)
	sockOpen := true // a missing socket is recreated 0666 when the daemon starts
	if serr == nil {
		sockOpen = ss.otherWritable()
		if ss.uid != 0 {
			k.add(newFinding("NIX102", Evidence{File: ss.file, Value: k.h.describe(ss)}, "the socket is not root's: another process may be answering in the daemon's place"))
		}
	}
	if ds.otherExec() && sockOpen {
		f := newFinding("NIX100", dirEv, "")
		allowed := k.c.Get("allowed-users")
		if !hasItem(allowed, "*") {
			f = f.at(Low)
			f.Detail = fmt.Sprintf("the daemon still refuses users outside allowed-users (%s)", allowed.Value)
		}
		k.add(f)
		return
	}
	if ds.perm()&0o010 != 0 && ds.gid != 0 {
		g := k.h.groupName(ds.gid)
		k.add(newFinding("NIX101", dirEv, fmt.Sprintf("only group `%s` can connect (%s)", g, k.membersOf(ds.gid))))
	}
}

func (k *checker) membersOf(gid int) string {
	k.h.loadAccounts()
	g, ok := k.h.groups[gid]
	if !ok {
		return "members unknown: group not in /etc/group"
	}
	m := k.h.groupMembers(g)
	if len(m) == 0 {
		return "no members"
	}
	return "members: " + strings.Join(m, ", ")
}

// groupHasMembers counts a group's members; -1 when the group is unknown.
func (k *checker) groupHasMembers(gid int) int {
	k.h.loadAccounts()
	g, ok := k.h.groups[gid]
	if !ok {
		return -1
	}
	return len(k.h.groupMembers(g))
}

func hasItem(s Setting, v string) bool {
	for _, it := range s.Items {
		if it.Value == v {
			return true
		}
	}
	return false
}

// checkStore judges /nix/store's owner and mode.
func (k *checker) checkStore() {
	st, err := k.h.stat(k.storeDir(), true)
	if err != nil {
		return
	}
	ev := Evidence{File: st.file, Value: k.h.describe(st)}
	if st.otherWritable() {
		k.add(newFinding("NIX110", ev, ""))
	}
	if !k.multiUser || st.uid != 0 {
		if st.uid != 0 && !k.dirExists(path.Dir(k.socketPath())) {
			k.add(newFinding("NIX117", ev, fmt.Sprintf("the store belongs to `%s`", k.h.userName(st.uid))))
		} else if st.uid != 0 {
			k.add(newFinding("NIX111", ev, fmt.Sprintf("owned by `%s`, not root, although a daemon socket exists", k.h.userName(st.uid))))
		}
	} else {
		bug := k.c.Get("build-users-group").Value
		if st.groupWritable() && st.gid != 0 {
			g := k.h.groupName(st.gid)
			if bug != "" && g != bug && !k.settingBool("auto-allocate-uids") {
				k.add(newFinding("NIX111", ev, fmt.Sprintf("group-writable by `%s` (%s), which is not the build users group `%s`", g, k.membersOf(st.gid), bug)))
			}
			if !st.sticky() {
				k.add(newFinding("NIX111", ev, "group-writable without the sticky bit: build users can delete or replace each other's paths"))
			}
		}
	}
	if st.otherReadable() {
		k.add(newFinding("NIX112", ev, ""))
	}
}

func (k *checker) dirExists(p string) bool {
	st, err := k.h.stat(p, true)
	return err == nil && st.isDir
}

// checkStateDirs judges /nix, the state directory, the database, the
// per-user directories and the build logs.
func (k *checker) checkStateDirs() {
	if !k.multiUser {
		return
	}
	state := k.stateDir()
	for _, p := range []string{path.Dir(k.storeDir()), path.Dir(state), state, path.Join(state, "db"), path.Join(state, "db", "db.sqlite")} {
		st, err := k.h.stat(p, true)
		if err != nil {
			continue
		}
		if st.writableByNonRoot() {
			k.add(newFinding("NIX113", Evidence{File: st.file, Value: k.h.describe(st)}, ""))
		}
	}
	if st, err := k.h.stat(path.Join(state, "db", "db.sqlite"), true); err == nil && st.otherReadable() {
		if ds, err := k.h.stat(path.Join(state, "db"), true); err == nil && ds.otherExec() {
			k.add(newFinding("NIX114", Evidence{File: st.file, Value: k.h.describe(st)}, ""))
		}
	}
	for _, p := range []string{path.Join(state, "profiles", "per-user"), path.Join(state, "gcroots", "per-user")} {
		st, err := k.h.stat(p, true)
		if err != nil || !st.otherWritable() {
			continue
		}
		f := newFinding("NIX115", Evidence{File: st.file, Value: k.h.describe(st)}, "")
		if st.sticky() {
			f = f.at(Low)
			f.Detail = "sticky, so users cannot replace each other's directories, but anyone can take the name of a user who has none yet"
		}
		k.add(f)
	}
	logDir := path.Clean(k.h.envNonEmpty("NIX_LOG_DIR", "/nix/var/log/nix"))
	if st, err := k.h.stat(path.Join(logDir, "drvs"), true); err == nil && st.otherExec() {
		d := "any user can read a log whose derivation name is known"
		if st.otherReadable() {
			d = "any user can list and read every build log"
		}
		k.add(newFinding("NIX116", Evidence{File: st.file, Value: k.h.describe(st)}, d))
	}
}
