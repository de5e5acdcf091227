package closure

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// schemaVersion is the Nix database schema this package reads. It has not
// changed since Nix 2.0.
const schemaVersion = "10"

// dbBackend reads the Nix database directly.
//
// Nix keeps the database in WAL mode. Read-only access to a WAL database
// needs its -shm file: when a Nix process has the database open the file
// exists and SQLite maps it read-only; when none has, SQLite must create it,
// which an ordinary user cannot in root's directory (SQLITE_READONLY_DIRECTORY).
// Then, and only then, everything is in the main file, and the backend reads
// it with immutable=1, checking afterwards that no writer appeared meanwhile
// (a -wal file, or a change to the main file); a read that raced one is
// retried.
//
// A --store database may be hostile: ValidPaths may be a view over an
// infinite recursive query. The backend checks that ValidPaths and Refs are
// the tables Nix creates before it asks anything of them, and bounds every
// query by a deadline (modernc interrupts SQLite when the context ends).
type dbBackend struct {
	db        *sql.DB
	path      string
	immutable bool
	timeout   time.Duration
}

// sqlOptions are the SQL backend's settings, from Options.
type sqlOptions struct {
	timeout time.Duration
}

// defaultTimeout bounds one SQLite read where Options.Timeout is zero: a
// valid 256 MiB database answers in about 5 s.
const defaultTimeout = time.Minute

func (o Options) sql() sqlOptions {
	t := o.Timeout
	if t <= 0 {
		t = defaultTimeout
	}
	return sqlOptions{timeout: t}
}

// bounded returns ctx limited by the backend's deadline.
func (b *dbBackend) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.timeout)
}

// deadline rewords a read the deadline interrupted.
func (b *dbBackend) deadline(ctx context.Context, err error) error {
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("%s: SQLite did not answer within %v (a database much larger than a Nix store, or one built to never answer; raise the timeout only for a store you trust): %w", b.path, b.timeout, err)
	}
	return err
}

// checkSchema refuses a database of another schema version than the one
// this package reads.
func checkSchema(path string) error {
	if v, err := os.ReadFile(filepath.Join(filepath.Dir(path), "schema")); err == nil {
		if s := strings.TrimSpace(string(v)); s != schemaVersion {
			return fmt.Errorf("schema version %s, closet reads version %s", s, schemaVersion)
		}
	}
	return nil
}

func openDB(path string, o sqlOptions) (*dbBackend, error) {
	if err := checkSchema(path); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	b, err := openDSN(path, false, o)
	if err == nil {
		return b, nil
	}
	if !isReadOnlyOrCantOpen(err) || exists(path+"-wal") {
		return nil, err
	}
	return openDSN(path, true, o)
}

func openDSN(path string, immutable bool, o sqlOptions) (*dbBackend, error) {
	q := url.Values{"mode": {"ro"}}
	if immutable {
		q.Set("immutable", "1")
	} else {
		q.Add("_pragma", "busy_timeout(10000)")
	}
	// A one-shot process starts with a cold page cache: map the file
	// instead of reading it page by page, and keep the closure query's
	// temporary index (the UNION's) in memory.
	q.Add("_pragma", "mmap_size(1073741824)")
	q.Add("_pragma", "temp_store(2)")
	// A plain file name would silently ignore mode=ro: always a file: URI.
	dsn := (&url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2)
	b := &dbBackend{db: db, path: path, immutable: immutable, timeout: o.timeout}
	if err := b.checkTables(); err != nil {
		db.Close()
		return nil, err
	}
	return b, nil
}

// nixTables are the tables this package queries and the columns it reads,
// in Nix's order.
var nixTables = []struct {
	name string
	cols []string
}{
	{"ValidPaths", []string{"id", "path", "hash", "registrationtime", "deriver", "narsize"}},
	{"Refs", []string{"referrer", "reference"}},
}

// checkTables refuses a database whose ValidPaths or Refs is not a plain
// table with Nix's columns: a view or a virtual table runs code of the
// database's author on every read. It reads only sqlite_schema and the
// tables' declared columns, neither of which runs that code.
func (b *dbBackend) checkTables() error {
	ctx, cancel := b.bounded(context.Background())
	defer cancel()
	for _, t := range nixTables {
		var typ, def string
		err := b.db.QueryRowContext(ctx, "SELECT type, coalesce(sql, '') FROM sqlite_schema WHERE name = ? COLLATE NOCASE", t.name).Scan(&typ, &def)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%s: no table %s: not a Nix database", b.path, t.name)
		}
		if err != nil {
			return b.deadline(ctx, fmt.Errorf("%s: read the schema: %w", b.path, err))
		}
		norm := strings.Join(strings.Fields(strings.ToUpper(def)), " ")
		if typ != "table" || !strings.HasPrefix(norm, "CREATE TABLE") {
			return fmt.Errorf("%s: %s is a %s (%.60q), not the table Nix creates: refusing to query it", b.path, t.name, typ, def)
		}
		rows, err := b.db.QueryContext(ctx, "SELECT lower(name) FROM pragma_table_info(?)", t.name)
		if err != nil {
			return b.deadline(ctx, fmt.Errorf("%s: read the columns of %s: %w", b.path, t.name, err))
		}
		var cols []string
		for rows.Next() {
			var c string
			if err := rows.Scan(&c); err != nil {
				rows.Close()
				return err
			}
			cols = append(cols, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return b.deadline(ctx, err)
		}
		if len(cols) < len(t.cols) || !slices.Equal(cols[:len(t.cols)], t.cols) {
			return fmt.Errorf("%s: %s has columns %v, Nix's has %v: not a Nix database", b.path, t.name, cols, t.cols)
		}
	}
	return nil
}

func isReadOnlyOrCantOpen(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code() & 0xff
	return c == sqlite3.SQLITE_READONLY || c == sqlite3.SQLITE_CANTOPEN
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func (b *dbBackend) name() string { return "database" }
func (b *dbBackend) close() error { return b.db.Close() }

// stamp identifies the main file's state for the immutable-read check.
type stamp struct {
	size, mtime int64
	wal         bool
}

func (b *dbBackend) stamp() stamp {
	st, err := os.Stat(b.path)
	if err != nil {
		return stamp{size: -1}
	}
	return stamp{size: st.Size(), mtime: st.ModTime().UnixNano(), wal: exists(b.path + "-wal")}
}

// consistent runs read; for an immutable open it retries while a writer
// raced the read.
func (b *dbBackend) consistent(read func() error) error {
	if !b.immutable {
		return read()
	}
	for try := 0; try < 5; try++ {
		before := b.stamp()
		if before.wal {
			return fmt.Errorf("%s: a Nix process started writing the database; run again", b.path)
		}
		if err := read(); err != nil {
			return err
		}
		if b.stamp() == before {
			return nil
		}
	}
	return fmt.Errorf("%s: the database kept changing while it was read; run again", b.path)
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

func pathArgs(ps []storepath.Path) []any {
	args := make([]any, len(ps))
	for i, p := range ps {
		args[i] = string(p)
	}
	return args
}

func (b *dbBackend) valid(ctx context.Context, paths []storepath.Path) ([]storepath.Path, error) {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	found := make(map[string]bool, len(paths))
	err := b.consistent(func() error {
		rows, err := b.db.QueryContext(ctx,
			"SELECT path FROM ValidPaths WHERE path IN ("+placeholders(len(paths))+")", pathArgs(paths)...)
		if err != nil {
			return fmt.Errorf("query %s: %w", b.path, err)
		}
		defer rows.Close()
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				return err
			}
			found[p] = true
		}
		return rows.Err()
	})
	if err != nil {
		return nil, b.deadline(ctx, err)
	}
	var bad []storepath.Path
	for _, p := range paths {
		if !found[string(p)] {
			bad = append(bad, p)
		}
	}
	return bad, nil
}

// The queries below join CROSS JOIN so SQLite walks the closure and looks
// rows up by key, never the other way round.
//
// closureCTE names the closure's row ids: the roots, then everything their
// references reach, in one recursive query (SQLite walks the IndexReferrer
// index; the cost grows with the closure, not the store).
const closureCTE = `WITH RECURSIVE closure(id) AS (
	SELECT id FROM ValidPaths WHERE path IN (%s)
	UNION SELECT r.reference FROM Refs r JOIN closure c ON r.referrer = c.id)
`

func (b *dbBackend) closure(ctx context.Context, roots []storepath.Path, refs bool) ([]Info, error) {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	var infos []Info
	err := b.consistent(func() error {
		infos = infos[:0]
		// One read transaction: both queries see the same snapshot.
		tx, err := b.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return fmt.Errorf("read %s: %w", b.path, err)
		}
		defer tx.Rollback()
		cte := fmt.Sprintf(closureCTE, placeholders(len(roots)))
		rows, err := tx.QueryContext(ctx, cte+`SELECT v.id, v.path, v.hash, coalesce(v.narSize, 0),
			v.registrationTime, coalesce(v.deriver, '') FROM closure c CROSS JOIN ValidPaths v ON v.id = c.id`, pathArgs(roots)...)
		if err != nil {
			return fmt.Errorf("closure query on %s: %w", b.path, err)
		}
		index := make(map[int64]int)
		for rows.Next() {
			var id int64
			var in Info
			var p string
			if err := rows.Scan(&id, &p, &in.NarHash, &in.NarSize, &in.RegistrationTime, &in.Deriver); err != nil {
				rows.Close()
				return err
			}
			in.Path = storepath.Path(p)
			index[id] = len(infos)
			infos = append(infos, in)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if !refs {
			return nil
		}
		for i := range infos {
			infos[i].References = []storepath.Path{}
		}
		rows, err = tx.QueryContext(ctx, cte+`SELECT r.referrer, r.reference FROM closure c CROSS JOIN Refs r ON r.referrer = c.id`, pathArgs(roots)...)
		if err != nil {
			return fmt.Errorf("references query on %s: %w", b.path, err)
		}
		defer rows.Close()
		for rows.Next() {
			var from, to int64
			if err := rows.Scan(&from, &to); err != nil {
				return err
			}
			fi, ok1 := index[from]
			ti, ok2 := index[to]
			if !ok1 || !ok2 {
				return fmt.Errorf("%s: reference %d -> %d outside the closure (database changed during the read?)", b.path, from, to)
			}
			infos[fi].References = append(infos[fi].References, infos[ti].Path)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, b.deadline(ctx, err)
	}
	for i := range infos {
		sortPaths(infos[i].References)
	}
	return infos, nil
}
