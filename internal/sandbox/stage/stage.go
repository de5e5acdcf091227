// Package stage owns the protocol between closet's two processes: the
// parent (closet run, on the host) and the init stage (pid 1 of the
// sandbox, which forks the target). It holds the fd numbers, the
// messages, and the typed error that crosses a pipe as JSON and still
// matches errors.Is(err, unix.EPERM) on the other side.
//
// The protocol, in order (every fd is the init's, placed by the parent at
// clone time; the parent's ends are whatever its own fds are):
//
//	fd  direction       message                      meaning
//	3   parent -> init  spec.Spec (wire), then EOF   the sandbox to build
//	4   init -> parent  Error (JSON)                 setup, confinement or execve failed; nothing ran
//	4   EOF, no bytes                                the target's execve succeeded
//	5   init -> parent  Result (JSON)                the target ended (after EOF on 4)
//	6   init -> parent  pty master (SCM_RIGHTS)      with spec.TTY, before EOF on 4
//	7   (held, no messages)                          the job's identity slot lock (spec.OwnHostID)
//	8   parent <-> init Control, ControlReply (JSON) grow the running view
//	9   parent -> init  a detached mount tree        a cached store view to attach (EnvView=1 only)
//	10  (no messages)                                the job's pids cgroup.procs, to join (EnvPids=1 only)
//
// The Result on fd 5 comes once the target has ended and, with Alone set,
// once the init has killed and reaped every other process of its pid
// namespace and let go of the job's stdio and pty: the parent then takes
// the job as ended and does not wait for the init's exit (whose kernel
// teardown of the view's mounts takes milliseconds at thousands of
// paths); it reaps the init later. Without a Result, or without Alone, it
// waits for the init's exit, as the kernel then ends the rest.
//
// The target is the init's child, forked with a raw clone once the root is
// pivoted into; it confines itself and execve's with no Go runtime of its
// own, and reports a failed step to the init on a close-on-exec pipe of
// their own (a step number and an errno). The init holds fd 4 until that
// pipe says the execve succeeded (EOF) and then closes it, or turns the
// failure into the step's Error on fd 4. The parent never waits on a
// timer.
//
// fd 10 is the cgroup.procs of the job's own pids cgroup, opened for
// writing by the parent on the host (--pids enforced by a pids cgroup;
// see internal/cgroup's Request.JobPids). The init never writes it: the
// target's child writes "0" to it as its very first step, which moves the
// child into the job's cgroup, capped at exactly the job's N tasks, apart
// from the init's own threads; a failed write fails that step and nothing
// runs. The init marks it close-on-exec.
//
// fd 8 is a stream socket, open for the whole run (fds 6, 7, 9 and 10 are
// closed or absent in the init when there is no console, no identity slot,
// no cached view or no pids cgroup). The parent writes one Control per line and reads
// one ControlReply per Control; the init serves them in order,
// one at a time, once the root is pivoted into, until the target ends. The
// parent sends whole closures minus what is already visible, references
// first; the init checks each name, skips paths already in the view, and
// binds the rest read-only before it replies. Its EOF means the job ended.
// A job in a cached view (fd 9) cannot grow: the init answers every
// Control with an Error.
//
// The spec crosses in spec's wire form, whose strings are raw bytes:
// paths, argv and environment need not be UTF-8 (JSON would change them).
// Errors and results are JSON: no byte of them is acted on.
package stage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

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
	// ControlFD is the init's end of the control socket (live view).
	ControlFD = 8
	// ViewFD is a ready store view (a detached mount tree from
	// internal/viewcache) that the init attaches instead of building
	// one; present only when EnvView is set in the init's environment.
	ViewFD = 9
	// PidsFD is the job's pids cgroup.procs, which the target's child
	// joins (see the package comment); present only when EnvPids is set
	// in the init's environment.
	PidsFD = 10
)

// Stage names; each is both argv[0] and the value of EnvMarker.
const (
	Init      = "closet-init"
	EnvMarker = "_CLOSET_STAGE"
	// EnvView, set to "1" by the parent, says fd ViewFD holds the view.
	EnvView = "_CLOSET_VIEW"
	// EnvPids, set to "1" by the parent, says fd PidsFD is the job's pids
	// cgroup.procs.
	EnvPids = "_CLOSET_PIDS"
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
	// Alone: when the init sent this, no other process was left in its
	// pid namespace (it killed and reaped every one, see the init's
	// endJob), and it held neither the job's stdio nor its pty. The
	// parent then reports without waiting for the init's exit.
	Alone bool `json:"alone,omitempty"`
}

// AppendResult appends r as one line of JSON, exactly what encoding/json
// makes of it (TestAppendResultIsJSON), which the parent decodes with
// encoding/json. The init writes a Result once, as the job ends, where the
// first use of encoding/json in a process (its reflection over the type)
// would cost 50-100 µs.
func AppendResult(b []byte, r Result) []byte {
	b = append(b, `{"exited":`...)
	b = strconv.AppendBool(b, r.Exited)
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(r.Code), 10)
	if r.Signal != 0 {
		b = append(b, `,"signal":`...)
		b = strconv.AppendInt(b, int64(r.Signal), 10)
	}
	b = append(b, `,"userUsec":`...)
	b = strconv.AppendInt(b, r.UserUsec, 10)
	b = append(b, `,"sysUsec":`...)
	b = strconv.AppendInt(b, r.SysUsec, 10)
	b = append(b, `,"maxRSSKiB":`...)
	b = strconv.AppendInt(b, r.MaxRSSKiB, 10)
	if r.Alone {
		b = append(b, `,"alone":true`...)
	}
	return append(b, "}\n"...)
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
	// One message: the init writes the first failure and exits.
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
