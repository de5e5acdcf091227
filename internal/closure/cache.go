package closure

import (
	"container/list"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// Cache remembers closures a service computes again and again (closet
// serve runs the same few roots for every job). It is safe for concurrent
// use by many Stores; pass it in Options.Cache.
//
// Why a cached closure is still the closure: a valid path's references
// are fixed when it is registered and never change, and Nix never deletes
// a path while a valid path refers to it. So the closure of a set of roots
// is the same for as long as those very roots stay registered. "Those very
// roots": a path can be collected and registered again, perhaps built
// differently, with other references. The key is therefore each root with
// its row id in the database's ValidPaths table, which is AUTOINCREMENT:
// an id is never given out twice, so a root registered again has a new id
// and misses.
//
// Every lookup, hit or miss, first reads the roots' ids from the database:
// a root that is no longer valid fails exactly as without a cache
// (ErrInvalidPath), never with a remembered view. Holding the roots while
// the job runs stays the caller's work (package gcroot), as without a
// cache. Only the database readers give ids; with the nix-store fallback
// nothing is cached. Closures with references (refs) are not cached.
type Cache struct {
	max          int
	mu           sync.Mutex
	order        *list.List // of *cacheEntry, most recently used first
	byKey        map[string]*list.Element
	hits, misses atomic.Uint64
}

type cacheEntry struct {
	key   string
	paths []Info
}

// NewCache returns a cache of the n most recently used closures
// (at least one).
func NewCache(n int) *Cache {
	return &Cache{max: max(n, 1), order: list.New(), byKey: map[string]*list.Element{}}
}

// Stats returns how many lookups were answered from the cache and how many
// were not.
func (c *Cache) Stats() (hits, misses uint64) { return c.hits.Load(), c.misses.Load() }

func (c *Cache) get(key string) ([]Info, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	c.hits.Add(1)
	c.order.MoveToFront(e)
	return e.Value.(*cacheEntry).paths, true
}

func (c *Cache) put(key string, paths []Info) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		c.order.MoveToFront(e)
		return
	}
	c.byKey[key] = c.order.PushFront(&cacheEntry{key: key, paths: paths})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*cacheEntry).key)
	}
}

// idBackend is a backend that can say which row of ValidPaths a path is.
type idBackend interface {
	// ids returns the ValidPaths id of each valid path of paths;
	// invalid paths are absent from the map.
	ids(ctx context.Context, paths []storepath.Path) (map[storepath.Path]int64, error)
}

// cachedClosure answers Closure(roots, refs=false) from the cache where it
// can; ok false means the cache cannot serve this store (no ids) and the
// caller computes the closure itself. roots are sorted and unique.
func (s *Store) cachedClosure(ctx context.Context, roots []storepath.Path) (c *Closure, ok bool, err error) {
	ib, isID := s.b.(idBackend)
	if s.opts.Cache == nil || !isID {
		return nil, false, nil
	}
	ids, err := ib.ids(ctx, roots)
	if err != nil {
		return nil, true, err
	}
	var key strings.Builder
	key.WriteString(s.dbPath)
	for _, r := range roots {
		id, valid := ids[r]
		if !valid {
			return nil, true, invalidErr(r)
		}
		key.WriteByte(0)
		key.WriteString(string(r))
		key.WriteByte(' ')
		key.WriteString(strconv.FormatInt(id, 10))
	}
	k := key.String()
	if paths, hit := s.opts.Cache.get(k); hit {
		// A copy: the cached slice is shared by every job.
		return &Closure{Roots: roots, Paths: append([]Info(nil), paths...)}, true, nil
	}
	infos, err := s.b.closure(ctx, roots, false)
	if err != nil {
		return nil, true, err
	}
	infos = sortByPath(infos)
	s.opts.Cache.put(k, append([]Info(nil), infos...))
	return &Closure{Roots: roots, Paths: infos}, true, nil
}

// invalidErr is CheckValid's error for p.
func invalidErr(p storepath.Path) error {
	return fmt.Errorf("%s: %w (it may have been garbage-collected, or was never registered; realise it with nix-store --realise or nix-build)", p, ErrInvalidPath)
}

func (b *fastBackend) ids(ctx context.Context, paths []storepath.Path) (map[storepath.Path]int64, error) {
	out := make(map[storepath.Path]int64, len(paths))
	for _, p := range paths {
		id, ok, err := b.f.Lookup(string(p))
		if err != nil {
			s, serr := b.slow(err)
			if serr != nil {
				return nil, serr
			}
			return s.ids(ctx, paths)
		}
		if ok {
			out[p] = id
		}
	}
	return out, nil
}

func (b *dbBackend) ids(ctx context.Context, paths []storepath.Path) (map[storepath.Path]int64, error) {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	var out map[storepath.Path]int64
	err := b.consistent(func() error {
		out = make(map[storepath.Path]int64, len(paths))
		rows, err := b.db.QueryContext(ctx,
			"SELECT path, id FROM ValidPaths WHERE path IN ("+placeholders(len(paths))+")", pathArgs(paths)...)
		if err != nil {
			return fmt.Errorf("query %s: %w", b.path, err)
		}
		defer rows.Close()
		for rows.Next() {
			var p string
			var id int64
			if err := rows.Scan(&p, &id); err != nil {
				return err
			}
			out[storepath.Path(p)] = id
		}
		return rows.Err()
	})
	if err != nil {
		return nil, b.deadline(ctx, err)
	}
	return out, nil
}
