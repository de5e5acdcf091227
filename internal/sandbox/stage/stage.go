// Package stage owns the protocol between closet's three processes: the
// parent (closet run, on the host), the init stage (pid 1 of the sandbox)
// and the exec stage (which becomes the target). It holds the fd numbers,
// the messages, and the typed error that crosses a pipe as JSON and still
// matches errors.Is(err, unix.EPERM) on the other side.
//
// The protocol, in order:
//
//	who      fd  direction       message                     meaning
//	parent   3   parent -> init  spec.Spec (wire), then EOF  the sandbox to build
//	init     4   init -> parent  Error (JSON)                setup failed; nothing ran
//	exec     4   exec -> parent  Error (JSON)                confinement or execve failed
//	(both)   4   EOF, no bytes                               the target's execve succeeded
//	init     5   init -> parent  Result (JSON)               the target ended (after EOF on 4)
//	init     3   init -> exec    Exec (wire), then EOF       what to confine and run
//	exec     5   exec -> init    one byte                    the exec stage's Go runtime is up
//	init     6   init -> parent  pty master (SCM_RIGHTS)     with spec.TTY, before EOF on 4
//	init     7   (held, no messages)         the job's identity slot lock (spec.OwnHostID)
//	init     8   parent <-> init Control, ControlReply (JSON) grow the running view
//	init     9   parent -> init  a detached mount tree       a cached store view to attach (EnvView=1 only)
//
// Every fd number is a stage's own: rows between the parent and the init
// are the init's fds (3-9, placed by the parent at clone time), rows that
// name the exec stage are the exec stage's (3-5, placed by the init as it
// starts it); fd 4 is one pipe in both. The parent's ends are whatever its
// own fds are.
//
// fd 4 is shared: init hands its write end to the exec stage and closes its
// own copy, the exec stage marks it close-on-exec, so the parent's read sees
// EOF exactly when execve replaced the exec stage with the target, and sees
// an Error if any step before failed. The parent never waits on a timer.
//
// fd 8 is a stream socket, open for the whole run (fds 6, 7 and 9 are
// closed or absent in the init when there is no console, no identity slot
// or no cached view). The parent writes one Control per line and reads
// one ControlReply per Control; the init serves them in order,
// one at a time, once the root is pivoted into, until the target ends. The
// parent sends whole closures minus what is already visible, references
// first; the init checks each name, skips paths already in the view, and
// binds the rest read-only before it replies. Its EOF means the job ended.
// A job in a cached view (fd 9) cannot grow: the init answers every
// Control with an Error.
//
// The spec and the exec stage's part cross in spec's wire form, whose
// strings are raw bytes: paths, argv and environment need not be UTF-8
// (JSON would change them). Errors and results are JSON: no byte of them
// is acted on.
package stage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/spec"
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
	// It is the exec stage's fd; the init's fd 5 is ResultFD.
	ReadyFD = 5
	// ControlFD is the init's end of the control socket (live view).
	ControlFD = 8
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

// Control asks the init to add store paths to the running job's view.
type Control struct {
	Add []string `json:"add"`
}

// ControlReply answers one Control: no Error means every path is visible.
type ControlReply struct {
	Error *Error `json:"error,omitempty"`
}

// Result is how the target ended, as its reaper saw it.
type Result struct {
	Exited   bool  `json:"exited"`
	Code     int   `json:"code"`
	Signal   int   `json:"signal,omitempty"`
	UserUsec int64 `json:"userUsec"`
	SysUsec  int64 `json:"sysUsec"`
	// MaxRSS is the largest resident set of the target or a waited-for
	// descendant, in KiB (getrusage's ru_maxrss).
	MaxRSSKiB int64 `json:"maxRSSKiB"`
}

// WriteExec writes the exec stage's part of the spec in the wire form
// (spec.EncodeBinary): its paths, argv and environment cross as the bytes
// they are.
func WriteExec(w io.Writer, x *Exec) error {
	return spec.EncodeBinary(w, x)
}

// ReadExec reads what WriteExec wrote.
func ReadExec(r io.Reader) (*Exec, error) {
	var x Exec
	if err := spec.DecodeBinary(r, &x); err != nil {
		return nil, err
	}
	return &x, nil
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
	// The first message is the cause: when init fails after starting the
	// exec stage, the exec stage sees its spec pipe close and may report
	// that too, after init's own message.
	var e Error
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&e); err != nil {
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
