package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/report"
	"github.com/closet-sandbox/closet/internal/sandbox"
	"github.com/closet-sandbox/closet/internal/sandbox/execstage"
	"github.com/closet-sandbox/closet/internal/spec"
	"github.com/closet-sandbox/closet/internal/storepath"
)

// limitOpts are the resource-limit and report flags of run and shell.
type limitOpts struct {
	wallTime, cpuTime, silentTime string
	memory, output, fileSize      string
	tmpSize                       string
	pids, openFiles               string
	cgroup                        string
	reportFile, reportFormat      string

	// set by apply
	lim  spec.Limits
	dest *report.Dest
}

// limitsHelp is appended to run's long help.
const limitsHelp = `

Limits, none unless given. SIZE is bytes, or a number with k, M, G or T
(powers of 1024; fractions allowed): 512k, 64M, 1.5G. T is seconds (1.5) or
a duration: 2s, 500ms, 1m. Zero and negative values are refused.

  --wall-time T     real time from the target's start     closet's timer
  --cpu-time T      CPU time of all the job's processes   the cgroup (else /proc),
                                                          polled; RLIMIT_CPU behind
  --silent-time T   time without any output               closet's timer
  --memory SIZE     memory of the job, closet's init's    the cgroup; without one
                    few MB included                       RLIMIT_AS, which caps each
                                                          process's address space
                                                          instead (--cgroup require
                                                          refuses that)
  --pids N          processes and threads of the job      the cgroup only
  --output SIZE     bytes of stdout+stderr passed on;     closet's pipes
                    writing more ends the job
  --file-size SIZE  largest file the job writes           RLIMIT_FSIZE
  --open-files N    open files per process (16 or more)   RLIMIT_NOFILE
  --tmp-size SIZE   each writable tmpfs: /tmp, /dev/shm,  their size=
                    $HOME (default: --memory, if given)

cgroups: closet makes the job's cgroups beneath its own, places the job in
them before any of its code runs, and removes them after: a delegated cgroup
v2, or the v1 hierarchies as root. --output, --silent-time and --report
carry the job's stdout and stderr through pipes (so no terminal).

The verdict (--report FILE, as JSON or, with --report-format isolate, as
isolate's --meta key:value file) is written once every process of the job
is gone: OK, RE (non-zero exit), SG (a signal), TO (wall, CPU or silent
time), ML (memory), OL (output), XX (the sandbox failed, not the job), with
the figures and the mechanism that enforced each limit. closet's own exit
status follows the verdict, with or without --report:

  OK 0    RE the job's status    SG 128+signal    TO 124    ML 123    OL 122
  XX 125 (126: the command could not be executed, 127: it was not found)
  1: bad input, such as a nonsense limit (nothing ran, no report)`

func (l *limitOpts) addFlags(cmd *cobra.Command) {
	cmd.Long += limitsHelp
	f := cmd.Flags()
	f.StringVar(&l.wallTime, "wall-time", "", "end the job after `T` of real time (1.5, 2s, 500ms, 1m)")
	f.StringVar(&l.cpuTime, "cpu-time", "", "end the job after `T` of CPU time")
	f.StringVar(&l.silentTime, "silent-time", "", "end the job when it writes nothing for `T`")
	f.StringVar(&l.memory, "memory", "", "limit the job's memory to `SIZE` (512k, 64M, 1.5G)")
	f.StringVar(&l.pids, "pids", "", "limit the job to `N` processes and threads (cgroup only)")
	f.StringVar(&l.output, "output", "", "pass on at most `SIZE` bytes of stdout+stderr; end the job when it writes more")
	f.StringVar(&l.fileSize, "file-size", "", "largest file the job may write (`SIZE`, RLIMIT_FSIZE)")
	f.StringVar(&l.openFiles, "open-files", "", "open files per process (`N`, RLIMIT_NOFILE)")
	f.StringVar(&l.tmpSize, "tmp-size", "", "size of each writable tmpfs, /tmp, /dev/shm and $HOME (`SIZE`; default: --memory when given)")
	f.StringVar(&l.cgroup, "cgroup", "auto", "--memory where no cgroup can hold it: auto (RLIMIT_AS instead, and the report says so) or require (refuse to run)")
	f.StringVar(&l.reportFile, "report", "", "write the verdict and figures to `FILE` after the job")
	f.StringVar(&l.reportFormat, "report-format", "json", "--report format: json, or isolate (isolate's --meta key:value file)")
}

// apply checks and parses the flags into s.Limits. Nothing has run yet.
func (l *limitOpts) apply(s *spec.Spec, tty string) error {
	lim := spec.Limits{Rlimits: map[string]uint64{}}
	var errs []error
	dur := func(flag, v string) time.Duration {
		if v == "" {
			return 0
		}
		d, err := parseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", flag, v, err))
		}
		return d
	}
	size := func(flag, v string, least uint64) uint64 {
		if v == "" {
			return 0
		}
		n, err := parseSize(v)
		if err == nil && n < least {
			err = fmt.Errorf("at least %d bytes, please", least)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", flag, v, err))
		}
		return n
	}
	count := func(flag, v string, least uint64) uint64 {
		if v == "" {
			return 0
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		switch {
		case err != nil:
			err = errors.New("want a whole number")
		case n < least:
			err = fmt.Errorf("want at least %d (leave the flag out for no limit)", least)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", flag, v, err))
		}
		return n
	}
	lim.WallTime = dur("wall-time", l.wallTime)
	lim.CPUTime = dur("cpu-time", l.cpuTime)
	lim.SilentTime = dur("silent-time", l.silentTime)
	lim.Memory = size("memory", l.memory, 1<<20)
	lim.Output = size("output", l.output, 1)
	lim.TmpSize = size("tmp-size", l.tmpSize, 1)
	if lim.TmpSize == 0 && lim.Memory > 0 {
		// tmpfs pages are memory the job holds outside any process: with
		// no cgroup to charge them to, RLIMIT_AS would not see them.
		lim.TmpSize = lim.Memory
	}
	lim.Pids = count("pids", l.pids, 1)
	if n := size("file-size", l.fileSize, 1); n > 0 {
		lim.Rlimits["FSIZE"] = n
	}
	// The exec stage opens a few files of its own (Landlock, seccomp)
	// after the rlimits are set.
	if n := count("open-files", l.openFiles, 16); n > 0 {
		lim.Rlimits["NOFILE"] = n
	}
	switch l.cgroup {
	case "auto":
		lim.Fallback = "rlimit"
	case "require":
	default:
		errs = append(errs, fmt.Errorf("--cgroup %q: want auto or require", l.cgroup))
	}
	switch l.reportFormat {
	case "json", "isolate":
	default:
		errs = append(errs, fmt.Errorf("--report-format %q: want json or isolate", l.reportFormat))
	}
	if l.reportFile != "" {
		lim.Capture, lim.Measure = true, true
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(lim.Rlimits) == 0 {
		lim.Rlimits = nil
	}
	if lim.Capture || lim.Output > 0 || lim.SilentTime > 0 {
		// Counting output needs pipes, not a terminal.
		if tty == "always" {
			return errors.New("--tty always cannot be combined with --output, --silent-time or --report (they read the job's output through pipes)")
		}
		s.TTY = false
	}
	if l.reportFile != "" {
		// The directory is opened now: the job may be able to write there.
		d, err := report.OpenDest(l.reportFile)
		if err != nil {
			return fmt.Errorf("--report: %w", err)
		}
		l.dest = d
	}
	l.lim = lim
	s.Limits = lim
	return nil
}

// parseDuration reads 1.5 (seconds), 2s, 500ms, 1m, 1m30s: positive and
// finite.
func parseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	var d time.Duration
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f > 1e9 {
			return 0, errors.New("not a usable number of seconds")
		}
		d = time.Duration(f * float64(time.Second))
	} else {
		if d, err = time.ParseDuration(v); err != nil {
			return 0, errors.New("want seconds (1.5) or a duration (2s, 500ms, 1m)")
		}
	}
	if d <= 0 {
		return 0, errors.New("want a positive time (leave the flag out for no limit)")
	}
	return d, nil
}

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}

// parseSize reads 512k, 64M, 1G, 1.5G, or plain bytes; units are powers of
// 1024.
func parseSize(v string) (uint64, error) {
	s := strings.TrimSpace(v)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	mul, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, errors.New("want a size: bytes, or a number with k, M, G or T (512k, 64M, 1.5G)")
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, errors.New("want a size: bytes, or a number with k, M, G or T (512k, 64M, 1.5G)")
	}
	n := f * mul
	if n < 1 {
		return 0, errors.New("want a positive size (leave the flag out for no limit)")
	}
	if n >= 1<<62 {
		return 0, errors.New("too large")
	}
	return uint64(n), nil
}

// conclude turns the sandbox's outcome into the verdict, writes the report
// when asked (the job's processes are all gone by now), and returns
// closet's exit status.
func (l *limitOpts) conclude(ctx context.Context, o *runOpts, st *closure.Store, roots []storepath.Path, s *spec.Spec, out *sandbox.Outcome, runErr error) error {
	j := report.Job{SetupErr: runErr, CPULimit: l.lim.CPUTime}
	r := &report.Report{Limits: l.limitsReport(out)}
	if out != nil {
		o.logf("target ended: exit %d, signal %d, wall %v", out.Result.Code, out.Result.Signal, out.Wall.Round(time.Microsecond))
		res := out.Result
		j.Exited, j.Code, j.Signal, j.Limit = res.Exited, res.Code, res.Signal, out.Limit
		j.CPU = time.Duration(res.UserUsec+res.SysUsec) * time.Microsecond
		switch {
		case out.Cgroup.HasCPU:
			j.CPU = out.Cgroup.CPU
		case out.KillCPU > j.CPU:
			j.CPU = out.KillCPU
		}
		r.Exited, r.Signal = res.Exited, res.Signal
		if res.Exited {
			r.ExitCode = res.Code
		}
		r.Killed, r.Limit = out.Killed, out.Limit
		r.CPUTime = j.CPU.Seconds()
		r.WallTime = out.Ended.Sub(out.Started).Seconds()
		r.MaxRSS = uint64(max(res.MaxRSSKiB, 0)) * 1024
		r.PeakMemory = out.Cgroup.PeakMemory
		r.OOMKilled = out.Cgroup.OOMKills > 0
		r.Output, r.OutputKept = out.Output, out.OutputKept
	}
	r.Status, r.Message = report.Decide(j)
	for name, lim := range r.Limits {
		if strings.HasPrefix(lim.Mechanism, "rlimit-as") {
			fmt.Fprintf(os.Stderr, "closet: --%s was enforced as RLIMIT_AS (each process's address space), not as the job's memory: no cgroup could hold it here\n", name)
		}
	}
	var exit error
	switch {
	case runErr != nil:
		exit = setupErr(runErr)
		var ee *exitError
		if errors.As(exit, &ee) {
			r.ClosetExit = ee.code
		}
	default:
		r.ClosetExit = report.ExitCode(r.Status, r.ExitCode, r.Signal)
		if r.Status != report.OK && r.Status != report.RE && r.Status != report.SG {
			fmt.Fprintf(os.Stderr, "closet: %s: %s\n", r.Status, r.Message)
		}
		if r.ClosetExit != 0 {
			exit = &exitError{code: r.ClosetExit, quiet: true}
		}
	}
	if l.dest != nil {
		r.Confinement = confinement(s)
		r.Closure = report.Closure{Hash: s.ClosureHash, Paths: len(s.Store)}
		if c, err := st.Closure(ctx, roots, false); err == nil {
			r.Closure.Size = c.NarSize()
		}
		err := l.dest.Write(r, l.reportFormat)
		l.dest.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "closet: %v\n", err)
			if exit == nil {
				exit = &exitError{code: exitSandbox, quiet: true}
			}
		}
	}
	return exit
}

// limitsReport lists each limit given, its value and its mechanism.
func (l *limitOpts) limitsReport(out *sandbox.Outcome) map[string]report.Limit {
	m := map[string]report.Limit{}
	mech := func(name string) string {
		if out != nil && out.Enforced[name] != "" {
			return out.Enforced[name]
		}
		return "not set up"
	}
	add := func(name, value, mechanism string) {
		if value != "" {
			m[name] = report.Limit{Value: value, Mechanism: mechanism}
		}
	}
	add(sandbox.LimitWall, l.wallTime, mech(sandbox.LimitWall))
	add(sandbox.LimitCPU, l.cpuTime, mech(sandbox.LimitCPU))
	add(sandbox.LimitSilent, l.silentTime, mech(sandbox.LimitSilent))
	add(sandbox.LimitMemory, l.memory, mech(sandbox.LimitMemory))
	add(sandbox.LimitPids, l.pids, mech(sandbox.LimitPids))
	add(sandbox.LimitOutput, l.output, mech(sandbox.LimitOutput))
	add("file-size", l.fileSize, "rlimit-fsize")
	add("open-files", l.openFiles, "rlimit-nofile")
	add("tmp-size", l.tmpSize, "tmpfs-size")
	return m
}

// confinement describes the fences of s for the report.
func confinement(s *spec.Spec) report.Confinement {
	c := report.Confinement{Seccomp: s.Seccomp, Landlock: "off", Network: "own"}
	if s.Network {
		c.Network = "host"
	}
	if s.Landlock != "off" {
		if abi := execstage.LandlockABI(); abi > 0 {
			c.Landlock = fmt.Sprintf("abi %d", abi)
		} else {
			c.Landlock = "unavailable"
		}
	}
	return c
}
