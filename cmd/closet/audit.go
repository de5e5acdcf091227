package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/audit"
	"github.com/closet-sandbox/closet/internal/exitcode"
)

// exitAuditFindings is audit's own status: the audit ran, and at least one
// finding reached --fail-on. It sits outside the codes in internal/exitcode:
// only audit gives it.
const exitAuditFindings = 3

func init() { register("audit", newAuditCmd) }

type auditFlags struct {
	root       string
	json       bool
	sarif      bool
	failOn     string
	minSev     string
	storeScan  bool
	probeShell string
	color      string
	rules      bool
}

func newAuditCmd() *cobra.Command {
	var fl auditFlags
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Report what on this host lets one Nix user see or become another",
		Long: `closet audit reads this host's Nix configuration, the modes of the store,
the Nix state and the daemon socket, and the kernel's hardening knobs, and
reports what lets one user of a shared Nix host see or become another:
trusted users (effectively root), builds without a sandbox, unsigned paths,
host files exposed to every build, a daemon socket anyone can reach or
replace, missing kernel protections. With --store-scan it also walks the
whole store for files every user can read that look like secrets, and names
them by path and rule, never by content.

nix.conf is read the way Nix reads it: NIX_CONF_DIR, NIX_USER_CONF_FILES,
XDG_CONFIG_HOME/XDG_CONFIG_DIRS and NIX_CONFIG; include and !include;
extra-NAME; indented continuation lines; Nix's defaults for what is not set.
Run it as root (sudo) to read everything the daemon reads.

Every finding has a severity (info, low, medium, high, critical), a stable
id (NIX001...; list them with --rules), the evidence (file and line, or the
command that showed it), why it matters and the fix.

Exit status:
  0   no finding reached --fail-on
  3   at least one finding reached --fail-on (default: high)
  1   the audit could not run (for example --root is not a directory)
  64  wrong flags`,
		Example: `  sudo closet audit                      audit this host
  sudo closet audit --store-scan         also look for secrets in /nix/store
  closet audit --fail-on medium --sarif > closet.sarif
                                         for CI code scanning
  closet audit --json | jq '.findings[] | select(.severity == "high")'
  closet audit --root /mnt/image         audit a mounted system image
  closet audit --rules                   list every rule id`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runAudit(cmd, fl) },
	}
	f := cmd.Flags()
	f.StringVar(&fl.root, "root", "/", "audit the system under `DIR` (a mounted image or container root) instead of /")
	f.BoolVar(&fl.json, "json", false, "print the report as JSON")
	f.BoolVar(&fl.sarif, "sarif", false, "print the report as SARIF 2.1.0, for code-scanning services")
	f.StringVar(&fl.failOn, "fail-on", "high", "exit 3 when a finding is at least `SEVERITY`: info, low, medium, high, critical, or never")
	f.StringVar(&fl.minSev, "min-severity", "info", "show only findings at least `SEVERITY` (the table only; JSON and SARIF keep all)")
	f.BoolVar(&fl.storeScan, "store-scan", false, "also walk the whole store for world-readable secrets (keys, .env, tokens)")
	f.StringVar(&fl.color, "color", "auto", "colour the table: `auto` (on a terminal, unless NO_COLOR is set), always or never")
	f.BoolVar(&fl.rules, "rules", false, "list every rule (id, severity, title) and exit")
	f.StringVar(&fl.probeShell, "probe-daemon", "", "also build a probe through the nix-daemon, as closet run --nix does, with the POSIX sh `SH` inside a store path the daemon has (e.g. /nix/store/...-busybox/bin/sh): are builds really sandboxed, is this user untrusted?")
	return cmd
}

func runAudit(cmd *cobra.Command, fl auditFlags) error {
	out := cmd.OutOrStdout()
	if fl.rules {
		for _, r := range audit.Rules {
			fmt.Fprintf(out, "%s  %-8s  %s\n", r.ID, r.Severity, r.Title)
		}
		return nil
	}
	if fl.json && fl.sarif {
		return withCode(exitcode.Usage, errors.New("--json and --sarif both given: choose one output format"))
	}
	failOn, never := audit.Critical+1, false
	if strings.EqualFold(fl.failOn, "never") {
		never = true
	} else {
		s, err := audit.ParseSeverity(fl.failOn)
		if err != nil {
			return withCode(exitcode.Usage, fmt.Errorf("--fail-on: %w, or never", err))
		}
		failOn = s
	}
	minSev, err := audit.ParseSeverity(fl.minSev)
	if err != nil {
		return withCode(exitcode.Usage, fmt.Errorf("--min-severity: %w", err))
	}
	if fl.color != "auto" && fl.color != "always" && fl.color != "never" {
		return withCode(exitcode.Usage, fmt.Errorf("--color %q: use auto, always or never", fl.color))
	}

	h := audit.LocalHost()
	if root := filepath.Clean(fl.root); root != "/" {
		abs, err := filepath.Abs(root)
		if err != nil {
			return withCode(exitcode.BadInput, fmt.Errorf("--root %s: %w", fl.root, err))
		}
		h.Root = abs
		h.ProcSys = ""          // the image's proc/sys, if it has one
		h.NixVersion = nil      // do not run the auditing machine's nix
		h.Env = auditEnv(h.Env) // keep only what says where Nix looks
	}

	opts := audit.Options{StoreScan: fl.storeScan, ProbeShell: fl.probeShell}
	stderr := cmd.ErrOrStderr()
	if fl.storeScan && isTerminal(stderr) {
		opts.Scan.Progress = progressLine(stderr)
	}
	rep, err := audit.Run(context.Background(), h, opts)
	if err != nil {
		return withCode(exitcode.BadInput, err)
	}

	switch {
	case fl.json:
		err = audit.WriteJSON(out, rep)
	case fl.sarif:
		err = audit.WriteSARIF(out, rep, closetVersion())
	default:
		o := audit.TableOptions{Min: minSev}
		o.Color = fl.color == "always" || (fl.color == "auto" && isTerminal(out) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb")
		if isTerminal(out) {
			o.Width = terminalWidth(out)
		}
		err = audit.WriteTable(out, rep, o)
		if err == nil && !never {
			if n := rep.AtLeast(failOn); n > 0 {
				fmt.Fprintf(out, "\n%d finding(s) at %s or above (--fail-on %s): exit status %d.\n", n, failOn, failOn, exitAuditFindings)
			}
		}
	}
	if err != nil {
		return withCode(exitcode.BadInput, fmt.Errorf("write report: %w", err))
	}
	if !never && rep.AtLeast(failOn) > 0 {
		return &exitError{code: exitAuditFindings, quiet: true}
	}
	return nil
}

// auditEnv keeps the variables that tell Nix where its files are. With
// --root the auditing user's HOME means nothing inside the image, so it
// goes too.
func auditEnv(env map[string]string) map[string]string {
	keep := map[string]string{}
	for _, k := range []string{"NIX_CONF_DIR", "NIX_USER_CONF_FILES", "NIX_STORE_DIR", "NIX_STATE_DIR", "NIX_LOG_DIR", "NIX_DAEMON_SOCKET_PATH"} {
		if v, ok := env[k]; ok {
			keep[k] = v
		}
	}
	return keep
}

func closetVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return ""
}

// fdWriter is satisfied by *os.File.
type fdWriter interface{ Fd() uintptr }

func isTerminal(w io.Writer) bool {
	f, ok := w.(fdWriter)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func terminalWidth(w io.Writer) int {
	if f, ok := w.(fdWriter); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 100
}

// progressLine redraws one status line on a terminal with \r and clears it
// when the scan ends.
func progressLine(w io.Writer) func(audit.ScanProgress) {
	return func(p audit.ScanProgress) {
		if p.Final {
			fmt.Fprint(w, "\r\x1b[K")
			return
		}
		pct := 0.0
		if p.Total > 0 {
			pct = 100 * float64(p.Done) / float64(p.Total)
		}
		fmt.Fprintf(w, "\r\x1b[Kscanning store: %d/%d paths (%.0f%%), %d files, %d findings", p.Done, p.Total, pct, p.Files, p.Findings)
	}
}
