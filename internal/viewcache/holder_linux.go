package viewcache

import (
	"bufio"
	"container/list"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/mountview"
)

// scratch is where the holder mounts its views, in its own namespace: a
// tmpfs over /tmp, which no other namespace sees (nothing is made on the
// host). A store root below /tmp is reached through a directory fd opened
// before the tmpfs covered it.
const scratch = "/tmp"

// holder is the holder's state; it serves one request at a time.
type holder struct {
	tmpFD   int                      // the host's /tmp, opened before it was covered
	lru     *list.List               // of *view, most recently used first
	byKey   map[string]*list.Element // key -> element of lru
	maxView int
	maxPath int
	seq     int
	stats   Stats
}

// view is one built view, mounted at dir, with a spare copy ready (-1
// when making it failed; the next take clones at once).
type view struct {
	key   string
	dir   string
	paths int
	spare int
}

// RunHolder is the holder stage's main. It never returns: it serves until
// its cache closes the socket, and the kernel unmounts every view when
// its mount namespace goes with it.
func RunHolder() {
	maxView, _ := strconv.Atoi(os.Getenv(envMaxViews))
	maxPath, _ := strconv.Atoi(os.Getenv(envMaxPaths))
	h := &holder{lru: list.New(), byKey: map[string]*list.Element{}, maxView: max(maxView, 1), maxPath: max(maxPath, 1)}
	f := os.NewFile(sockFD, "views")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "closet-views: %v\n", err)
		os.Exit(1)
	}
	conn := c.(*net.UnixConn)
	if err := h.setup(); err != nil {
		// The cache reads this reply to its first request and keeps
		// failing every Take with it.
		conn.Write(line(reply{Err: err.Error()}))
		os.Exit(1)
	}
	r := bufio.NewReaderSize(conn, 1<<16)
	for {
		b, err := r.ReadBytes('\n')
		if err != nil {
			os.Exit(0) // the cache closed: the job of the holder is over
		}
		var req request
		if err := json.Unmarshal(b, &req); err != nil {
			conn.Write(line(reply{Err: fmt.Sprintf("read request: %v", err)}))
			continue
		}
		if req.Refill {
			h.refill()
			continue
		}
		fd, err := h.take(req)
		rep := reply{Stats: h.stats}
		if err == errNeed {
			rep.Need = true
			conn.Write(line(rep))
			continue
		}
		if err != nil {
			rep.Err = err.Error()
			conn.Write(line(rep))
			continue
		}
		_, _, err = conn.WriteMsgUnix(line(rep), unix.UnixRights(fd), nil)
		unix.Close(fd)
		if err != nil {
			os.Exit(1)
		}
	}
}

func line(v any) []byte {
	b, _ := json.Marshal(v)
	return append(b, '\n')
}

// setup makes every mount private (nothing the holder mounts may
// propagate to the host) and covers /tmp with its scratch tmpfs.
func (h *holder) setup() error {
	// Nothing but closet may look into the holder (it holds CAP_SYS_ADMIN
	// over its namespaces): not dumpable, so not ptraceable.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make the holder non-dumpable: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	fd, err := unix.Open(scratch, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", scratch, err)
	}
	h.tmpFD = fd
	if err := unix.Mount("tmpfs", scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
		return fmt.Errorf("mount the views' tmpfs on %s: %w", scratch, err)
	}
	return nil
}

// errNeed: the request named a view the holder does not have.
var errNeed = errors.New("need paths")

// take returns a fresh copy of the view of req, building it on a miss.
func (h *holder) take(req request) (int, error) {
	k := req.Key
	if e, ok := h.byKey[k]; ok {
		h.lru.MoveToFront(e)
		v := e.Value.(*view)
		h.stats.Hits++
		h.stats.Hit = true
		if v.spare >= 0 {
			fd := v.spare
			v.spare = -1
			return fd, nil
		}
		return clone(v.dir)
	}
	if req.Paths == nil {
		return -1, errNeed
	}
	if k != key(req.StoreRoot, req.Paths) {
		return -1, fmt.Errorf("the view's key does not match its paths")
	}
	h.stats.Misses++
	h.stats.Hit = false
	v, err := h.build(k, req)
	if err != nil {
		return -1, err
	}
	h.byKey[k] = h.lru.PushFront(v)
	h.stats.Views++
	h.stats.Paths += v.paths
	h.evict()
	return clone(v.dir)
}

// build mounts a new view below the scratch tmpfs.
func (h *holder) build(k string, req request) (*view, error) {
	root, err := h.storeRoot(req.StoreRoot)
	if err != nil {
		return nil, err
	}
	if root >= 0 {
		defer unix.Close(root)
	}
	h.seq++
	dir := filepath.Join(scratch, strconv.Itoa(h.seq))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	arg := req.StoreRoot
	if root >= 0 {
		arg = fmt.Sprintf("/proc/self/fd/%d", root)
	}
	built, err := mountview.Build(dir, arg, req.Paths)
	if err == nil {
		// The view stays mounted here; the fds that would let it grow
		// (live view) are not needed: a cached view never grows.
		built.Close()
		// Every copy of the view shares its tmpfs: a mount point made in
		// one copy would show, empty, in all of them and in the cache.
		// Read-only at the superblock, which only the holder's user
		// namespace can undo, no copy can make one.
		err = unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "")
		if err != nil {
			err = fmt.Errorf("make the view's tmpfs read-only: %w", err)
		}
	}
	if err == nil {
		// Once per view, not per job: every copy is this tree.
		err = mountview.Check(dir, req.Paths)
	}
	if err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		os.Remove(dir)
		return nil, err
	}
	return &view{key: k, dir: dir, paths: len(req.Paths), spare: -1}, nil
}

// storeRoot opens a chroot store's root below /tmp through the fd of the
// covered /tmp; -1 when the path is reachable as it is.
func (h *holder) storeRoot(root string) (int, error) {
	rel, ok := strings.CutPrefix(filepath.Clean("/"+root), scratch+"/")
	if root == "" || !ok {
		return -1, nil
	}
	fd, err := unix.Openat2(h.tmpFD, rel, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH})
	if err != nil {
		return -1, fmt.Errorf("open store root %s: %w", root, err)
	}
	return fd, nil
}

// refill makes the spare copy of every view that gave its spare away.
//
// It runs when the cache asks (Cache.Refill), once the job that took a
// copy has started, not right after the reply: copying a view holds the
// kernel's global namespace lock for as long as it takes (about 15 ms at
// 10,000 paths), and the starting job's clone(CLONE_NEWNS) and mounts wait
// for that lock (measured: the init's clone took 14.7 ms instead of 1.5).
func (h *holder) refill() {
	for e := h.lru.Front(); e != nil; e = e.Next() {
		if v := e.Value.(*view); v.spare < 0 {
			v.spare, _ = clone(v.dir)
		}
	}
}

// evict drops least recently used views until the cache is in bounds; the
// newest view stays even when it alone is over the path bound.
func (h *holder) evict() {
	for h.lru.Len() > 1 && (h.lru.Len() > h.maxView || h.stats.Paths > h.maxPath) {
		e := h.lru.Back()
		v := e.Value.(*view)
		h.lru.Remove(e)
		delete(h.byKey, v.key)
		if v.spare >= 0 {
			unix.Close(v.spare)
		}
		// Copies already handed out are trees of their own: detaching
		// the cached one does not touch them.
		unix.Unmount(v.dir, unix.MNT_DETACH)
		os.Remove(v.dir)
		h.stats.Views--
		h.stats.Paths -= v.paths
		h.stats.Evictions++
	}
}

// clone makes a detached, private copy of the view mounted at dir.
func clone(dir string) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("copy the view: open_tree: %w", err)
	}
	return fd, nil
}
