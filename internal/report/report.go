// Package report owns a run's verdict: the status (OK, RE, SG, TO, ML,
// OL, XX), the figures, how each limit was enforced, and the two formats
// it is written in: closet's JSON, and the key:value meta file of ioi/isolate
// so that graders written for isolate can read it unchanged.
package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/spec"
)

// Statuses.
const (
	OK = "OK" // the job exited 0
	RE = "RE" // the job exited non-zero
	SG = "SG" // a signal ended the job (not one of closet's limits)
	TO = "TO" // wall, CPU or silent time ran out
	ML = "ML" // the memory limit ended the job (the OOM killer fired)
	OL = "OL" // the job wrote more than --output
	XX = "XX" // the sandbox failed; never the job's fault
)

// Limit names, as Job.Limit and Limits keys use them: the spec's.
const (
	LimitWall   = spec.LimitWall
	LimitCPU    = spec.LimitCPU
	LimitSilent = spec.LimitSilent
	LimitOutput = spec.LimitOutput
	LimitMemory = spec.LimitMemory
)

// Job is what the verdict is decided from.
type Job struct {
	// SetupErr: the sandbox failed and the target never ran (or closet
	// lost track of it).
	SetupErr error
	Exited   bool
	Code     int
	Signal   int
	// Limit is the limit closet (or the OOM killer) ended the job for.
	Limit    string
	CPU      time.Duration
	CPULimit time.Duration
}

// Report is one run's verdict and figures, as closet's JSON.
type Report struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
	// Exited with ExitCode, or ended by Signal.
	Exited   bool `json:"exited"`
	ExitCode int  `json:"exitCode"`
	Signal   int  `json:"signal,omitempty"`
	// Killed: closet or the OOM killer ended the job, for Limit.
	Killed bool   `json:"killed"`
	Limit  string `json:"limit,omitempty"`

	// CPUTime and WallTime in seconds; wall time runs from the target's
	// start to the end of the job's last process.
	CPUTime  float64 `json:"cpuTime"`
	WallTime float64 `json:"wallTime"`
	// PeakMemory is the job cgroup's peak in bytes (0: no memory cgroup);
	// MaxRSS the largest resident set of one process, in bytes.
	PeakMemory uint64 `json:"peakMemory,omitempty"`
	MaxRSS     uint64 `json:"maxRSS"`
	OOMKilled  bool   `json:"oomKilled,omitempty"`
	// Output is every byte the job wrote to stdout and stderr; OutputKept
	// what closet passed on.
	Output     uint64 `json:"outputBytes"`
	OutputKept uint64 `json:"outputKept"`

	Closure Closure `json:"closure"`
	// AddedPaths are the store paths that joined the running job's view
	// (Job.AddPaths, closet run --nix), closures included, in order.
	AddedPaths []string `json:"addedPaths,omitempty"`
	// Confinement says which optional fences were on.
	Confinement Confinement `json:"confinement"`
	// Limits maps each limit given to its value and the mechanism that
	// enforced it.
	Limits map[string]Limit `json:"limits"`
	// WarmView: the job's store view was a copy of one already cached for
	// an earlier job of the same closure (a warm start).
	WarmView bool `json:"warmView,omitempty"`
	// HostIdentity is who the job was on the host: "UID:GID" of ids of
	// its own (--host-uid), or "caller".
	HostIdentity string `json:"hostIdentity,omitempty"`
	// ClosetExit is closet's own exit code for this verdict.
	ClosetExit int `json:"closetExit"`
}

// Confinement records the fences that can be switched off or that the
// kernel may lack, so a grader can tell a run that had them from one that
// did not.
type Confinement struct {
	// Seccomp is the syscall policy: "default" or "off".
	Seccomp string `json:"seccomp"`
	// Landlock is "off", or the kernel's Landlock ABI the fence used
	// ("abi 7"), or "unavailable" where the kernel has none.
	Landlock string `json:"landlock"`
	// Network is "own" (a namespace with only lo) or "host".
	Network string `json:"network"`
}

// Closure identifies the store view.
type Closure struct {
	Hash  string `json:"hash"`
	Paths int    `json:"paths"`
	// Size is the sum of the paths' NAR sizes in bytes.
	Size uint64 `json:"size"`
}

// Limit is one limit and how it was enforced.
type Limit struct {
	Value     string `json:"value"`
	Mechanism string `json:"mechanism"`
}

// Decide returns the status and a one-line message.
func Decide(j Job) (status, message string) {
	switch {
	case j.SetupErr != nil:
		return XX, j.SetupErr.Error()
	case j.Limit == LimitWall:
		return TO, "Time limit exceeded (wall clock)"
	case j.Limit == LimitSilent:
		return TO, "Time limit exceeded (no output for too long)"
	case j.Limit == LimitCPU:
		return TO, "Time limit exceeded"
	case j.Limit == LimitMemory:
		return ML, "Memory limit exceeded"
	case j.Limit == LimitOutput:
		return OL, "Output limit exceeded"
	case j.CPULimit > 0 && (j.CPU >= j.CPULimit || j.Signal == int(unix.SIGXCPU)):
		return TO, "Time limit exceeded"
	case j.Signal != 0:
		return SG, fmt.Sprintf("Caught fatal signal %d (%s)", j.Signal, unix.SignalName(unix.Signal(j.Signal)))
	case j.Code != 0:
		return RE, fmt.Sprintf("Exited with error status %d", j.Code)
	}
	return OK, ""
}

// Exit codes of closet run for the statuses a limit decides; OK, RE and
// SG keep the job's own (0, its code, 128+signal), XX is 125 (or 126, 127
// when the command could not be executed or found).
const (
	ExitTO = exitcode.TO
	ExitML = exitcode.ML
	ExitOL = exitcode.OL
	ExitXX = exitcode.Sandbox
)

// ExitCode maps a verdict to closet's exit code.
func ExitCode(status string, code, signal int) int {
	switch status {
	case OK:
		return 0
	case RE:
		return code
	case SG:
		return exitcode.SignalBase + signal
	case TO:
		return ExitTO
	case ML:
		return ExitML
	case OL:
		return ExitOL
	}
	return ExitXX
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteIsolate writes r as isolate's --meta file: key:value lines with
// isolate's keys and meanings (times in seconds, memory in KiB). Where
// isolate has no status of its own, the meta file says what isolate would:
// ML is SG with cg-oom-killed:1 (a SIGKILL from the OOM killer), OL is SG
// with killed:1. closet's own status is in closet-status, and closet's
// extras carry a closet- prefix, which isolate readers ignore.
func (r *Report) WriteIsolate(w io.Writer) error {
	var b strings.Builder
	kv := func(k string, v any) { fmt.Fprintf(&b, "%s:%v\n", k, v) }
	kv("time", fmt.Sprintf("%.3f", r.CPUTime))
	kv("time-wall", fmt.Sprintf("%.3f", r.WallTime))
	kv("max-rss", r.MaxRSS/1024)
	if r.PeakMemory > 0 {
		kv("cg-mem", r.PeakMemory/1024)
	}
	if r.OOMKilled {
		kv("cg-oom-killed", 1)
	}
	if r.Status != XX {
		switch {
		case r.Exited && !r.Killed:
			kv("exitcode", r.ExitCode)
		case r.Signal != 0 && r.Status != TO:
			kv("exitsig", r.Signal)
		}
	}
	if r.Killed {
		kv("killed", 1)
	}
	switch r.Status {
	case OK:
	case ML, OL:
		kv("status", SG)
	default:
		kv("status", r.Status)
	}
	if r.Message != "" {
		kv("message", strings.ReplaceAll(r.Message, "\n", " "))
	}
	kv("closet-status", r.Status)
	kv("closet-output-bytes", r.Output)
	kv("closet-output-kept", r.OutputKept)
	kv("closet-closure-hash", r.Closure.Hash)
	kv("closet-closure-paths", r.Closure.Paths)
	kv("closet-closure-size", r.Closure.Size)
	kv("closet-seccomp", r.Confinement.Seccomp)
	kv("closet-landlock", r.Confinement.Landlock)
	kv("closet-network", r.Confinement.Network)
	names := make([]string, 0, len(r.Limits))
	for n := range r.Limits {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		kv("closet-limit-"+n, r.Limits[n].Value+" "+r.Limits[n].Mechanism)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Dest is where a report will go: its directory, opened before the job
// runs, so that a job which can write there (the shared working directory)
// cannot redirect the report by swapping a directory for a symlink while
// it runs.
type Dest struct {
	dir  *os.File
	base string
}

// OpenDest opens path's directory; path names a file to create or
// replace.
func OpenDest(path string) (*Dest, error) {
	base := filepath.Base(path)
	if base == "." || base == "/" || base == ".." || strings.HasSuffix(path, "/") {
		return nil, fmt.Errorf("%s: a file name, please", path)
	}
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Dir(path), err)
	}
	return &Dest{dir: os.NewFile(uintptr(fd), filepath.Dir(path)), base: base}, nil
}

// Close releases the directory.
func (d *Dest) Close() error { return d.dir.Close() }

// Write writes r in format ("json" or "isolate") through a temporary file
// renamed into place: a reader never sees half a report, and a symlink at
// the report's name is replaced, not followed.
func (d *Dest) Write(r *Report, format string) error {
	var b bytes.Buffer
	var err error
	if format == "isolate" {
		err = r.WriteIsolate(&b)
	} else {
		err = r.WriteJSON(&b)
	}
	if err != nil {
		return err
	}
	dfd := int(d.dir.Fd())
	var tmp string
	var fd int
	for i := 0; ; i++ {
		tmp = fmt.Sprintf(".%s.%d.%d.tmp", d.base, os.Getpid(), i)
		fd, err = unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err != unix.EEXIST || i > 100 {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("create the report in %s: %w", d.dir.Name(), err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.Write(b.Bytes())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dfd, tmp, dfd, d.base)
	}
	if err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return fmt.Errorf("write the report %s: %w", filepath.Join(d.dir.Name(), d.base), err)
	}
	return nil
}
