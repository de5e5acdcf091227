package resolve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// Kinds of failure when Nix realises an installable; the *Error that wraps
// them names the installable or the flag.
var (
	ErrNoNix        = errors.New("the nix command-line tools are not on PATH")
	ErrNix          = errors.New("nix could not realise it")
	ErrNeedsNetwork = errors.New("nix needs the network for it, and could not reach it")
	ErrUsage        = errors.New("bad combination of flags")
)

// Installables is what a user names the way Nix users do. closet run and
// closet shell take them beside store paths, links and commands:
//
//	closet run .#app path:/src#test nixpkgs#hello -- CMD   Args (flakes)
//	closet run /nix/store/…-x.drv^out -- CMD               Args (derivation outputs)
//	closet run -f FILE [-A ATTR]... -- CMD                  File, Attrs
//	closet run --expr EXPR [-A ATTR]... -- CMD              Expr, Attrs
//
// Which positional arguments are installables is decided by IsInstallable,
// never by what exists on disk.
type Installables struct {
	// Args are installables in the nix CLI's syntax: flake references
	// (".#app", "path:/dir#pkg", "nixpkgs#hello") and derivation outputs
	// ("/nix/store/…-x.drv^out", "DRV^out,dev", "DRV^*"). A derivation
	// may be named by a link into the store (./x.drv^out).
	Args []string
	// File is -f FILE: a Nix expression file (or a directory with
	// default.nix), realised with nix-build semantics: a function is called
	// with its defaults, and without Attrs the whole value is built.
	File string
	// Expr is --expr EXPR: the same, for an expression given inline.
	Expr string
	// Attrs are -A ATTR: attribute paths selected in File's or Expr's value.
	Attrs []string
	// Nix is the path of the caller's nix binary. Empty: nix (and
	// nix-build, nix-store, nix-instantiate) are looked up on the
	// Resolver's Path; set: the legacy commands are taken from its directory.
	Nix string
	// Env is the environment nix runs with: the caller's, so that its
	// configuration (NIX_CONFIG, NIX_REMOTE, HOME for the flake cache)
	// applies. Nothing of closet's own process environment is added.
	Env []string
}

// flakeSchemes are the URL schemes of flake references (the nix manual's
// "Flake reference attributes"); an argument starting with one of them is a
// flake reference even without a '#'.
var flakeSchemes = []string{
	"path:", "flake:", "github:", "gitlab:", "sourcehut:",
	"git+", "hg+", "tarball+", "file+",
}

// IsInstallable reports whether a positional argument of closet run/shell
// is a Nix installable rather than a store path, link or command:
//
//   - it contains '#' (a flake output: ".#app", "nixpkgs#hello"), or
//   - it contains '^' (a derivation's outputs: "x.drv^out", "x.drv^*"), or
//   - it starts with a flake URL scheme ("path:/dir", "github:o/r").
//
// A store path never contains '#' or '^' (Nix does not allow them in store
// path names), so no store path is taken for an installable. A host file
// whose name contains '#' or '^' is always taken for an installable; to use
// such a link, rename it. A bare flake name without '#' ("nixpkgs") is a
// command name: write nixpkgs#default or flake:nixpkgs.
func IsInstallable(arg string) bool {
	if strings.ContainsAny(arg, "#^") {
		return true
	}
	for _, s := range flakeSchemes {
		if strings.HasPrefix(arg, s) {
			return true
		}
	}
	return false
}

// drvOutputs splits "DRV^OUT1,OUT2" (or "DRV^*") when the part before '^'
// is not a flake reference.
func drvOutputs(arg string) (drv string, outs []string, ok bool) {
	drv, spec, ok := strings.Cut(arg, "^")
	if !ok || strings.Contains(drv, "#") {
		return "", nil, false
	}
	return drv, strings.Split(spec, ","), true
}

// Realise realises ins with the caller's own nix, so the daemon's trust
// rules (allowed-users, sandbox, substituters) apply to the caller and not
// to closet, and returns the output store paths: the roots whose closure
// the job gets. Either all realise or the first failure is returned.
//
// The outputs are not GC-rooted by this call (nix runs with --no-link);
// the caller roots them with the job's closure right after.
func (r *Resolver) Realise(ctx context.Context, ins Installables) ([]storepath.Path, error) {
	var out []string
	switch {
	case ins.File != "" && ins.Expr != "":
		return nil, &Error{Arg: "-f " + ins.File, Err: fmt.Errorf("%w: -f and --expr both given", ErrUsage), Hint: "name one expression"}
	case len(ins.Attrs) > 0 && ins.File == "" && ins.Expr == "":
		return nil, &Error{Arg: "-A " + ins.Attrs[0], Err: fmt.Errorf("%w: -A selects from -f FILE or --expr EXPR, and neither was given", ErrUsage),
			Hint: "add -f FILE (nix-build semantics), or name a flake output as FLAKE#ATTR"}
	case ins.File != "" || ins.Expr != "":
		args, what := r.exprArgs(ins)
		lines, err := r.nix(ctx, ins, what, "nix-build", append(r.rootArgs("nix-build"), args...)...)
		if err != nil {
			return nil, err
		}
		out = append(out, lines...)
	}
	var flakes []string
	for _, a := range ins.Args {
		drv, outs, ok := drvOutputs(a)
		if !ok {
			flakes = append(flakes, a)
			continue
		}
		p, err := r.drvArg(a, drv)
		if err != nil {
			return nil, err
		}
		target := string(p) // DRV^* : every output
		if !slices.Contains(outs, "*") {
			target += "!" + strings.Join(outs, ",")
		}
		// nix-store --realise takes DRV!OUT on every Nix version; the nix
		// command learned DRV^OUT only in 2.9.
		lines, err := r.realiseDrvs(ctx, ins, a, target)
		if err != nil {
			return nil, err
		}
		out = append(out, lines...)
	}
	if len(flakes) > 0 {
		paths, err := r.buildFlakes(ctx, ins, flakes)
		if err != nil {
			return nil, err
		}
		out = append(out, paths...)
	}
	return parseOutputs(strings.Join(ins.Args, " "), out)
}

// rootArgs are the flags that make tool leave a GC root link in RootDir,
// or none.
func (r *Resolver) rootArgs(tool string) []string {
	if r.RootDir == "" {
		if tool == "nix-store" {
			return nil
		}
		if tool == "nix" {
			return []string{"--no-link"}
		}
		return []string{"--no-out-link"}
	}
	link := filepath.Join(r.RootDir, fmt.Sprintf("result-%d", r.seq.Add(1)))
	if tool == "nix-store" {
		return []string{"--add-root", link, "--indirect"}
	}
	return []string{"--out-link", link}
}

// realiseDrvs runs nix-store --realise on targets (DRV or DRV!OUT,...) and
// returns the output paths. With --add-root nix-store prints the links it
// made, not the outputs, so those are read.
func (r *Resolver) realiseDrvs(ctx context.Context, ins Installables, what string, targets ...string) ([]string, error) {
	lines, err := r.nix(ctx, ins, what, "nix-store", append(append([]string{"--realise"}, r.rootArgs("nix-store")...), targets...)...)
	if err != nil {
		return nil, err
	}
	for i, l := range lines {
		if r.RootDir != "" && strings.HasPrefix(l, r.RootDir+"/") {
			if lines[i], err = os.Readlink(l); err != nil {
				return nil, &Error{Arg: what, Err: fmt.Errorf("reading the GC root nix-store made: %w", err)}
			}
		}
	}
	return lines, nil
}

// exprArgs is how nix-build and nix-instantiate are told about File or
// Expr and Attrs, and how errors name them.
func (r *Resolver) exprArgs(ins Installables) (args []string, what string) {
	if ins.File != "" {
		args, what = []string{ins.File}, "-f "+ins.File
	} else {
		args, what = []string{"--expr", ins.Expr}, "--expr "+ins.Expr
	}
	for _, a := range ins.Attrs {
		args = append(args, "--attr", a)
		what += " -A " + a
	}
	return args, what
}

// buildFlakes realises flake installables in one nix build (one
// evaluator, one scheduler).
func (r *Resolver) buildFlakes(ctx context.Context, ins Installables, flakes []string) ([]string, error) {
	args := append(append(flakeFeatures(), "build", "--json"), r.rootArgs("nix")...)
	args = append(args, flakes...)
	lines, err := r.nix(ctx, ins, strings.Join(flakes, " "), "nix", args...)
	if err != nil {
		return nil, err
	}
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(strings.Join(lines, "\n")), &built); err != nil {
		return nil, &Error{Arg: strings.Join(flakes, " "), Err: fmt.Errorf("reading nix build --json: %w", err)}
	}
	var out []string
	for _, b := range built {
		for _, name := range sortedKeys(b.Outputs) {
			out = append(out, b.Outputs[name])
		}
	}
	return out, nil
}

// flakeFeatures enables what flake installables need; on a Nix where they
// are stable (or already enabled) the extra features are accepted as-is.
func flakeFeatures() []string {
	return []string{"--extra-experimental-features", "nix-command flakes"}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// parseOutputs checks that every line nix printed is a store path and
// removes duplicates, keeping the first order.
func parseOutputs(arg string, lines []string) ([]storepath.Path, error) {
	var roots []storepath.Path
	for _, l := range lines {
		p, err := storepath.Parse(l)
		if err != nil {
			return nil, &Error{Arg: arg, Err: fmt.Errorf("nix printed %q, not a store path: %w", l, err)}
		}
		if !slices.Contains(roots, p) {
			roots = append(roots, p)
		}
	}
	return roots, nil
}

// drvArg resolves the derivation named in DRV^OUT (a store path or a link
// to one) and checks that it is a .drv.
func (r *Resolver) drvArg(arg, drv string) (storepath.Path, error) {
	p, err := r.Arg(drv)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Arg = arg
		}
		return "", err
	}
	if !strings.HasSuffix(p.Name(), ".drv") {
		return "", &Error{Arg: arg, Err: fmt.Errorf("%s is not a derivation (.drv)", p),
			Hint: "OUT after '^' selects outputs of a .drv; for a flake write FLAKE#ATTR"}
	}
	return p, nil
}

// nixTool finds one of nix's commands: beside ins.Nix when it is set, else
// on the Resolver's Path.
func (r *Resolver) nixTool(ins Installables, name string) (string, error) {
	if ins.Nix != "" {
		p := filepath.Join(filepath.Dir(ins.Nix), name)
		if name == "nix" {
			p = ins.Nix
		}
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("%w: %s not found beside %s", ErrNoNix, name, ins.Nix)
	}
	for _, dir := range filepath.SplitList(r.Path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s not found in PATH=%s", ErrNoNix, name, r.Path)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// nix runs one of nix's commands as the caller (Credential aside) in the
// caller's directory and environment, and returns its stdout's non-empty
// lines. what names the installable or flag in errors.
func (r *Resolver) nix(ctx context.Context, ins Installables, what, tool string, args ...string) ([]string, error) {
	if r.Root != "" {
		// The caller's nix would build into the host store, not ROOT's.
		return nil, &Error{Arg: what, Err: fmt.Errorf("%w: installables, -f, --expr and --develop with --store %s", ErrUsage, r.Root),
			Hint: "realise it with nix --store " + r.Root + " first and name the store path"}
	}
	bin, err := r.nixTool(ins, tool)
	if err != nil {
		return nil, &Error{Arg: what, Err: err,
			Hint: "realising an installable, -f or --expr needs Nix: install it (Debian: apt-get install nix-bin) or put it on PATH; store paths and links need no Nix"}
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = ins.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // never closet's own environment
	}
	cmd.Dir = r.Dir
	cmd.SysProcAttr = r.sysProcAttr()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, nixError(what, tool, err, stderr.String())
	}
	var lines []string
	for _, l := range strings.Split(stdout.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// networkErrors are texts of nix's download errors (libcurl's among them).
var networkErrors = []string{
	"unable to download", "Couldn't resolve host", "Could not resolve host",
	"Couldn't connect to server", "Failed to connect", "Network is unreachable",
	"Connection timed out", "Timeout was reached",
}

// nixError turns a failed nix run into an *Error carrying nix's first
// error line (the cause; later lines are traces).
func nixError(what, tool string, runErr error, stderr string) error {
	first := ""
	for _, l := range strings.Split(stderr, "\n") {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "error:") {
			first = strings.TrimSpace(strings.TrimPrefix(t, "error:"))
			break
		}
	}
	if first == "" { // no "error:" line: the last thing it said
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		first = strings.TrimSpace(lines[len(lines)-1])
	}
	if first == "" {
		first = runErr.Error()
	}
	for _, n := range networkErrors {
		if strings.Contains(first, n) {
			return &Error{Arg: what, Err: fmt.Errorf("%w: %s: %s", ErrNeedsNetwork, tool, first),
				Hint: "a flake input, the flake registry or a fetcher (fetchTarball, fetchurl) downloads it; use a local flake (path:/dir#attr), or point the input at a local path"}
		}
	}
	return &Error{Arg: what, Err: fmt.Errorf("%w: %s: %s", ErrNix, tool, first),
		Hint: "run the same with nix directly (--show-trace) to see the whole error"}
}

// SplitArgs separates positional arguments into installables (IsInstallable)
// and the rest (store paths, links, commands), each in the order given.
func SplitArgs(args []string) (plain, installables []string) {
	for _, a := range args {
		if IsInstallable(a) {
			installables = append(installables, a)
		} else {
			plain = append(plain, a)
		}
	}
	return plain, installables
}

// Resolve is closet run/shell's whole resolution: positional args that are
// installables join ins.Args and are realised with ins (with -f/--expr when
// given), the others go through Roots (.drv included), and every root is
// checked valid by v (nil: not checked). Plain arguments are resolved
// first, so a typo fails before any build starts.
func (r *Resolver) Resolve(ctx context.Context, v Validator, args []string, ins Installables) ([]storepath.Path, error) {
	plain, inst := SplitArgs(args)
	roots, err := r.Roots(ctx, v, plain)
	if err != nil {
		return nil, err
	}
	ins.Args = append(slices.Clone(ins.Args), inst...)
	if len(ins.Args) == 0 && ins.File == "" && ins.Expr == "" && len(ins.Attrs) == 0 {
		return roots, nil
	}
	built, err := r.Realise(ctx, ins)
	if err != nil {
		return nil, err
	}
	if v != nil {
		if err := v.CheckValid(ctx, built...); err != nil {
			return nil, &Error{Arg: strings.Join(ins.Args, " "), Err: err}
		}
	}
	for _, p := range built {
		if !slices.Contains(roots, p) {
			roots = append(roots, p)
		}
	}
	return roots, nil
}
