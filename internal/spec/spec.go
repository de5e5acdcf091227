// Package spec owns the sandbox spec: one plain, JSON-serialisable value
// that says everything the sandbox will be. It is the only thing the parent
// hands the init stage, it is what --dry-run prints, and it is what tests
// assert on. Nothing in it is computed inside the sandbox that could have
// been decided outside.
package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Version is bumped when the meaning of a field changes; init refuses a
// spec of another version rather than guess.
const Version = 1

// Spec describes one sandbox.
type Spec struct {
	Version int `json:"version"`

	// Args is the target's argv; Path is the file executed (absolute, inside
	// the sandbox). Args[0] may differ from Path, as with a shell.
	Path string   `json:"path"`
	Args []string `json:"args"`
	Env  []string `json:"env"`
	Cwd  string   `json:"cwd"`

	UID      int    `json:"uid"`
	GID      int    `json:"gid"`
	User     string `json:"user"`
	Home     string `json:"home"`
	Hostname string `json:"hostname"`

	// OwnHostID: the job runs as a host uid and gid of its own (see
	// internal/idmap). The parent maps UID and GID to them after clone;
	// the init takes them and drops every supplementary group.
	OwnHostID bool `json:"ownHostId,omitempty"`

	// Network shares the host's network namespace; otherwise the sandbox
	// has its own with only lo, up.
	Network bool `json:"network"`
	// TTY: stdin is a pty closet relays; the target gets it as its
	// controlling terminal.
	TTY bool `json:"tty"`

	// StoreRoot is the physical prefix of the store ("" = the host's
	// /nix/store; ROOT for a chroot store ROOT/nix/store).
	StoreRoot string `json:"storeRoot,omitempty"`
	// Store lists the closure: every store path the view holds, sorted.
	Store []string `json:"store"`
	// ClosureHash identifies the closure (sha256 of the sorted list).
	ClosureHash string `json:"closureHash"`

	// Mounts are the user's binds (cwd, --expose, --share) in mount order.
	Mounts []Mount `json:"mounts"`
	// Etc holds the synthetic files of /etc, by base name.
	Etc map[string]string `json:"etc"`
	// Links are symlinks made in the root, by path: /bin/sh and
	// /usr/bin/env pointing into the closure, for #! lines.
	Links map[string]string `json:"links,omitempty"`

	// Seccomp names the syscall policy ("default" or "off").
	Seccomp string `json:"seccomp"`
	// Landlock turns on the Landlock fence ("best-effort" or "off").
	Landlock string `json:"landlock"`

	Limits Limits `json:"limits"`
}

// Mount is a bind of a host path into the sandbox. The source is opened
// without following symlinks.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	Writable bool   `json:"writable"`
	// Why says where the mount came from: "cwd", "expose", "share".
	Why string `json:"why"`
}

// Limits are the job's resource limits; zero means none.
type Limits struct {
	// Rlimits the target sets on itself before execve, by name (e.g. "NOFILE") to the
	// soft=hard value.
	Rlimits map[string]uint64 `json:"rlimits,omitempty"`
	// TmpSize caps each writable tmpfs: /tmp, /dev/shm, $HOME (bytes).
	TmpSize uint64 `json:"tmpSize,omitempty"`

	// The rest is enforced by the parent (timers, the output pipes, the
	// cgroups); the init never looks at it.

	// WallTime, CPUTime and SilentTime (no output for that long) end the
	// job; durations in nanoseconds.
	WallTime   time.Duration `json:"wallTimeNs,omitempty"`
	CPUTime    time.Duration `json:"cpuTimeNs,omitempty"`
	SilentTime time.Duration `json:"silentTimeNs,omitempty"`
	// Memory (bytes) and Pids (processes, closet's init not counted) are
	// cgroup limits, with the rlimit fallbacks the parent chooses.
	Memory uint64 `json:"memory,omitempty"`
	Pids   uint64 `json:"pids,omitempty"`
	// Output is how many bytes of stdout+stderr are passed on; the job is
	// killed when it writes more.
	Output uint64 `json:"output,omitempty"`
	// Capture routes stdout and stderr through the parent, counted, even
	// without an output limit; Measure asks for cgroup accounting (peak
	// memory, CPU) even without a cgroup limit. Both serve reports.
	Capture bool `json:"capture,omitempty"`
	Measure bool `json:"measure,omitempty"`
	// Fallback allows the rlimit stand-ins where no cgroup can enforce
	// Memory or Pids: "rlimit" (RLIMIT_AS, RLIMIT_NPROC) or "" to refuse.
	Fallback string `json:"fallback,omitempty"`
}

// Validate checks what init relies on; a spec that fails here never runs.
func (s *Spec) Validate() error {
	if s.Version != Version {
		return fmt.Errorf("spec version %d, this closet speaks %d (mixed closet binaries?)", s.Version, Version)
	}
	var errs []error
	if len(s.Args) == 0 || s.Path == "" {
		errs = append(errs, errors.New("no command"))
	}
	for _, p := range []struct{ name, v string }{{"path", s.Path}, {"cwd", s.Cwd}, {"home", s.Home}} {
		if !filepath.IsAbs(p.v) || filepath.Clean(p.v) != p.v {
			errs = append(errs, fmt.Errorf("%s %q is not a clean absolute path", p.name, p.v))
		}
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Target) || filepath.Clean(m.Target) != m.Target {
			errs = append(errs, fmt.Errorf("mount %s -> %s: paths must be clean and absolute", m.Source, m.Target))
		}
		if m.Target == "/" || reserved(m.Target) {
			errs = append(errs, fmt.Errorf("mount %s -> %s: the target is managed by closet", m.Source, m.Target))
		}
	}
	for link := range s.Links {
		if !slices.Contains(linkNames, link) {
			errs = append(errs, fmt.Errorf("link %q: closet makes only %v", link, linkNames))
		}
	}
	for name := range s.Etc {
		if name == "" || strings.ContainsAny(name, "/") || name == "." || name == ".." {
			errs = append(errs, fmt.Errorf("etc file %q: a base name, please", name))
		}
	}
	if err := ValidHostname(s.Hostname); err != nil {
		errs = append(errs, err)
	}
	if s.UID < 0 || s.GID < 0 {
		errs = append(errs, errors.New("negative uid or gid"))
	}
	return errors.Join(errs...)
}

// ValidHostname accepts 1 to 64 letters, digits, '-', '.' and '_': what
// uname(2) holds is printed by shells and prompts on the user's terminal,
// so it must never carry control bytes or escape sequences.
func ValidHostname(h string) error {
	if h == "" || len(h) > 64 {
		return fmt.Errorf("hostname %q: want 1 to 64 characters", h)
	}
	for _, c := range []byte(h) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("hostname %q: only letters, digits, '-', '.' and '_', please", h)
		}
	}
	return nil
}

// Grading reports whether s is a grading configuration: the job can write
// nothing of the host (no writable bind: --cwd none or ro, no --share) and
// runs under limits. Such a job is someone's submission, run beside other
// tenants', and gets the grading seccomp profile (no inotify).
func (s *Spec) Grading() bool {
	for _, m := range s.Mounts {
		if m.Writable {
			return false
		}
	}
	l := s.Limits
	return l.Memory > 0 || l.Pids > 0 || l.WallTime > 0 || l.CPUTime > 0 || l.Output > 0 || l.TmpSize > 0 || len(l.Rlimits) > 0
}

// linkNames are the links a spec may ask for, sorted (the init makes the
// directory each lives in). A slice, static data: a map literal would be
// built by a package initialiser in every closet process and init stage.
var linkNames = []string{"/bin/sh", "/usr/bin/env"}

// Reserved targets: closet builds these itself, and a user mount on or
// below them would shadow the store view or the device nodes.
var reservedPrefixes = []string{"/nix", "/proc", "/dev", "/etc"}

func reserved(target string) bool {
	for _, r := range reservedPrefixes {
		if target == r || strings.HasPrefix(target, r+"/") {
			return true
		}
	}
	return false
}

// IsReserved reports whether target lies where closet builds the view.
func IsReserved(target string) bool { return reserved(target) }

// Encode writes s as JSON.
func (s *Spec) Encode(w io.Writer) error {
	return json.NewEncoder(w).Encode(s)
}

// Decode reads and validates a spec.
func Decode(r io.Reader) (*Spec, error) {
	var s Spec
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decode spec: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("invalid spec: %w", err)
	}
	return &s, nil
}

// Limit names: the keys of a report's limits and the name of the limit
// that ended a job.
const (
	LimitWall   = "wall-time"
	LimitCPU    = "cpu-time"
	LimitSilent = "silent-time"
	LimitOutput = "output"
	LimitMemory = "memory"
	LimitPids   = "pids"
)

// Mechanisms closet itself provides to enforce a limit; the cgroup ones
// are the cgroup package's names ("cgroup-v1", "cgroup-v2").
const (
	MechTimer     = "parent-timer"
	MechPipe      = "parent-pipe"
	MechRlimitAS  = "rlimit-as"
	MechRlimitCPU = "rlimit-cpu"
	// MechRlimitNproc holds --pids where the job has a host uid of its
	// own (internal/idmap) and no pids cgroup.
	MechRlimitNproc = "rlimit-nproc"
	MechProcPoll    = "parent-proc-poll"
)
