package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/closet-sandbox/closet/internal/check"
	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/resolve"
	"github.com/closet-sandbox/closet/internal/storepath"
)

func init() {
	register("check", newCheckCmd)
	register("__attack", newAttackCmd)
}

func newCheckCmd() *cobra.Command {
	var (
		asJSON, verbose, list bool
		only, leak, runFlags  []string
		raceRuns              int
	)
	cmd := &cobra.Command{
		Use:   "check [flags] [ROOT...]",
		Short: "Attack a sandbox on this host and report what got through",
		Long: `Run a battery of escape and abuse attempts inside a closet sandbox on this
host (store enumeration, other tenants' paths, /nix/var and the daemon
socket, host processes and files, ptrace, mounts, namespaces, 32-bit and x32
syscalls, io_uring, userfaultfd, bpf, keyrings, AF_ALG, TIOCSTI, setuid
bits, hard links into the store, a symlink race on a shared directory, a
fork bomb, memory bombs in the address space, a memfd and SysV segments,
filling /tmp, /dev/shm and $HOME (which share one --tmp-size), inotify on a
store file, flooding output, ...), then read the posture of a running target
from outside: uid and gid maps, capabilities of every thread, seccomp,
no_new_privs, namespaces, mounts and open fds.

inotify: a job watching a store file of its closure would see, live, when
other tenants' processes open it. closet run refuses inotify in a grading
configuration (--cwd none or ro, no --share, and a limit: --seccomp grading
is then chosen by itself), and the check attacks it in one.

One line per attempt: BLOCKED, ESCAPED, or SKIPPED (the attempt could not
be made, or is not applicable: the kernel itself lacks the mechanism, as a
control run outside any sandbox shows, e.g. int 0x80 on a kernel without
IA32 emulation), its name and the evidence; then the posture lines and a
summary. The ROOTs are the view the attempts run in
(default: the store path of sh on your PATH, or where sh is not from the
store, an empty view with closet's own binary as the only program). closet check runs closet run
as you, so run it as the user jobs run as. Limit flags of closet run
(--pids, --memory, --tmp-size, --output, --wall-time) are used for the
resource attempts when this closet has them.

Exit status: 0 everything was blocked, 1 something got through or the
posture is wrong, 125 the check itself could not run.`,
		Example: `  closet check
  closet check --json /nix/store/...-busybox
  closet check --only tiocsti --only i386-int80 ./result`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if list {
				for _, a := range check.Attacks() {
					fmt.Fprintf(cmd.OutOrStdout(), "%-22s %s\n", a[0], a[1])
				}
				return nil
			}
			if builtWithCgo {
				return withCode(exitcode.Sandbox, errors.New("this closet binary was built with cgo, so it needs the host's dynamic loader, and closet check runs it inside a sandbox that has none; rebuild it with CGO_ENABLED=0 go build ./cmd/closet (closet run works either way)"))
			}
			o, err := checkOptions(cmd, args, leak)
			if err != nil {
				return err
			}
			o.Only, o.RaceRuns, o.RunFlags = only, raceRuns, runFlags
			if verbose {
				o.Log = os.Stderr
			}
			rep, err := check.Run(cmd.Context(), o)
			if err != nil {
				return withCode(exitcode.Sandbox, err)
			}
			if asJSON {
				rep.WriteJSON(cmd.OutOrStdout())
			} else {
				rep.WriteText(cmd.OutOrStdout())
			}
			if !rep.OK() {
				return &exitError{code: 1, quiet: true}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVarP(&verbose, "verbose", "v", false, "say on stderr what the check does")
	f.BoolVar(&list, "list", false, "list the attempts and their threat ids, and run nothing")
	f.StringArrayVar(&only, "only", nil, "run only the attempt `NAME` (repeatable; \"posture\" for the posture report)")
	f.IntVar(&raceRuns, "race-runs", 20, "sandboxes to start during the symlink race")
	f.StringArrayVar(&leak, "leak", nil, "negative control: add `ROOT` to the view but count it as foreign, so the view attempts must report ESCAPED")
	f.MarkHidden("leak")
	f.StringArrayVar(&runFlags, "run-flag", nil, "negative control: add `FLAG` (e.g. --seccomp=off) to every closet run of the check")
	f.MarkHidden("run-flag")
	return cmd
}

// checkOptions resolves the roots and their closure, finds this binary,
// and picks the limit flags closet run has.
func checkOptions(cmd *cobra.Command, args, leak []string) (check.Options, error) {
	var o check.Options
	exe, err := os.Executable()
	if err != nil {
		return o, withCode(exitcode.Sandbox, fmt.Errorf("find the closet binary: %w", err))
	}
	st, err := openStore("")
	if err != nil {
		return o, withCode(exitcode.Sandbox, err)
	}
	defer st.Close()
	ctx := cmd.Context()
	var roots []storepath.Path
	if len(args) == 0 {
		// The view of sh from the store, where PATH has one; else (sh is
		// the host's, as on Debian or Fedora with Nix) an empty view, with
		// closet's own static binary as the only program.
		wd, _ := os.Getwd()
		r := &resolve.Resolver{Path: os.Getenv("PATH"), Dir: wd}
		if p, _, err := r.Command("sh"); err == nil {
			roots = []storepath.Path{p}
		}
	} else if roots, err = resolveRoots(ctx, st, "", args); err != nil {
		return o, withCode(exitcode.Sandbox, err)
	}
	c := &closure.Closure{}
	if len(roots) > 0 {
		if c, err = st.Closure(ctx, roots, false); err != nil {
			return o, withCode(exitcode.Sandbox, err)
		}
	}
	o.Exe = exe
	for _, r := range roots {
		o.Roots = append(o.Roots, string(r))
	}
	for _, p := range c.Paths {
		o.Closure = append(o.Closure, string(p.Path))
	}
	o.Leak = leak
	o.Limits, o.LimitNames = limitFlags()
	return o, nil
}

// limitFlags returns the limit flags this closet's run command has, each
// with a value it accepts, for the resource attempts.
func limitFlags() (flags, names []string) {
	want := []struct {
		name   string
		values []string
	}{
		{"pids", []string{"256"}},
		// 1G: without a cgroup, closet falls back to RLIMIT_AS, and the Go
		// attacker needs about 700 MiB of address space to start at all.
		{"memory", []string{"1G", "1GiB", "1073741824"}},
		{"tmp-size", []string{"64M", "64MiB", "67108864"}},
		{"output", []string{"1M", "1MiB", "1048576"}},
		{"wall-time", []string{"60s", "60"}},
	}
	for _, w := range want {
		for _, v := range w.values {
			fl := newRunCmd().Flags().Lookup(w.name)
			if fl == nil {
				break
			}
			if fl.Value.Set(v) == nil {
				flags = append(flags, "--"+w.name+"="+v)
				names = append(names, w.name)
				break
			}
		}
	}
	return flags, names
}

// newAttackCmd is the hidden entry point the check runs inside the
// sandbox: `closet __attack MODE PARAMS [NAMES...]`.
func newAttackCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "__attack",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			if code := check.Inside(args); code != 0 {
				return &exitError{code: code, quiet: true}
			}
			return nil
		},
	}
}
