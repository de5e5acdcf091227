// Package resolve turns what a user types into root store paths: a store
// path or a path inside one, a symlink chain that ends in the store (a
// profile, a result link), a command name found on PATH whose real path
// is in the store, a .drv (its input closure), and Nix installables (flake
// outputs, DRV^OUT, -f FILE -A ATTR, --expr), which it realises with the
// caller's own nix (installable.go). It also gives a derivation's build
// environment for closet shell --drv/--develop (drv.go).
//
// Symlinks are followed one component at a time by this package, not by the
// kernel, so that a chroot store (--store ROOT) resolves links that point at
// /nix/store/... inside ROOT, and so that every failure can name the link
// that broke the chain.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// Kinds of bad input; every error this package returns wraps one of these
// (or the validator's error) inside an *Error naming the argument.
var (
	ErrNotInStore = storepath.ErrNotInStore
	ErrNotFound   = errors.New("no such file or directory")
	ErrDangling   = errors.New("dangling symlink")
	ErrLoop       = errors.New("too many levels of symbolic links")
	ErrNoCommand  = errors.New("command not found on PATH")
)

// Error is a bad argument: it names the argument and says what to do.
type Error struct {
	Arg  string
	Err  error
	Hint string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s: %v", e.Arg, e.Err)
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Validator checks that store paths are registered as valid; closure.Store
// is one.
type Validator interface {
	CheckValid(ctx context.Context, paths ...storepath.Path) error
}

// Resolver resolves arguments against one store.
type Resolver struct {
	// Root is a chroot store's root ("" for the host): links that point into
	// /nix are followed inside it.
	Root string
	// Path is the search path for command names (the caller's $PATH).
	Path string
	// Dir is the caller's working directory: relative arguments are taken from it ("" = /),
	// and where nix runs.
	Dir string
	// Credential, when set, is who nix runs as (a service acting for a
	// user; tests). Nil: as closet's caller.
	Credential *syscall.Credential
	// RootDir, when set, is a directory (writable by whoever runs nix)
	// where Realise and DevEnv leave one indirect GC root link per
	// realisation, so that nothing they return can be collected before
	// the caller roots the job's closure; the caller removes the
	// directory after that. Empty: no links (--no-out-link), and a garbage
	// collection in that window could delete what was just built.
	RootDir string

	seq atomic.Uint64 // names links in RootDir
}

func (r *Resolver) sysProcAttr() *syscall.SysProcAttr {
	if r.Credential == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: r.Credential}
}

// Roots resolves every argument, then checks the store paths are valid.
// A .drv stands for its inputs (DrvInputs): the job gets the derivation's
// input closure, the store its build would see. Installables
// (IsInstallable) are not arguments here: Realise takes them. Either all
// resolve, or the first failure is returned and nothing else.
func (r *Resolver) Roots(ctx context.Context, v Validator, args []string) ([]storepath.Path, error) {
	roots := make([]storepath.Path, 0, len(args))
	for _, a := range args {
		p, err := r.Arg(a)
		if err != nil {
			return nil, err
		}
		ps := []storepath.Path{p}
		if strings.HasSuffix(p.Name(), ".drv") {
			if ps, err = r.DrvInputs(a, p); err != nil {
				return nil, err
			}
		}
		if v != nil {
			if err := v.CheckValid(ctx, ps...); err != nil {
				return nil, &Error{Arg: a, Err: err}
			}
		}
		roots = append(roots, ps...)
	}
	return roots, nil
}

// Arg resolves one argument to the store path that holds what it names.
// A name without a slash is a file in Dir when one exists there (as
// nix-build's ./result), and otherwise a command looked up on Path.
func (r *Resolver) Arg(arg string) (storepath.Path, error) {
	if arg == "" {
		return "", &Error{Arg: `""`, Err: errors.New("empty argument")}
	}
	if !strings.Contains(arg, "/") {
		if _, err := os.Lstat(r.abs(arg)); err != nil {
			p, _, err := r.Command(arg)
			return p, err
		}
	}
	return r.path(arg, arg)
}

// Command looks name up on Path as a shell would (the first executable
// match wins) and returns the store path holding its real file and that
// file's absolute path.
func (r *Resolver) Command(name string) (storepath.Path, string, error) {
	if name == "" || strings.Contains(name, "/") {
		p, err := r.path(name, name)
		return p, filepath.Clean(r.abs(name)), err
	}
	for _, dir := range filepath.SplitList(r.Path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // a relative PATH entry would depend on the cwd
		}
		cand := filepath.Join(dir, name)
		if _, err := os.Lstat(r.phys(cand)); err != nil {
			continue
		}
		// Links are followed by realpath, not the kernel, so that a link
		// into a chroot store resolves inside it.
		real, err := r.realpath(cand)
		if err != nil {
			continue // dangling or looping: a shell would pass it by too
		}
		st, err := os.Stat(r.phys(real))
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			continue
		}
		sp, _, err := storepath.Split(real)
		if err != nil {
			return "", "", &Error{Arg: name, Err: fmt.Errorf("found %s, %w", real, ErrNotInStore),
				Hint: "closet runs programs from the Nix store: install it with Nix, or name a store path"}
		}
		return sp, real, nil
	}
	return "", "", &Error{Arg: name, Err: ErrNoCommand,
		Hint: "name a store path or a result link, or put the program's directory on PATH"}
}

func (r *Resolver) path(arg, p string) (storepath.Path, error) {
	abs := filepath.Clean(r.abs(p))
	// A path spelled inside the store is taken as written: its store path
	// is the one the user named, even if a file below it links elsewhere.
	if sp, rest, err := storepath.Split(abs); err == nil {
		if _, err := os.Lstat(r.phys(abs)); err != nil {
			what := "store path"
			if rest != "" {
				what = "path inside " + string(sp)
			}
			return "", &Error{Arg: arg, Err: fmt.Errorf("%s: %w", what, ErrNotFound),
				Hint: "it may have been garbage-collected; realise it with nix-store --realise or nix-build"}
		}
		return sp, nil
	} else if strings.HasPrefix(abs, storepath.Dir+"/") {
		return "", &Error{Arg: arg, Err: err}
	}
	real, err := r.realpath(abs)
	if err != nil {
		return "", &Error{Arg: arg, Err: err}
	}
	sp, _, err := storepath.Split(real)
	if err != nil {
		hint := "name a store path, a link into the store, or a command from the store"
		if real != abs {
			return "", &Error{Arg: arg, Err: fmt.Errorf("resolves to %s, %w", real, ErrNotInStore), Hint: hint}
		}
		return "", &Error{Arg: arg, Err: ErrNotInStore, Hint: hint}
	}
	return sp, nil
}

func (r *Resolver) abs(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	// The caller's working directory comes in Dir: this package never
	// reads the process's own (many jobs run in one process).
	dir := r.Dir
	if dir == "" {
		dir = "/"
	}
	return filepath.Join(dir, p)
}

// phys maps a logical path to where it is on this host: paths under /nix
// live below Root for a chroot store.
func (r *Resolver) phys(p string) string {
	if r.Root != "" && (p == "/nix" || strings.HasPrefix(p, "/nix/")) {
		return filepath.Join(r.Root, p)
	}
	return p
}

const maxLinks = 40

// realpath resolves every symlink in the absolute path p, one component at
// a time, and returns the logical path it names. It fails on a missing
// component, naming the link whose target is missing.
func (r *Resolver) realpath(p string) (string, error) {
	todo := strings.Split(p, "/")
	done := "/"
	links := 0
	var lastLink string
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			done = filepath.Dir(done)
			continue
		}
		next := filepath.Join(done, c)
		fi, err := os.Lstat(r.phys(next))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				if lastLink != "" {
					return "", fmt.Errorf("%w: %s points to %s, which does not exist", ErrDangling, lastLink, next)
				}
				return "", fmt.Errorf("%s: %w", next, ErrNotFound)
			}
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if len(todo) > 0 && !fi.IsDir() && nonEmpty(todo) {
				return "", fmt.Errorf("%s: %w", next, syscall.ENOTDIR)
			}
			done = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s: %w", p, ErrLoop)
		}
		target, err := os.Readlink(r.phys(next))
		if err != nil {
			return "", err
		}
		lastLink = next
		if filepath.IsAbs(target) {
			done = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return done, nil
}

func nonEmpty(parts []string) bool {
	for _, p := range parts {
		if p != "" && p != "." {
			return true
		}
	}
	return false
}
