package resolve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/derivation"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// ErrNotDerivation is a --drv argument that does not name a .drv.
var ErrNotDerivation = errors.New("not a derivation (.drv)")

// Drv is a parsed store derivation and what its build would be given.
type Drv struct {
	Path storepath.Path
	*derivation.Derivation
	// Inputs are the store paths a build of it is given: its input sources
	// and the outputs it uses of its input derivations. Their closure is
	// the derivation's input closure, the store a build sandbox shows.
	Inputs []storepath.Path
	// Missing are input derivations (with the outputs used, as DRV!OUT,...)
	// whose outputs are not in the store yet.
	Missing []string
}

// ReadDrv parses the derivation at p (a store path ending in .drv) and
// finds its inputs. It needs no nix: .drv files are read directly, also
// those of its input derivations, whose output paths they record.
func (r *Resolver) ReadDrv(p storepath.Path) (*Drv, error) {
	d, err := r.parseDrv(p)
	if err != nil {
		return nil, err
	}
	drv := &Drv{Path: p, Derivation: d}
	for _, s := range d.InputSources {
		sp, err := storepath.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("derivation %s: input source %q: %w", p, s, err)
		}
		drv.Inputs = append(drv.Inputs, sp)
	}
	for _, in := range sortedKeys(d.InputDerivations) {
		inPath, err := storepath.Parse(in)
		if err != nil {
			return nil, fmt.Errorf("derivation %s: input derivation %q: %w", p, in, err)
		}
		id, err := r.parseDrv(inPath)
		if err != nil {
			return nil, fmt.Errorf("derivation %s: %w", p, err)
		}
		missing := false
		outs := d.InputDerivations[in]
		for _, o := range outs {
			out, ok := id.Outputs[o]
			if !ok || out.Path == "" {
				return nil, fmt.Errorf("derivation %s: input %s has no output path for %q (a content-addressed derivation?): realise it with nix first", p, in, o)
			}
			sp, err := storepath.Parse(out.Path)
			if err != nil {
				return nil, fmt.Errorf("derivation %s: output %s of %s: %w", p, o, in, err)
			}
			drv.Inputs = append(drv.Inputs, sp)
			if _, err := os.Lstat(r.phys(out.Path)); err != nil {
				missing = true
			}
		}
		if missing {
			drv.Missing = append(drv.Missing, in+"!"+strings.Join(outs, ","))
		}
	}
	slices.Sort(drv.Inputs)
	drv.Inputs = slices.Compact(drv.Inputs)
	return drv, nil
}

func (r *Resolver) parseDrv(p storepath.Path) (*derivation.Derivation, error) {
	if !strings.HasSuffix(p.Name(), ".drv") {
		return nil, fmt.Errorf("%s: %w", p, ErrNotDerivation)
	}
	f, err := os.Open(r.phys(string(p)))
	if err != nil {
		return nil, fmt.Errorf("read derivation: %w", err)
	}
	defer f.Close()
	d, err := derivation.ReadDerivation(f)
	if err != nil {
		return nil, fmt.Errorf("parse derivation %s: %w", p, err)
	}
	return d, nil
}

// DrvInputs is what a .drv named as a plain root stands for: its input
// closure's roots. Outputs of input derivations that are not built yet
// are an error naming them; DevEnv realises them instead.
func (r *Resolver) DrvInputs(arg string, p storepath.Path) ([]storepath.Path, error) {
	drv, err := r.ReadDrv(p)
	if err != nil {
		return nil, &Error{Arg: arg, Err: err}
	}
	if len(drv.Missing) > 0 {
		return nil, &Error{Arg: arg, Err: fmt.Errorf("inputs not built: %s: %w", strings.Join(drv.Missing, " "), ErrNotFound),
			Hint: "build them first (nix-store --realise " + strings.Join(drv.Missing, " ") + "), or use closet shell --drv, which does"}
	}
	return drv.Inputs, nil
}

// DevEnv is a build-environment replica of one derivation: what closet
// shell --drv / --develop puts in the job.
type DevEnv struct {
	// Drv is the derivation's store path.
	Drv storepath.Path
	// Roots are its inputs (sources and the input derivations' outputs it
	// uses, realised): the job's roots; their closure is its input closure.
	Roots []storepath.Path
	// Env is NAME=VALUE, sorted: the exported variables of the build
	// environment as nix develop gives them, without those nix develop
	// leaves to the shell (HOME, TMPDIR, TERM, ... see devIgnored). PATH
	// is present only when the build sets one; nix develop prepends it to
	// the caller's PATH.
	Env []string
	// Builder and Args are the derivation's build command, for a job that
	// wants to rerun the build (the shell's working directory and $out are
	// the caller's business).
	Builder string
	Args    []string
	// From says where Env comes from: "print-dev-env" (the derivation's
	// builder is bash, so nix print-dev-env ran its setup, as nix develop
	// does) or "drv" (read from the .drv; any other builder).
	From string
}

// devIgnored are the variables nix develop does not take from the build
// environment (Nix 2.8 src/nix/develop.cc, ignoreVars): they belong to the
// interactive shell.
var devIgnored = []string{
	"BASHOPTS", "HOME", "NIX_BUILD_TOP", "NIX_ENFORCE_PURITY", "NIX_LOG_FD",
	"NIX_REMOTE", "PPID", "SHELL", "SHELLOPTS", "SSL_CERT_FILE", "TEMP",
	"TEMPDIR", "TERM", "TMP", "TMPDIR", "TZ", "UID",
}

// DevEnv gives the build environment of one derivation, named as closet
// shell --drv X.drv (ins.Args = [X.drv], a store path or a link to one) or
// --develop INSTALLABLE (ins.Args = [a flake installable or DRV^OUT], or
// ins.File / ins.Expr with at most one attribute).
//
// When the builder is bash, the environment is nix print-dev-env's, as nix
// develop gives it: stdenv's setup has run ($stdenv/setup sets PATH from
// the build inputs, and more). Nix 2.8 refuses print-dev-env for any other
// builder, so then the environment is the .drv's own, read directly.
// Input outputs that are not built yet are realised with the caller's nix.
func (r *Resolver) DevEnv(ctx context.Context, ins Installables) (*DevEnv, error) {
	what, p, err := r.devDrv(ctx, ins)
	if err != nil {
		return nil, err
	}
	drv, err := r.ReadDrv(p)
	if err != nil {
		return nil, &Error{Arg: what, Err: err}
	}
	de := &DevEnv{Drv: p, Roots: drv.Inputs, Builder: drv.Builder, Args: drv.Arguments}
	var env map[string]string
	if filepath.Base(drv.Builder) == "bash" {
		// It builds the inputs it needs itself.
		de.From = "print-dev-env"
		if env, err = r.printDevEnv(ctx, ins, what, p); err != nil {
			return nil, err
		}
		if r.RootDir != "" && len(drv.Missing) > 0 {
			// Built now, without roots: root them (they are valid, so
			// nothing builds again).
			if _, err := r.realiseDrvs(ctx, ins, what, drv.Missing...); err != nil {
				return nil, err
			}
		}
	} else {
		de.From = "drv"
		if len(drv.Missing) > 0 {
			if _, err := r.realiseDrvs(ctx, ins, what, drv.Missing...); err != nil {
				return nil, err
			}
		}
		// Nix's builder sets NIX_STORE; the derivation's attributes follow.
		env = map[string]string{"NIX_STORE": storepath.Dir}
		for k, v := range drv.Env {
			env[k] = v
		}
	}
	for _, k := range sortedKeys(env) {
		if slices.Contains(devIgnored, k) || (k == "PATH" && env[k] == "/path-not-set") {
			continue
		}
		de.Env = append(de.Env, k+"="+env[k])
	}
	return de, nil
}

// printDevEnv runs nix print-dev-env --json on the derivation p and
// returns its exported variables (the ones a process inherits; shell
// variables and functions stay with nix develop's bash).
func (r *Resolver) printDevEnv(ctx context.Context, ins Installables, what string, p storepath.Path) (map[string]string, error) {
	lines, err := r.nix(ctx, ins, what, "nix", "--extra-experimental-features", "nix-command", "print-dev-env", "--json", string(p))
	if err != nil {
		return nil, err
	}
	var dump struct {
		Variables map[string]struct {
			Type  string          `json:"type"`
			Value json.RawMessage `json:"value"`
		} `json:"variables"`
	}
	if err := json.Unmarshal([]byte(strings.Join(lines, "\n")), &dump); err != nil {
		return nil, &Error{Arg: what, Err: fmt.Errorf("reading nix print-dev-env --json: %w", err)}
	}
	env := map[string]string{}
	for k, v := range dump.Variables {
		if v.Type != "exported" {
			continue
		}
		var s string
		if err := json.Unmarshal(v.Value, &s); err != nil {
			return nil, &Error{Arg: what, Err: fmt.Errorf("nix print-dev-env --json: variable %s: %w", k, err)}
		}
		env[k] = s
	}
	return env, nil
}

// devDrv finds the one derivation ins names.
func (r *Resolver) devDrv(ctx context.Context, ins Installables) (what string, p storepath.Path, err error) {
	var lines []string
	switch {
	case ins.File != "" || ins.Expr != "":
		if len(ins.Args) > 0 || len(ins.Attrs) > 1 || (ins.File != "" && ins.Expr != "") {
			return "", "", &Error{Arg: "--develop", Err: fmt.Errorf("%w: name one derivation", ErrUsage)}
		}
		args, w := r.exprArgs(ins)
		what = w
		lines, err = r.nix(ctx, ins, what, "nix-instantiate", args...)
	case len(ins.Args) == 1 && !IsInstallable(ins.Args[0]):
		what = ins.Args[0]
		dp, err := r.Arg(what)
		if err != nil {
			return "", "", err
		}
		if !strings.HasSuffix(dp.Name(), ".drv") {
			return "", "", &Error{Arg: what, Err: fmt.Errorf("%s: %w", dp, ErrNotDerivation),
				Hint: "name a .drv (nix-instantiate prints it), or use --develop INSTALLABLE"}
		}
		return what, dp, nil
	case len(ins.Args) == 1:
		what = ins.Args[0]
		if drv, _, ok := drvOutputs(what); ok {
			dp, err := r.drvArg(what, drv)
			return what, dp, err
		}
		args := append(flakeFeatures(), "path-info", "--derivation", what)
		lines, err = r.nix(ctx, ins, what, "nix", args...)
	default:
		return "", "", &Error{Arg: strings.Join(ins.Args, " "), Err: fmt.Errorf("%w: a build environment is of exactly one derivation", ErrUsage)}
	}
	if err != nil {
		return "", "", err
	}
	if len(lines) != 1 {
		return "", "", &Error{Arg: what, Err: fmt.Errorf("%w: it gives %d derivations, want one", ErrUsage, len(lines)),
			Hint: "select one with -A ATTR or FLAKE#ATTR"}
	}
	p, err = storepath.Parse(lines[0])
	if err != nil || !strings.HasSuffix(p.Name(), ".drv") {
		return "", "", &Error{Arg: what, Err: fmt.Errorf("nix printed %q: %w", lines[0], ErrNotDerivation)}
	}
	return what, p, nil
}
