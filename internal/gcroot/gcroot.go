// Package gcroot keeps a job's closure alive while it runs: it registers
// the roots as Nix garbage-collector roots for the job's lifetime and
// removes them after.
//
// A root is a symlink to a store path in a directory Nix's collector scans.
// closet writes it where the caller may: the per-user directory
// /nix/var/nix/gcroots/per-user/USER (a multi-user install makes it the
// user's own), or /nix/var/nix/gcroots itself when the caller owns the store
// (root on a single-user install). Nix keeps a root's whole closure, so one
// link per root path is enough.
//
// Where the per-user directory is missing (a member of nix-users who never
// ran a Nix command), the package connects to the nix-daemon: the worker
// protocol's handshake alone makes the daemon create the directory, owned by
// the caller. Where it is still not usable, the roots are held as the
// daemon's temporary roots, which live as long as the connection, kept open
// for the Hold's life.
//
// Many Holds may live in one process: each link's name carries the pid, a
// per-process sequence number and an index, and no Hold ever removes a link
// it did not make, except links whose pid is dead (left by a closet that was
// killed), which the next Acquire sweeps.
//
// GC-root directories are opened without following symlinks from the store
// root (openat2 RESOLVE_NO_SYMLINKS), must be owned by the caller or root,
// and every sweep and link is made relative to that open directory: a
// symlinked directory in a chroot store cannot redirect them.
package gcroot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/nixproxy"
	"github.com/closet-sandbox/closet/internal/storepath"
)

// ErrNoPlace: there is no directory the caller may write roots into, and no
// daemon to hold them.
var ErrNoPlace = errors.New("no writable Nix GC root directory")

const prefix = "closet-"

// DefaultDaemonSocket is where Nix's daemon listens on a multi-user
// install.
const DefaultDaemonSocket = "/nix/var/nix/daemon-socket/socket"

// Options say where to hold roots and for whom.
type Options struct {
	// StoreRoot is a chroot store's root ("" = the host's store).
	StoreRoot string
	// User is the caller's user name: the per-user directory's name. The
	// caller passes it (the package never asks the process who it is).
	User string
	// DaemonSocket is the nix-daemon's socket for the host store; ""
	// means DefaultDaemonSocket, "-" never asks a daemon. Not used for a
	// chroot store, which no daemon serves.
	DaemonSocket string
	// TempRoots holds the roots as the daemon's temporary roots even
	// where a directory is writable (tests; a holder that must leave
	// nothing on disk).
	TempRoots bool
}

// seq numbers the Holds of this process: with the pid, it makes every
// Hold's link names unique.
var seq atomic.Uint64

// Hold is a set of registered roots. Its methods are safe for concurrent
// use.
type Hold struct {
	// Dir is where the links are; "" when the daemon holds the roots.
	Dir string

	mu       sync.Mutex
	dirfd    int // -1 without a directory
	name     string
	links    []string // names in dirfd
	daemon   *nixproxy.TempRoots
	released bool
}

// Acquire registers roots under the store o names. The error matches
// ErrNoPlace when there is nowhere to register them, and says what to do.
func Acquire(o Options, roots []storepath.Path) (*Hold, error) {
	h := &Hold{dirfd: -1, name: prefix + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(seq.Add(1), 10) + "-"}
	var tried []string
	if !o.TempRoots {
		fd, dir, why := openRootDir(o)
		tried = append(tried, why...)
		if fd < 0 && o.StoreRoot == "" && o.DaemonSocket != "-" {
			// The handshake makes the daemon create the per-user
			// directory; keep the connection in case it does not.
			c, err := nixproxy.DialTempRoots(o.daemonSocket())
			if err != nil {
				tried = append(tried, err.Error())
			} else {
				h.daemon = c
				fd, dir, why = openRootDir(o)
				tried = append(tried, why...)
			}
		}
		if fd >= 0 {
			h.dirfd, h.Dir = fd, dir
			if h.daemon != nil {
				h.daemon.Close()
				h.daemon = nil
			}
			sweep(fd)
		}
	} else if o.StoreRoot == "" && o.DaemonSocket != "-" {
		c, err := nixproxy.DialTempRoots(o.daemonSocket())
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoPlace, err)
		}
		h.daemon = c
	}
	if h.dirfd < 0 && h.daemon == nil {
		want := filepath.Join("/", o.StoreRoot, "nix/var/nix/gcroots/per-user", o.User)
		return nil, fmt.Errorf("%w: %s; ask the administrator to create %s owned by you (multi-user Nix's daemon does this on a user's first connection), or pass --no-gc-root to run without protection from nix-store --gc",
			ErrNoPlace, strings.Join(tried, "; "), want)
	}
	if err := h.Add(roots); err != nil {
		h.Release()
		return nil, err
	}
	return h, nil
}

func (o Options) daemonSocket() string {
	if o.DaemonSocket == "" {
		return DefaultDaemonSocket
	}
	return o.DaemonSocket
}

// Add registers more roots (paths added to a running job's view). Paths
// already held are registered again, which is harmless.
func (h *Hold) Add(paths []storepath.Path) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return errors.New("gcroot: add to a released hold")
	}
	for _, p := range paths {
		if h.daemon != nil {
			if err := h.daemon.Add(string(p)); err != nil {
				return fmt.Errorf("hold %s as a temporary root of the nix-daemon: %w", p, err)
			}
			continue
		}
		for {
			name := h.name + strconv.Itoa(len(h.links))
			err := unix.Symlinkat(string(p), h.dirfd, name)
			if err == unix.EEXIST {
				// Another process of the same pid (another pid
				// namespace) made it: never touch its link.
				h.links = append(h.links, "")
				continue
			}
			if err != nil {
				return fmt.Errorf("register GC root %s: %w", filepath.Join(h.Dir, name), err)
			}
			h.links = append(h.links, name)
			break
		}
	}
	return nil
}

// Release removes the roots; the paths become collectable again. It is
// idempotent.
func (h *Hold) Release() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return
	}
	h.released = true
	for _, l := range h.links {
		if l != "" {
			unix.Unlinkat(h.dirfd, l, 0)
		}
	}
	h.links = nil
	if h.dirfd >= 0 {
		unix.Close(h.dirfd)
		h.dirfd = -1
	}
	if h.daemon != nil {
		h.daemon.Close()
		h.daemon = nil
	}
}

// openRootDir opens the first usable GC-root directory: the per-user one,
// then the gcroots directory itself. It returns -1 and why each was not
// usable otherwise.
func openRootDir(o Options) (fd int, dir string, why []string) {
	root := filepath.Join("/", o.StoreRoot)
	var rels []string
	if o.User != "" && !strings.ContainsAny(o.User, "/\x00") && o.User != "." && o.User != ".." {
		rels = append(rels, "nix/var/nix/gcroots/per-user/"+o.User)
	}
	rels = append(rels, "nix/var/nix/gcroots")
	for _, rel := range rels {
		dir := filepath.Join(root, rel)
		fd, err := openDirNoFollow(root, rel)
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", dir, err))
			continue
		}
		return fd, dir, why
	}
	return -1, "", why
}

// openDirNoFollow opens root/rel as a directory without following any
// symlink below root, and checks that the caller may keep roots in it: it is
// owned by the caller or by root, and the caller may write it.
func openDirNoFollow(root, rel string) (int, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat2(rfd, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_BENEATH,
	})
	if err == unix.ELOOP {
		return -1, errors.New("a symlink on the way (not followed)")
	}
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	euid := uint32(os.Geteuid())
	if st.Uid != euid && st.Uid != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("owned by uid %d, neither the caller nor root", st.Uid)
	}
	if euid != 0 && (st.Uid != euid || st.Mode&0o300 != 0o300) {
		unix.Close(fd)
		return -1, errors.New("not writable by the caller")
	}
	return fd, nil
}

// sweep removes roots left by closet processes that no longer exist, in
// the open directory fd. A live process's links are never touched.
func sweep(fd int) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(dup), "gcroots")
	names, _ := f.Readdirnames(-1)
	f.Close()
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, prefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		if err := unix.Kill(pid, 0); err == unix.ESRCH {
			unix.Unlinkat(fd, n, 0)
		}
	}
}
