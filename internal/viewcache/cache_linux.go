package viewcache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	envMarker   = "_CLOSET_STAGE"
	envMaxViews = "_CLOSET_VIEWS_MAX"
	envMaxPaths = "_CLOSET_VIEWS_MAX_PATHS"
)

// Options bound a Cache.
type Options struct {
	// MaxViews is how many views are kept (default 16).
	MaxViews int
	// MaxPaths bounds the store paths across all kept views (default
	// 60,000): each costs two mounts (the view and its spare copy), a
	// few hundred bytes of kernel memory each (tens of MB at the bound),
	// and the views count against the holder's fs.mount-max (100,000 by
	// default; a build over it fails, and that job builds its own view).
	MaxPaths int
	// MinPaths is the smallest closure worth a cached view (default 64;
	// 1: every closure). Below it building the view costs less than the
	// round trip to the holder (measured: a 10-path start 7.3 ms built,
	// 9.0 ms cached; 3,000 paths 47 ms built, 11 ms cached).
	MinPaths int
	// Exe is the static closet binary started as the holder ("": this
	// process's own), one that calls sandbox.RunStageIfAny first in main:
	// closet or closet-serve, not closet-stage, which is the init alone.
	Exe string
}

// Cache is the caller's side of a holder. It is safe for concurrent use;
// takes are served one at a time.
type Cache struct {
	mu    sync.Mutex
	sock  *os.File
	done  chan struct{} // closed when the holder is gone
	err   error         // why the holder cannot serve, once it cannot
	stats Stats
	// minPaths: see Options.MinPaths.
	minPaths int
}

// Serves says whether a closure of n paths is worth a cached view.
func (c *Cache) Serves(n int) bool { return n >= c.minPaths }

// ErrClosed is returned by Take after Close.
var ErrClosed = errors.New("view cache closed")

// New starts the holder. The holder lives until Close (or until the
// thread that started it ends with the process: it is started with
// PDEATHSIG from a thread kept for that).
func New(opts Options) (*Cache, error) {
	if opts.MaxViews <= 0 {
		opts.MaxViews = 16
	}
	if opts.MaxPaths <= 0 {
		opts.MaxPaths = 60_000
	}
	if opts.MinPaths <= 0 {
		opts.MinPaths = 64
	}
	exe := opts.Exe
	if exe == "" {
		exe = "/proc/self/exe"
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("view cache: socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "views"), os.NewFile(uintptr(fds[1]), "views")
	defer theirs.Close()
	cmd := &exec.Cmd{
		Path: exe,
		Args: []string{Stage},
		Env: []string{envMarker + "=" + Stage,
			envMaxViews + "=" + strconv.Itoa(opts.MaxViews),
			envMaxPaths + "=" + strconv.Itoa(opts.MaxPaths)},
		ExtraFiles: []*os.File{theirs},
		SysProcAttr: &syscall.SysProcAttr{
			// Its own user namespace (root there is the caller's uid) and
			// mount namespace: the views are mounted where no other
			// process looks.
			Cloneflags:  unix.CLONE_NEWUSER | unix.CLONE_NEWNS,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
			Pdeathsig:   unix.SIGKILL,
			Setsid:      true,
		},
	}
	c := &Cache{sock: mine, done: make(chan struct{}), minPaths: opts.MinPaths}
	startc := make(chan error, 1)
	go func() {
		// PDEATHSIG fires when the thread that forked the holder ends:
		// this one stays, locked, until the holder is gone.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			startc <- err
			return
		}
		startc <- nil
		err := cmd.Wait()
		c.mu.Lock()
		if c.err == nil {
			c.err = fmt.Errorf("view cache: the holder ended (%v)", err)
		}
		c.mu.Unlock()
		close(c.done)
	}()
	if err := <-startc; err != nil {
		mine.Close()
		return nil, fmt.Errorf("view cache: start the holder: %w", err)
	}
	return c, nil
}

// Take returns a fresh copy of the view of paths (every path of a closure,
// from storeRoot's store; "" for the host's): a detached mount tree, for a
// job's init to attach with mountview.Attach. The caller closes it. A miss
// builds the view first (as long as a cold start's mounts); a hit costs a
// round trip and no mount work in the caller's path.
func (c *Cache) Take(ctx context.Context, storeRoot string, paths []string) (*os.File, error) {
	f, _, err := c.TakeHit(ctx, storeRoot, paths)
	return f, err
}

// TakeHit is Take, and whether the copy came from a view already cached
// (a warm start) rather than one built for this take.
func (c *Cache) TakeHit(ctx context.Context, storeRoot string, paths []string) (*os.File, bool, error) {
	k := key(storeRoot, paths)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, false, c.err
	}
	// shutdown, not close, wakes a recvmsg blocked on the socket.
	stop := context.AfterFunc(ctx, func() { unix.Shutdown(int(c.sock.Fd()), unix.SHUT_RDWR) })
	defer stop()
	rep, fd, err := c.ask(request{Key: k})
	if err == nil && rep.Need {
		rep, fd, err = c.ask(request{Key: k, StoreRoot: storeRoot, Paths: paths})
	}
	if err != nil {
		return nil, false, c.broken(ctx, err)
	}
	c.stats = rep.Stats
	if rep.Err != "" {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, false, fmt.Errorf("view cache: %s", rep.Err)
	}
	if fd < 0 {
		return nil, false, c.broken(ctx, errors.New("reply without a view"))
	}
	return os.NewFile(uintptr(fd), "view"), rep.Hit, nil
}

// Refill asks the holder to make the spare copies taken since the last
// refill, ready for the next jobs. Call it once a job that took a copy has
// started (job.Job does): copying holds the kernel's global namespace lock
// (about 15 ms at 10,000 paths), which a starting job's clone and mounts
// wait for. Without it, the next take of that view copies on demand.
func (c *Cache) Refill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	if _, err := c.sock.Write([]byte("{\"refill\":true,\"key\":\"\"}\n")); err != nil {
		c.broken(context.Background(), err)
	}
}

// ask sends one request and reads its reply; c.mu is held.
func (c *Cache) ask(req request) (reply, int, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return reply{}, -1, err
	}
	if _, err := c.sock.Write(append(b, '\n')); err != nil {
		return reply{}, -1, err
	}
	return readReply(c.sock)
}

// broken marks the cache unusable: a request half answered leaves the
// stream out of step.
func (c *Cache) broken(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	c.err = fmt.Errorf("view cache: %w", err)
	c.sock.Close()
	return c.err
}

// readReply reads one reply line and the fd beside it (-1 if none).
func readReply(f *os.File) (reply, int, error) {
	var rep reply
	fd := -1
	var buf bytes.Buffer
	b := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for !bytes.HasSuffix(buf.Bytes(), []byte{'\n'}) {
		n, oobn, _, _, err := unix.Recvmsg(int(f.Fd()), b, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return rep, fd, err
		}
		if n == 0 {
			return rep, fd, errors.New("the holder closed its socket")
		}
		buf.Write(b[:n])
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			fds, _ := unix.ParseUnixRights(&m)
			for _, x := range fds {
				if fd < 0 {
					fd = x
				} else {
					unix.Close(x)
				}
			}
		}
	}
	return rep, fd, json.Unmarshal(buf.Bytes(), &rep)
}

// Stats are the cache's figures after the last take.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Close ends the holder; its namespace, and every cached view with it, go
// with it. Copies already taken are unaffected.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = ErrClosed
	}
	c.sock.Close()
	c.mu.Unlock()
	<-c.done
	return nil
}
