// Package gcroot keeps a job's closure alive while it runs: it registers
// the roots as Nix garbage-collector roots for the job's lifetime and
// removes them after.
//
// A root is a symlink to a store path in a directory Nix's collector scans.
// closet writes it where the caller may: the per-user directory
// /nix/var/nix/gcroots/per-user/$USER (a multi-user install makes it the
// user's own), or /nix/var/nix/gcroots itself when the caller owns the store
// (root on a single-user install). Nix keeps a root's whole closure, so one
// link per root path is enough. Links left by a closet that was killed are
// removed by the next one: their names carry the pid that made them.
package gcroot

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// ErrNoPlace: there is no directory the caller may write roots into.
var ErrNoPlace = errors.New("no writable Nix GC root directory")

const prefix = "closet-"

var holdSeq atomic.Uint64

// Hold is a set of registered roots.
type Hold struct {
	Dir   string
	links []string
}

// Acquire registers roots under the store rooted at storeRoot ("" = host).
func Acquire(storeRoot string, roots []storepath.Path) (*Hold, error) {
	base := filepath.Join("/", storeRoot, "nix/var/nix/gcroots")
	var dirs []string
	if u, err := user.Current(); err == nil {
		dirs = append(dirs, filepath.Join(base, "per-user", u.Username))
	}
	dirs = append(dirs, base)
	var dir string
	for _, d := range dirs {
		if unix.Access(d, unix.W_OK|unix.X_OK) == nil {
			dir = d
			break
		}
	}
	if dir == "" {
		return nil, fmt.Errorf("%w: tried %s; ask the administrator to create %s owned by you (multi-user Nix does this for every user), or pass --no-gc-root to run without protection from nix-store --gc",
			ErrNoPlace, strings.Join(dirs, ", "), dirs[0])
	}
	sweep(dir)
	h := &Hold{Dir: dir}
	// closet-PID-HOLD-I: unique among the holds of this process, so that
	// concurrent jobs never replace or release each other's roots.
	name := prefix + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(holdSeq.Add(1), 10) + "-"
	for i, r := range roots {
		link := filepath.Join(dir, name+strconv.Itoa(i))
		if err := os.Symlink(string(r), link); err != nil {
			h.Release()
			return nil, fmt.Errorf("register GC root %s: %w", link, err)
		}
		h.links = append(h.links, link)
	}
	return h, nil
}

// Release removes the roots; the paths become collectable again.
func (h *Hold) Release() {
	if h == nil {
		return
	}
	for _, l := range h.links {
		os.Remove(l)
	}
	h.links = nil
}

// sweep removes roots left by closet processes that no longer exist.
func sweep(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		if err := unix.Kill(pid, 0); err == unix.ESRCH {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
