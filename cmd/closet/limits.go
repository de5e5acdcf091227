package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/job"
	"github.com/closet-sandbox/closet/internal/report"
)

// limitOpts are the resource-limit and report flags of run and shell.
type limitOpts struct {
	wallTime, cpuTime, silentTime string
	memory, output, fileSize      string
	tmpSize                       string
	pids, openFiles               string
	cgroup                        string
	reportFile, reportFormat      string

	dest *report.Dest // opened by apply, before anything runs
}

func (l *limitOpts) addFlags(cmd *cobra.Command) {
	cmd.Long += limitsHelp
	f := cmd.Flags()
	f.StringVar(&l.wallTime, "wall-time", "", "end the job after `T` of real time (1.5, 2s, 500ms, 1m)")
	f.StringVar(&l.cpuTime, "cpu-time", "", "end the job after `T` of CPU time")
	f.StringVar(&l.silentTime, "silent-time", "", "end the job when it writes nothing for `T`")
	f.StringVar(&l.memory, "memory", "", "limit the job's memory to `SIZE` (512k, 64M, 1.5G)")
	f.StringVar(&l.pids, "pids", "", "limit the job to `N` processes and threads (cgroup, or RLIMIT_NPROC with host ids of its own)")
	f.StringVar(&l.output, "output", "", "pass on at most `SIZE` bytes of stdout+stderr; end the job when it writes more")
	f.StringVar(&l.fileSize, "file-size", "", "largest file the job may write (`SIZE`, RLIMIT_FSIZE)")
	f.StringVar(&l.openFiles, "open-files", "", "open files per process (`N`, RLIMIT_NOFILE)")
	f.StringVar(&l.tmpSize, "tmp-size", "", "size of each writable tmpfs, /tmp, /dev/shm and $HOME (`SIZE`; default: --memory when given)")
	f.StringVar(&l.cgroup, "cgroup", "auto", "--memory where no cgroup can hold it: auto (RLIMIT_AS instead, and the report says so) or require (refuse to run)")
	f.StringVar(&l.reportFile, "report", "", "write the verdict and figures to `FILE` after the job")
	f.StringVar(&l.reportFormat, "report-format", "json", "--report format: json, or isolate (isolate's --meta key:value file)")
}

// apply parses the flags into req.Limits and opens the report's
// directory. Nothing has run yet.
func (l *limitOpts) apply(req *job.Request) error {
	var errs []error
	note := func(flag, v string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", flag, v, err))
		}
	}
	dur := func(flag, v string) time.Duration {
		if v == "" {
			return 0
		}
		d, err := job.ParseDuration(v)
		note(flag, v, err)
		return d
	}
	size := func(flag, v string) uint64 {
		if v == "" {
			return 0
		}
		n, err := job.ParseSize(v)
		note(flag, v, err)
		return n
	}
	count := func(flag, v string) uint64 {
		if v == "" {
			return 0
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil || n == 0 {
			err = errors.New("want a whole number from 1 (leave the flag out for no limit)")
		}
		note(flag, v, err)
		return n
	}
	lim := &req.Limits
	lim.WallTime = dur("wall-time", l.wallTime)
	lim.CPUTime = dur("cpu-time", l.cpuTime)
	lim.SilentTime = dur("silent-time", l.silentTime)
	lim.Memory = size("memory", l.memory)
	lim.Output = size("output", l.output)
	lim.FileSize = size("file-size", l.fileSize)
	lim.TmpSize = size("tmp-size", l.tmpSize)
	lim.Pids = count("pids", l.pids)
	lim.OpenFiles = count("open-files", l.openFiles)
	switch l.cgroup {
	case "auto":
	case "require":
		lim.RequireCgroup = true
	default:
		errs = append(errs, fmt.Errorf("--cgroup %q: want auto or require", l.cgroup))
	}
	switch l.reportFormat {
	case "json", "isolate":
	default:
		// Without a format there is no report to write the refusal in.
		return fmt.Errorf("--report-format %q: want json or isolate", l.reportFormat)
	}
	if l.reportFile != "" && l.dest == nil {
		req.Capture = true
		// The directory is opened now, before anything runs: the job may
		// be able to write there. Even a refusal below is reported in it.
		d, err := report.OpenDest(l.reportFile)
		if err != nil {
			return fmt.Errorf("--report: %w", err)
		}
		l.dest = d
	}
	return errors.Join(errs...)
}

// refused reports a job that could not even be prepared: an XX report when
// one was asked for, and closet's exit status.
func (l *limitOpts) refused(err error) error {
	code := exitcode.Sandbox
	if errors.Is(err, job.ErrNotFound) {
		code = exitcode.NotFound
	}
	r := &report.Report{Status: report.XX, Message: err.Error(), ClosetExit: code, Limits: map[string]report.Limit{}}
	if werr := l.write(r); werr != nil {
		fmt.Fprintf(os.Stderr, "closet: %v\n", werr)
	}
	return withCode(code, err)
}

// conclude writes the report when asked (the job's processes are all gone
// by now) and returns closet's exit status.
func (l *limitOpts) conclude(r *report.Report) error {
	exit := exitFor(r)
	if err := l.write(r); err != nil {
		fmt.Fprintf(os.Stderr, "closet: %v\n", err)
		if exit == nil {
			exit = &exitError{code: exitcode.Sandbox, quiet: true}
		}
	}
	return exit
}

func (l *limitOpts) write(r *report.Report) error {
	if l.dest == nil {
		return nil
	}
	defer l.dest.Close()
	return l.dest.Write(r, l.reportFormat)
}
