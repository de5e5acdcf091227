// Package stage owns the protocol between closet's three processes: the
// parent (closet run, on the host), the init stage (pid 1 of the sandbox)
// and the exec stage (which becomes the target). It holds the fd numbers,
// the messages, and the typed error that crosses a pipe as JSON and still
// matches errors.Is(err, unix.EPERM) on the other side.
//
// The protocol, in order:
//
//	who      fd  direction       message                     meaning
//	parent   3   parent -> init  spec.Spec (JSON), then EOF  the sandbox to build
//	init     4   init -> parent  Error (JSON)                setup failed; nothing ran
//	exec     4   exec -> parent  Error (JSON)                confinement or execve failed
//	(both)   4   EOF, no bytes                               the target's execve succeeded
//	init     5   init -> parent  Result (JSON)               the target ended (after EOF on 4)
//	init     3   init -> exec    Exec (JSON), then EOF       what to confine and run
//	exec     5   exec -> init    one byte                    the exec stage's Go runtime is up
//	init     6   init -> parent  pty master (SCM_RIGHTS)     with spec.TTY, before EOF on 4
//	parent   9   parent -> init  a detached mount tree       a cached store view to attach (EnvView=1 only)
//
// fd 4 is shared: init hands its write end to the exec stage and closes its
// own copy, the exec stage marks it close-on-exec, so the parent's read sees
// EOF exactly when execve replaced the exec stage with the target, and sees
// an Error if any step before failed. The parent never waits on a timer.
package stage

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// File descriptors as the stages see them (ExtraFiles start at 3).
const (
	SpecFD   = 3
	StatusFD = 4
	ResultFD = 5
	// ConsoleFD is the init's end of the console socket (spec.TTY only).
	ConsoleFD = 6
	// SlotLockFD is the init's descriptor of the job's identity slot lock
	// (spec.OwnHostID only): held until the init, the last process of the
	// job, is gone.
	SlotLockFD = 7
	// ReadyFD is the exec stage's end of a pipe to the init: one byte
	// once its Go runtime has started (see initstage's buildStoreView).
	ReadyFD = 5
	// ViewFD is a ready store view (a detached mount tree from
	// internal/viewcache) that the init attaches instead of building
	// one; present only when EnvView is set in the init's environment.
	ViewFD = 9
)

// Stage names; each is both argv[0] and the value of EnvMarker.
const (
	Init      = "closet-init"
	ExecStage = "closet-exec"
	EnvMarker = "_CLOSET_STAGE"
	// EnvView, set to "1" by the parent, says fd ViewFD holds the view.
	EnvView = "_CLOSET_VIEW"
)

// Error is a stage failure as it crosses the status pipe.
type Error struct {
	Stage string     `json:"stage"`
	Op    string     `json:"op"`
	Path  string     `json:"path,omitempty"`
	Errno unix.Errno `json:"errno,omitempty"`
	Msg   string     `json:"msg,omitempty"`
	Hint  string     `json:"hint,omitempty"`
	_     struct{}   `json:"-"`
}

func (e *Error) Error() string {
	s := e.Stage + ": " + e.Op
	if e.Path != "" {
		s += " " + e.Path
	}
	switch {
	case e.Msg != "":
		s += ": " + e.Msg
	case e.Errno != 0:
		s += ": " + e.Errno.Error()
	}
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

// Unwrap lets errors.Is(err, unix.EPERM) see the errno.
func (e *Error) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// Errorf builds an Error from a failed operation, keeping its errno.
func Errorf(stage, op, path string, err error) *Error {
	e := &Error{Stage: stage, Op: op, Path: path}
	var se *Error
	if errors.As(err, &se) {
		return se
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		e.Errno = errno
		if err.Error() != errno.Error() {
			e.Msg = err.Error()
		}
	} else if err != nil {
		e.Msg = err.Error()
	}
	return e
}

// Exec is what the init hands the exec stage.
type Exec struct {
	Path    string            `json:"path"`
	Args    []string          `json:"args"`
	Env     []string          `json:"env"`
	Cwd     string            `json:"cwd"`
	TTY     bool              `json:"tty"`
	Seccomp string            `json:"seccomp"`
	Rlimits map[string]uint64 `json:"rlimits,omitempty"`
	// Landlock is off, or the paths to allow: read-only and read-write.
	Landlock   bool     `json:"landlock"`
	LandlockRO []string `json:"landlockRO,omitempty"`
	LandlockRW []string `json:"landlockRW,omitempty"`
}

// Result is how the target ended, as its reaper saw it.
type Result struct {
	Exited   bool  `json:"exited"`
	Code     int   `json:"code"`
	Signal   int   `json:"signal,omitempty"`
	CoreDump bool  `json:"coreDump,omitempty"`
	UserUsec int64 `json:"userUsec"`
	SysUsec  int64 `json:"sysUsec"`
	// MaxRSS is the largest resident set of the target or a waited-for
	// descendant, in KiB (getrusage's ru_maxrss).
	MaxRSSKiB int64 `json:"maxRSSKiB"`
}

// WriteJSON writes v to fd and does not close it.
func WriteJSON(f *os.File, v any) error {
	return json.NewEncoder(f).Encode(v)
}

// ReadStatus reads the status pipe to EOF: nil means the target started.
func ReadStatus(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read stage status: %w", err)
	}
	if len(b) == 0 {
		return nil
	}
	var e Error
	if err := json.Unmarshal(b, &e); err != nil {
		return fmt.Errorf("stage status: unreadable message %q", b)
	}
	return &e
}

// Fail reports err on the status pipe and exits. Stages call it; there is
// nobody else to return an error to.
func Fail(e *Error) {
	f := os.NewFile(StatusFD, "status")
	if WriteJSON(f, e) != nil {
		fmt.Fprintln(os.Stderr, "closet:", e)
	}
	os.Exit(125)
}
