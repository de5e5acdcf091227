package mountview

import (
	"fmt"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// Stager is where the live view clones later store paths from: one OS
// thread of the init, parked in a copy of the init's mount namespace made
// before pivot_root (so it still holds the host's store), with its root at
// the store directory.
//
// Why a thread: open_tree(OPEN_TREE_CLONE) clones only from the caller's
// own mount namespace, and the job's namespace has no store left once the
// root is pivoted; a thread can hold another namespace while sharing the
// init's fd table, so the clone it makes is moved into the view by any
// other thread of the init without passing fds around (nix-inside.md §4,
// M1, with a thread instead of a socket). Why rooted at the store: the
// thread's mountinfo (/proc/1/task/TID/mountinfo) is readable by the job,
// and must not show the host's mounts (enterStore).
//
// The thread is locked and never unlocked, so no other goroutine ever runs
// in its namespace, and the Go runtime starts new threads from a template
// thread, never from a locked one.
type Stager struct {
	unshared chan struct{} // closed once the thread has a namespace of its own
	ready    chan struct{} // closed once that namespace is the store alone
	err      error         // why not, set before ready closes
	reqs     chan cloneReq
}

type cloneReq struct {
	bases []string
	reply chan cloneReply
}

type cloneReply struct {
	trees []tree
	err   error
}

// StartStager starts the stager thread for the store below storeRoot
// ("" for the host's). It returns at once.
//
// Preconditions: as for Build (own mount namespace, CAP_SYS_ADMIN, private
// propagation: the stager's namespace copies init's, and nothing it mounts
// must propagate anywhere). The caller does not pivot_root before
// Unshared returns: the stager's copy must still hold the host's store.
// (A copy made after the init stacked its new root over "/" is fine: a
// lookup from the stager's root never crosses a mount on that root.)
func StartStager(storeRoot string) *Stager {
	s := &Stager{unshared: make(chan struct{}), ready: make(chan struct{}), reqs: make(chan cloneReq)}
	go s.run(filepath.Join("/", storeRoot, storepath.Dir))
	return s
}

// Unshared blocks until the stager's namespace is its own copy.
func (s *Stager) Unshared() { <-s.unshared }

// Wait blocks until the stager's namespace holds the store alone, and
// returns why it could not (then the view cannot grow; the job is
// unaffected).
func (s *Stager) Wait() error {
	<-s.ready
	return s.err
}

func (s *Stager) run(storeDir string) {
	runtime.LockOSThread() // for good: the thread ends with this goroutine
	// CLONE_FS too (implied): root and cwd become this thread's own.
	// The copy is small: the host's mounts and perhaps the init's new
	// root, none of which the stager's root reaches.
	err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS)
	close(s.unshared)
	var src int
	if err != nil {
		err = fmt.Errorf("unshare the stager's mount namespace: %w", err)
	} else {
		src, err = enterStore(storeDir)
	}
	s.err = err
	close(s.ready)
	if err != nil {
		return
	}
	for req := range s.reqs {
		trees, err := cloneAll(src, req.bases)
		req.reply <- cloneReply{trees, err}
	}
}

// enterStore roots this thread (its own fs_struct, after unshare) at the
// store directory and returns an fd of it. A chroot, not a pivot_root:
// no mount work on the critical path (mounts take the kernel's global
// namespace lock, which the init's own mounts wait on). The job can read
// this thread's mountinfo (/proc/1/task/TID/mountinfo), and mountinfo
// lists only the mounts whose root the reader's root reaches: with the
// root at the store directory, none of the host's (not even the one that
// holds the store), only any mounted below the store itself.
func enterStore(storeDir string) (int, error) {
	if err := unix.Chroot(storeDir); err != nil {
		return -1, fmt.Errorf("stager: chroot to %s: %w", storeDir, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return -1, err
	}
	return unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// cloneAll clones every base, read-only, nosuid and nodev, or none: on an
// error every clone made is closed, so nothing has changed.
func cloneAll(src int, bases []string) ([]tree, error) {
	trees := make([]tree, 0, len(bases))
	fail := func(err error) ([]tree, error) {
		for i := range trees {
			trees[i].close()
		}
		return nil, err
	}
	for _, base := range bases {
		t, err := cloneOne(src, base)
		if err != nil {
			return fail(&PathError{Path: storepath.Dir + "/" + base, Op: "clone", Err: err})
		}
		trees = append(trees, t)
		if t.fd < 0 {
			continue
		}
		attr := unix.MountAttr{Attr_set: viewAttrs}
		if err := unix.MountSetattr(t.fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			return fail(&PathError{Path: storepath.Dir + "/" + base, Op: "make read-only", Err: err})
		}
	}
	return trees, nil
}

// PathError is a failure to add one store path.
type PathError struct {
	Path, Op string
	Err      error
}

func (e *PathError) Error() string { return e.Op + " " + e.Path + ": " + e.Err.Error() }
func (e *PathError) Unwrap() error { return e.Err }

// Add makes paths appear in the view, read-only, nosuid, nodev: binds of
// directories and files, copies of symlinks. Paths already in the view are
// skipped. Every path is checked, and every clone made, before anything
// changes: an invalid path, or one the store lacks, changes nothing.
// Paths are attached in the order given, so a caller that lists
// references before their referrers never shows a path whose references
// are missing. It returns how many paths were new.
//
// Add is not safe for concurrent use; the init serialises requests.
func (v *View) Add(s *Stager, paths []string) (int, error) {
	var bases []string
	seen := map[string]bool{}
	for _, p := range paths {
		sp, err := storepath.Parse(p)
		if err != nil {
			return 0, &PathError{Path: p, Op: "check", Err: err}
		}
		b := sp.Base()
		if v.has(b) || seen[b] {
			continue
		}
		seen[b] = true
		bases = append(bases, b)
	}
	if len(bases) == 0 {
		return 0, nil
	}
	if err := s.Wait(); err != nil {
		return 0, err
	}
	reply := make(chan cloneReply, 1)
	s.reqs <- cloneReq{bases, reply}
	r := <-reply
	if r.err != nil {
		return 0, r.err
	}
	for i, t := range r.trees {
		if err := attach(v.w, v.dir, t); err != nil {
			for _, rest := range r.trees[i+1:] {
				rest.close()
			}
			return i, &PathError{Path: storepath.Dir + "/" + t.base, Op: "attach", Err: err}
		}
		v.present[t.base] = true
	}
	return len(r.trees), nil
}
