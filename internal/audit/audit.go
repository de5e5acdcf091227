package audit

import (
	"context"
	"fmt"
	"os"
)

// Options selects the optional parts of an audit.
type Options struct {
	// StoreScan also walks the whole store for readable secrets.
	StoreScan bool
	Scan      ScanOptions
	// ProbeShell, when set, is a POSIX sh inside a store path the daemon
	// has: the audit then builds a probe through the nix-daemon at
	// DaemonSocket (as closet run --nix does before it serves a job) to see
	// whether builds are really sandboxed and the caller untrusted.
	ProbeShell   string
	DaemonSocket string
}

// Report is the outcome of an audit.
type Report struct {
	Root     string         `json:"root"`
	Files    []ConfFile     `json:"config_files"`
	Findings []Finding      `json:"findings"`
	Summary  map[string]int `json:"summary"`
	Scan     *ScanStats     `json:"store_scan,omitempty"`
}

// Max is the highest severity among the findings, and false when there are
// none.
func (r *Report) Max() (Severity, bool) {
	if len(r.Findings) == 0 {
		return Info, false
	}
	return r.Findings[0].Severity, true // sorted worst first
}

// AtLeast counts the findings of severity s or worse.
func (r *Report) AtLeast(s Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity >= s {
			n++
		}
	}
	return n
}

// Run audits h. It fails only when the host cannot be audited at all (its
// root is not a directory, or a requested store scan cannot start);
// everything else it sees becomes a finding.
func Run(ctx context.Context, h *Host, opts Options) (*Report, error) {
	root := h.root()
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("audit root %s: %w", root, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("audit root %s is not a directory: pass a directory that stands for / (a mounted image or container root)", root)
	}

	k := &checker{h: h, c: LoadConfig(h)}
	// Facts first: later judgements depend on them.
	k.detectMultiUser()
	k.checkUserNamespaces()

	k.checkConfIssues()
	k.checkConfFiles()
	k.checkSandbox()
	k.checkAllowedUsers()
	k.checkTrustedUsers()
	k.checkBuildUsersGroup()
	k.checkSignatures()
	k.checkSigningKeys()
	k.checkSandboxPaths()
	k.checkBoolSettings()
	k.checkBuildSettings()
	k.checkAutoAllocate()
	k.checkHooks()
	k.checkCredentials()
	k.checkNixVersion(ctx)

	k.checkDaemonSocket()
	if opts.ProbeShell != "" {
		k.probeDaemon(ctx, opts.DaemonSocket, opts.ProbeShell)
	}
	k.checkStore()
	k.checkStateDirs()

	k.checkKernelKnobs()

	rep := &Report{Root: root, Files: k.c.Files}
	if opts.StoreScan {
		dir := h.path(k.storeDir(), true)
		fs, stats, err := ScanStore(ctx, dir, opts.Scan)
		if err != nil {
			return nil, fmt.Errorf("%w; run without --store-scan, or point --root at a tree with a store", err)
		}
		k.out = append(k.out, fs...)
		rep.Scan = &stats
	}
	sortFindings(k.out)
	rep.Findings = k.out
	rep.Summary = map[string]int{}
	for _, n := range severityNames {
		rep.Summary[n] = 0
	}
	for _, f := range k.out {
		rep.Summary[f.Severity.String()]++
	}
	return rep, nil
}
