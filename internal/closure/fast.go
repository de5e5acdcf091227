package closure

import (
	"context"
	"fmt"
	"sync"

	"github.com/closet-sandbox/closet/internal/closure/sqlitefile"
	"github.com/closet-sandbox/closet/internal/storepath"
)

// fastBackend reads the database file's b-trees directly (package
// sqlitefile): a 3,000-path closure in a few milliseconds where SQLite's
// recursive query takes twenty, because no SQL engine runs per row.
//
// It is tried first and trusted only as far as it is sure: any error it
// reports (a page it cannot parse, a database that kept changing during
// the read) sends that question to the SQL backend, opened on first need.
// It never guesses.
//
// It is safe for concurrent use: sqlitefile.DB serialises its reads, and
// mu guards the SQL backend opened on first need.
type fastBackend struct {
	f    *sqlitefile.DB
	path string
	opts sqlOptions

	mu  sync.Mutex
	sql *dbBackend
}

func openFast(path string, opts sqlOptions) (*fastBackend, error) {
	if err := checkSchema(path); err != nil {
		return nil, err
	}
	f, err := sqlitefile.Open(path)
	if err != nil {
		return nil, err
	}
	return &fastBackend{f: f, path: path, opts: opts}, nil
}

func (b *fastBackend) name() string { return "database" }

func (b *fastBackend) close() error {
	b.f.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sql != nil {
		return b.sql.close()
	}
	return nil
}

// slow is the SQL backend, for what the fast path could not answer.
func (b *fastBackend) slow(why error) (*dbBackend, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sql != nil {
		return b.sql, nil
	}
	s, err := openDB(b.path, b.opts)
	if err != nil {
		return nil, fmt.Errorf("%s: direct read failed (%v), and SQLite: %w", b.path, why, err)
	}
	b.sql = s
	return s, nil
}

func (b *fastBackend) valid(ctx context.Context, paths []storepath.Path) ([]storepath.Path, error) {
	var bad []storepath.Path
	for _, p := range paths {
		_, ok, err := b.f.Lookup(string(p))
		if err != nil {
			s, serr := b.slow(err)
			if serr != nil {
				return nil, serr
			}
			return s.valid(ctx, paths)
		}
		if !ok {
			bad = append(bad, p)
		}
	}
	return bad, nil
}

func (b *fastBackend) closure(ctx context.Context, roots []storepath.Path, refs bool) ([]Info, error) {
	rs := make([]string, len(roots))
	for i, r := range roots {
		rs[i] = string(r)
	}
	rows, err := b.f.Closure(rs)
	if err != nil {
		s, serr := b.slow(err)
		if serr != nil {
			return nil, serr
		}
		return s.closure(ctx, roots, refs)
	}
	var byID map[int64]storepath.Path
	if refs {
		byID = make(map[int64]storepath.Path, len(rows))
		for _, r := range rows {
			byID[r.ID] = storepath.Path(r.Path)
		}
	}
	infos := make([]Info, len(rows))
	for i, r := range rows {
		infos[i] = Info{Path: storepath.Path(r.Path), NarHash: r.Hash, NarSize: r.NarSize,
			RegistrationTime: r.RegistrationTime, Deriver: r.Deriver}
		if !refs {
			continue
		}
		infos[i].References = make([]storepath.Path, 0, len(r.References))
		for _, id := range r.References {
			p, ok := byID[id]
			if !ok {
				// A reference outside the closure: the file is not what
				// the schema promises. Ask SQLite instead.
				s, serr := b.slow(fmt.Errorf("reference %d of %s outside the closure", id, r.Path))
				if serr != nil {
					return nil, serr
				}
				return s.closure(ctx, roots, refs)
			}
			infos[i].References = append(infos[i].References, p)
		}
		sortPaths(infos[i].References)
	}
	return infos, nil
}
