// Package closure owns the store graph: it reads the Nix database, answers
// whether a path is valid, and computes the closure of a set of roots with
// the metadata a report or a sandbox needs (narSize, narHash, registration
// time, references).
//
// Three readers answer, tried in order: the database file's b-trees read
// directly (package sqlitefile: read-only, WAL-aware, no SQL engine; a
// 3,000-path closure in milliseconds); SQLite (modernc, read-only), for
// whatever the direct reader cannot answer with certainty; and nix-store,
// for a host store whose database the caller cannot read (it asks the
// daemon). No Nix process is needed for the first two. Where none works,
// one error matching ErrStoreUnreadable says why.
//
// Nothing here reads the process environment: the caller chooses the reader
// through Options. A Store is safe for concurrent use by many goroutines.
// Reading never writes: a database that looks built to hang SQLite is
// refused, every SQLite read has a deadline, and nix-store is never run on
// a chroot store (it would create a database there).
package closure

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/closet-sandbox/closet/internal/storepath"
)

var (
	// ErrStoreUnreadable: neither the database nor nix-store could answer.
	ErrStoreUnreadable = errors.New("the Nix store database cannot be read")
	// ErrInvalidPath: a root is not registered as a valid path.
	ErrInvalidPath = errors.New("not a valid path in the Nix store")
)

// Info is what the store knows about one path.
type Info struct {
	Path             storepath.Path   `json:"path"`
	NarHash          string           `json:"narHash"`
	NarSize          uint64           `json:"narSize"`
	RegistrationTime int64            `json:"registrationTime,omitempty"`
	Deriver          string           `json:"deriver,omitempty"`
	References       []storepath.Path `json:"references"`
}

// Closure is the transitive closure of some roots, sorted by path.
type Closure struct {
	Roots []storepath.Path `json:"roots"`
	Paths []Info           `json:"paths"`
}

// StorePaths returns the closure's paths, sorted.
func (c *Closure) StorePaths() []storepath.Path {
	out := make([]storepath.Path, len(c.Paths))
	for i, p := range c.Paths {
		out[i] = p.Path
	}
	return out
}

// NarSize is the sum of the paths' NAR sizes.
func (c *Closure) NarSize() uint64 {
	var n uint64
	for _, p := range c.Paths {
		n += p.NarSize
	}
	return n
}

// Options says which store to open.
type Options struct {
	// Root is a chroot store's root: the store is Root/nix/store and the
	// database Root/nix/var/nix/db. Empty means the host's store.
	Root string
	// DB overrides the database file (tests use it to force the fallback).
	DB string
	// NixStore is the nix-store binary for the fallback; "" looks it up on
	// the PATH in Env. "-" disables the fallback.
	NixStore string
	// Env is the environment nix-store runs with (NIX_REMOTE and the like
	// choose how it reaches the store) and whose PATH finds it. nil means
	// no fallback: the package never reads the process's own environment,
	// so the caller passes it (os.Environ() for the CLI).
	Env []string
	// SQLOnly skips the direct reader and asks SQLite (tests compare the
	// two; the CLI sets it from CLOSET_DB_READER=sqlite).
	SQLOnly bool
	// Timeout bounds each SQLite read; zero means a minute. A database
	// that takes longer is one closet refuses to wait for.
	Timeout time.Duration
	// Cache, when set, answers Closure without references from closures
	// computed before, for as long as their roots stay registered (see
	// Cache). nil computes every closure.
	Cache *Cache
}

// backend answers questions about the store graph.
type backend interface {
	valid(ctx context.Context, paths []storepath.Path) (invalid []storepath.Path, err error)
	closure(ctx context.Context, roots []storepath.Path, refs bool) ([]Info, error)
	name() string
	close() error
}

// Store is an open store.
type Store struct {
	opts   Options
	dbPath string // the database file (the cache's keys name it)
	b      backend
}

// Open opens the store's database read-only, or, where that fails, prepares
// the nix-store fallback. The error matches ErrStoreUnreadable when neither
// works, and says what to do.
func Open(opts Options) (*Store, error) {
	dbPath := opts.DB
	if dbPath == "" {
		dbPath = filepath.Join(rootOr(opts.Root), "nix/var/nix/db/db.sqlite")
	}
	if !opts.SQLOnly {
		if fb, err := openFast(dbPath, opts.sql()); err == nil {
			return &Store{opts: opts, dbPath: dbPath, b: fb}, nil
		}
	}
	db, dbErr := openDB(dbPath, opts.sql())
	if dbErr == nil {
		return &Store{opts: opts, dbPath: dbPath, b: db}, nil
	}
	cli, cliErr := newCLI(opts)
	if cliErr == nil {
		return &Store{opts: opts, dbPath: dbPath, b: cli}, nil
	}
	return nil, fmt.Errorf("%w: database %s: %v; fallback: %v (run as a user who can read the database, or install Nix so that nix-store can reach the store)",
		ErrStoreUnreadable, dbPath, dbErr, cliErr)
}

func rootOr(root string) string {
	if root == "" {
		return "/"
	}
	return root
}

// Source names where answers come from: "database" or "nix-store".
func (s *Store) Source() string { return s.b.name() }

// StoreDir is the physical directory of the store's paths.
func (s *Store) StoreDir() string { return filepath.Join(rootOr(s.opts.Root), storepath.Dir) }

// Close releases the database.
func (s *Store) Close() error { return s.b.close() }

// CheckValid returns an error matching ErrInvalidPath naming the first path
// that is not registered as valid.
func (s *Store) CheckValid(ctx context.Context, paths ...storepath.Path) error {
	bad, err := s.b.valid(ctx, paths)
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return invalidErr(bad[0])
	}
	return nil
}

// Closure computes the closure of roots. With refs, each Info carries its
// references; without, References is nil (cheaper: a sandbox needs only the
// paths).
func (s *Store) Closure(ctx context.Context, roots []storepath.Path, refs bool) (*Closure, error) {
	roots = dedup(roots)
	if len(roots) == 0 {
		return &Closure{Roots: roots, Paths: []Info{}}, nil
	}
	if !refs {
		if c, ok, err := s.cachedClosure(ctx, roots); ok {
			return c, err
		}
	}
	if err := s.CheckValid(ctx, roots...); err != nil {
		return nil, err
	}
	infos, err := s.b.closure(ctx, roots, refs)
	if err != nil {
		return nil, err
	}
	return &Closure{Roots: roots, Paths: sortByPath(infos)}, nil
}

// sortByPath returns infos sorted by path. It sorts small keys, not the
// Infos: an Info is 14 words, and moving them was most of a sort that
// took a fifth of a 10,000-path closure's time. A key is the eight bytes
// after the store directory, big-endian (the first eight characters of
// the hash: ties are rare), and the index of its Info.
func sortByPath(infos []Info) []Info {
	type key struct {
		k uint64
		i int
	}
	const off = len(storepath.Dir) + 1
	keys := make([]key, len(infos))
	for i, in := range infos {
		p := string(in.Path)
		if !strings.HasPrefix(p, storepath.Dir+"/") {
			// Never from a backend; the keys would not order it.
			slices.SortFunc(infos, func(a, b Info) int { return strings.Compare(string(a.Path), string(b.Path)) })
			return infos
		}
		var k uint64
		for j := off; j < off+8; j++ {
			k <<= 8
			if j < len(p) {
				k |= uint64(p[j])
			}
		}
		keys[i] = key{k, i}
	}
	slices.SortFunc(keys, func(a, b key) int {
		if a.k != b.k {
			return cmp.Compare(a.k, b.k)
		}
		return strings.Compare(string(infos[a.i].Path), string(infos[b.i].Path))
	})
	out := make([]Info, len(infos))
	for i, k := range keys {
		out[i] = infos[k.i]
	}
	return out
}

func dedup(ps []storepath.Path) []storepath.Path {
	seen := make(map[storepath.Path]bool, len(ps))
	out := make([]storepath.Path, 0, len(ps))
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}
