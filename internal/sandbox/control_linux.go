package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/storepath"
)

// ErrEnded is what Control.AddPaths returns once the job has ended: its
// store view is gone and cannot grow.
var ErrEnded = errors.New("the job has ended; its store view can no longer grow")

// Control grows a running job's store view (the live view). Run makes one
// per sandbox and hands it to Hooks.Control before the target starts; it
// is valid until Run returns. It is safe for concurrent use: requests are
// served one at a time.
//
// It binds what it is given and nothing else: the caller computes the
// closure of the new paths, leaves out what the view already shows, lists
// references before their referrers, and holds GC roots for them. The
// init checks the names again and skips paths already visible.
type Control struct {
	mu   sync.Mutex
	f    *os.File // the parent's end of the control socket (nonblocking)
	dec  *json.Decoder
	err  error       // sticky: set once the channel is closed or out of step
	done atomic.Bool // Run has closed it
}

// newControl makes the control socket: the parent's end, wrapped in a
// Control, and the init's end, passed as stage.ControlFD.
func newControl() (*Control, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	// Nonblocking, so os.File polls it and deadlines can interrupt a
	// request; the init's end stays blocking.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	f := os.NewFile(uintptr(fds[0]), "control")
	return &Control{f: f, dec: json.NewDecoder(f)}, os.NewFile(uintptr(fds[1]), "control-init"), nil
}

// AddPaths makes paths appear, read-only, in the running job's
// /nix/store before it returns. Paths already visible are no-ops. A path
// that is not a store path is refused before anything is sent; a path the
// store lacks fails the whole request and changes nothing. An error from
// the init is a *stage.Error (errors.Is sees its errno).
//
// When ctx ends first, AddPaths returns ctx's error and the Control is
// unusable afterwards (the init may still have added the paths).
func (c *Control) AddPaths(ctx context.Context, paths []string) error {
	for _, p := range paths {
		if _, err := storepath.Parse(p); err != nil {
			return fmt.Errorf("add to the job's store view: %w", err)
		}
	}
	if len(paths) == 0 {
		return nil
	}
	return c.send(ctx, paths)
}

// send is one request and its reply, without the parent's checks.
func (c *Control) send(ctx context.Context, paths []string) error {
	req, err := json.Marshal(stage.Control{Add: paths})
	if err != nil {
		return err
	}
	req = append(req, '\n')
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		c.f.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { c.f.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if stop() {
			c.f.SetDeadline(time.Time{})
		}
	}()
	var rep stage.ControlReply
	if _, err = c.f.Write(req); err == nil {
		err = c.dec.Decode(&rep)
	}
	switch {
	case err == nil:
	case c.done.Load():
		return ErrEnded
	case errors.Is(err, io.EOF), errors.Is(err, unix.EPIPE), errors.Is(err, unix.ECONNRESET):
		c.err = ErrEnded
		return c.err
	case ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
		c.err = fmt.Errorf("the job's control channel is out of step after an interrupted request: %w", err)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	default:
		c.err = fmt.Errorf("the job's control channel: %w", err)
		return c.err
	}
	if rep.Error != nil {
		return fmt.Errorf("add to the job's store view: %w", rep.Error)
	}
	return nil
}

// close ends the Control when the job has ended; later requests get
// ErrEnded.
func (c *Control) close() {
	c.done.Store(true)
	c.f.Close()
	c.mu.Lock()
	c.err = ErrEnded
	c.mu.Unlock()
}
