// Package storepath owns the names of Nix store paths: parsing a string into
// a store path, cutting a path inside the store down to the store path that
// holds it, and the rules Nix itself applies to names.
//
// It checks what go-nix's storepath checks (a nixbase32 hash, the
// characters of a name), without its regular expressions, whose
// compilation every process that imports them paid at start (0.1 ms, also
// in each sandbox's init), and adds what Nix's checkName in
// libstore/path.cc refuses and go-nix accepts (a leading dot, over-long
// names). A test holds the two to the same answers.
package storepath

import (
	"errors"
	"fmt"
	"strings"
)

// Dir is the logical store directory. Store paths are always named under it,
// even when the store lives physically below a chroot (--store ROOT).
const Dir = "/nix/store"

// nixbase32 is Nix's base-32 alphabet (no e, o, u, t).
const nixbase32 = "0123456789abcdfghijklmnpqrsvwxyz"

// hashLen is the length of the nixbase32 digest in a store path's base name.
const hashLen = 32

// maxNameLen is the longest name (the part after "<hash>-") Nix accepts.
const maxNameLen = 211

// ErrNotInStore is returned for a path that does not lie in the store.
var ErrNotInStore = errors.New("not in the Nix store")

// Path is a validated store path such as /nix/store/<hash>-hello-2.12.
type Path string

// String returns the absolute path.
func (p Path) String() string { return string(p) }

// Base returns "<hash>-<name>".
func (p Path) Base() string { return string(p)[len(Dir)+1:] }

// Hash returns the 32-character nixbase32 digest part.
func (p Path) Hash() string { return p.Base()[:hashLen] }

// Name returns the part after the hash and dash.
func (p Path) Name() string { return p.Base()[hashLen+1:] }

// Parse validates s as an absolute store path with nothing below it.
func Parse(s string) (Path, error) {
	if !strings.HasPrefix(s, Dir+"/") {
		return "", fmt.Errorf("%q: %w (store paths start with %s/)", s, ErrNotInStore, Dir)
	}
	base := s[len(Dir)+1:]
	if strings.Contains(base, "/") {
		return "", fmt.Errorf("%q: a path below a store path, not a store path", s)
	}
	if err := checkBase(base); err != nil {
		return "", fmt.Errorf("%q: %w", s, err)
	}
	return Path(s), nil
}

// Split cuts a path at or below a store path into the store path and the
// rest (with its leading slash, or "" when s is the store path itself).
// s must be clean (no "..", no "//"); callers clean user input first.
func Split(s string) (Path, string, error) {
	if !strings.HasPrefix(s, Dir+"/") {
		return "", "", fmt.Errorf("%q: %w", s, ErrNotInStore)
	}
	base, rest := s[len(Dir)+1:], ""
	if i := strings.IndexByte(base, '/'); i >= 0 {
		base, rest = base[:i], base[i:]
	}
	p, err := Parse(Dir + "/" + base)
	if err != nil {
		return "", "", err
	}
	return p, rest, nil
}

// checkBase applies Nix's rules to "<hash>-<name>".
func checkBase(base string) error {
	if len(base) < hashLen+2 || base[hashLen] != '-' {
		return errors.New("invalid store path: expected <32-character hash>-<name>")
	}
	if !validHash(base[:hashLen]) || !validName(base[hashLen+1:]) {
		return errors.New("invalid store path: bad hash or a character Nix does not allow in names")
	}
	name := base[hashLen+1:]
	if name[0] == '.' {
		return errors.New("invalid store path: names may not start with a dot")
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("invalid store path: name longer than %d characters", maxNameLen)
	}
	return nil
}

// validHash: h is all nixbase32 (32 characters of it are exactly the 160
// bits of a store path's digest).
func validHash(h string) bool {
	for i := 0; i < len(h); i++ {
		if strings.IndexByte(nixbase32, h[i]) < 0 {
			return false
		}
	}
	return true
}

// validName: the characters Nix allows in a store path's name.
func validName(n string) bool {
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("+-._?=", c) >= 0) {
			return false
		}
	}
	return n != ""
}
