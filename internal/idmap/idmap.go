// Package idmap decides which host uid and gid a job runs as, and hands out
// per-job identities from a range of subordinate ids: one slot per running
// job, held by a lock file like isolate's boxes.
//
// A job normally runs as the caller's host uid (mapped to the sandbox's
// uid), sharing it with every other job of the caller and with the
// caller's own processes. Where the caller owns subordinate ids
// (/etc/subuid and /etc/subgid) and the setuid helpers newuidmap and
// newgidmap exist, or the caller is root, a job can instead run as a host
// uid and gid of its own: it then cannot signal, ptrace or share a quota
// with any other job, holds none of the caller's supplementary groups,
// and RLIMIT_NPROC counts its processes alone.
//
// This package is pure decision and bookkeeping: it reads the files it is
// given and takes locks in the directory it is given; it never reads the
// environment. internal/sandbox applies the mapping.
package idmap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Modes of --host-uid.
const (
	// Auto runs a job whose host binds are all read-only as a subordinate
	// identity where the host allows it, else as the caller.
	Auto = "auto"
	// Caller maps the job's uid to the caller's own (the classic rootless
	// sandbox). Never chosen for root: a job must not be host uid 0.
	Caller = "caller"
	// Subordinate insists on a host identity of the job's own and refuses
	// to run without one.
	Subordinate = "subordinate"
)

// Modes lists the valid values of --host-uid.
var Modes = []string{Auto, Caller, Subordinate}

// Range is Count consecutive host ids from Start.
type Range struct {
	Start, Count uint32
}

// ParseSubid returns the ranges /etc/subuid or /etc/subgid content grants
// the user called name or with numeric id id (both forms are valid in
// those files; shadow's tools accept either). Malformed lines are skipped,
// as shadow skips them; empty ranges too.
func ParseSubid(data []byte, name string, id int) []Range {
	var out []Range
	idStr := strconv.Itoa(id)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 {
			continue
		}
		if f[0] != idStr && (name == "" || f[0] != name) {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil || count == 0 || start+count-1 > 0xFFFFFFFE {
			continue // 4294967295 is (uid_t)-1, never a valid id
		}
		out = append(out, Range{uint32(start), uint32(count)})
	}
	return out
}

// Size is how many ids the ranges hold together (overlaps counted once
// per range: shadow never writes overlapping ranges for one user).
func Size(rs []Range) uint64 {
	var n uint64
	for _, r := range rs {
		n += uint64(r.Count)
	}
	return n
}

// Nth is the i-th id of the ranges, in file order.
func Nth(rs []Range, i uint64) (uint32, bool) {
	for _, r := range rs {
		if i < uint64(r.Count) {
			return r.Start + uint32(i), true
		}
		i -= uint64(r.Count)
	}
	return 0, false
}

// RootRange is the host ids a root caller's jobs run as when /etc/subuid
// has no entry for root: 65536 ids from 2^31 (2147483648), above every
// range shadow's useradd hands out (it allocates from 100000 up to
// 600100000) and systemd's (nspawn's containers end below 1879048192), so
// no file or process of an existing user carries one of these ids. A root
// caller's job is thus never host uid 0, and never another user.
var RootRange = Range{Start: 1 << 31, Count: 65536}

// MaxSlots bounds how many jobs of one caller can hold identities of their
// own at once (and how many lock files a busy caller ever makes).
const MaxSlots = 4096

// Host is what the decision needs to know about the host and the caller.
type Host struct {
	// UID, GID and Name are the caller's real ids and user name.
	UID, GID int
	Name     string
	// SubUID and SubGID are the contents of /etc/subuid and /etc/subgid
	// (nil when missing or unreadable).
	SubUID, SubGID []byte
	// NewUIDMap and NewGIDMap are the paths of the setuid helpers, "" when
	// not installed. Root needs neither: it writes the maps itself.
	NewUIDMap, NewGIDMap string
	// StateDir is the caller's own directory for slot lock files; ""
	// means none is available.
	StateDir string
}

// Identity is the host identity a job gets.
type Identity struct {
	// Own is true when the job has a host uid and gid of its own (from
	// UIDs and GIDs); false means it runs as the caller.
	Own bool
	// UIDs and GIDs are the host ranges slots are taken from.
	UIDs, GIDs []Range
	// Helper says how the maps are written: "newuidmap" (the setuid
	// helpers, NewUIDMap and NewGIDMap), or "direct" (root writes them).
	Helper               string
	NewUIDMap, NewGIDMap string
	StateDir             string
	// Why says, when Own is false, why no identity of its own was
	// possible (empty for Caller chosen outright).
	Why string
}

// ErrUnavailable wraps the refusal of Subordinate where the host cannot
// give the job an identity of its own.
var ErrUnavailable = errors.New("no host identity of its own for this job")

// Binds describes the job's host binds, as far as Decide cares.
type Binds struct {
	// Writable: some bind is read-write (--cwd rw, --share). Only a job
	// whose binds are all read-only takes a uid of its own, since a file
	// it wrote into a shared directory would belong to an id the caller
	// does not own.
	Writable bool
	// Unreadable is a read-only bind source that other users cannot read
	// (FirstUnreadable), "" when there is none: a job with a uid of its
	// own could not read it.
	Unreadable string
}

// Decide picks the job's host identity. mode is one of Modes ("" = Auto).
func Decide(h Host, mode string, b Binds) (Identity, error) {
	if mode == "" {
		mode = Auto
	}
	switch mode {
	case Auto, Caller, Subordinate:
	default:
		return Identity{}, fmt.Errorf("--host-uid %q: want one of %s", mode, strings.Join(Modes, ", "))
	}
	root := h.UID == 0
	if mode == Caller && !root {
		return Identity{}, nil
	}
	id, why := h.available(b)
	if why == "" {
		return id, nil
	}
	switch {
	case root:
		// Never host uid 0, whatever was asked: a root caller's job that
		// cannot have an identity of its own does not run.
		return Identity{}, fmt.Errorf("%w: %s; a root caller's job never runs as host uid 0", ErrUnavailable, why)
	case mode == Subordinate:
		return Identity{}, fmt.Errorf("%w: %s (--host-uid subordinate)", ErrUnavailable, why)
	}
	return Identity{Why: why}, nil
}

// available is the identity the host allows, or why there is none.
func (h Host) available(b Binds) (Identity, string) {
	// Root's jobs never run as root: they take an identity of their own
	// whatever they bind (and can use only what other users could).
	if b.Writable && h.UID != 0 {
		return Identity{}, "the job writes to the host (--cwd rw or --share): its files must belong to you"
	}
	if b.Unreadable != "" && h.UID != 0 {
		return Identity{}, b.Unreadable + ": a job with a host uid of its own could not read it"
	}
	if h.StateDir == "" {
		return Identity{}, "no state directory for slot locks"
	}
	id := Identity{Own: true, StateDir: h.StateDir}
	if h.UID == 0 {
		id.Helper = "direct"
		id.UIDs = ParseSubid(h.SubUID, h.Name, h.UID)
		id.GIDs = ParseSubid(h.SubGID, h.Name, h.UID)
		if len(id.UIDs) == 0 || len(id.GIDs) == 0 {
			id.UIDs, id.GIDs = []Range{RootRange}, []Range{RootRange}
		}
		return id, ""
	}
	id.Helper = "newuidmap"
	id.UIDs = ParseSubid(h.SubUID, h.Name, h.UID)
	id.GIDs = ParseSubid(h.SubGID, h.Name, h.UID)
	switch {
	case len(id.UIDs) == 0:
		return Identity{}, fmt.Sprintf("no subordinate uids for %s in /etc/subuid (an admin can add them: usermod --add-subuids 100000-165535 %s)", h.Name, h.Name)
	case len(id.GIDs) == 0:
		return Identity{}, fmt.Sprintf("no subordinate gids for %s in /etc/subgid (an admin can add them: usermod --add-subgids 100000-165535 %s)", h.Name, h.Name)
	case h.NewUIDMap == "" || h.NewGIDMap == "":
		return Identity{}, "newuidmap/newgidmap are not installed (Debian and Ubuntu: apt install uidmap; Fedora: shadow-utils)"
	}
	id.NewUIDMap, id.NewGIDMap = h.NewUIDMap, h.NewGIDMap
	return id, ""
}

// Slots is how many jobs can hold identities from id at once.
func (id Identity) Slots() uint64 {
	return min(Size(id.UIDs), Size(id.GIDs), MaxSlots)
}

// IDs is slot i's host uid and gid.
func (id Identity) IDs(slot uint64) (uid, gid uint32, ok bool) {
	if slot >= id.Slots() {
		return 0, 0, false
	}
	uid, _ = Nth(id.UIDs, slot)
	gid, _ = Nth(id.GIDs, slot)
	return uid, gid, true
}
