package serve

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"

	"modernc.org/sqlite"
)

// The server's SQLite connections run a text's statement again instead of
// parsing it again, and still answer as a plain connection would: the same
// text queried while its rows are open, a cached statement after the
// table it reads changed shape, and a failed statement followed by a good
// one.
func TestStmtCache(t *testing.T) {
	ctx := context.Background()
	db := sql.OpenDB(stmtCacheConnector{dsn: "file:" + filepath.Join(t.TempDir(), "t.db"), d: &sqlite.Driver{}})
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (a INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := db.ExecContext(ctx, `INSERT INTO t (a) VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	list := func(q string, args ...any) []int {
		t.Helper()
		rows, err := conn.QueryContext(ctx, q, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []int
		for rows.Next() {
			var a int
			if err := rows.Scan(&a); err != nil {
				t.Fatal(err)
			}
			out = append(out, a)
		}
		return out
	}
	const q = `SELECT a FROM t WHERE a >= $1 ORDER BY a`
	// The same text, nested: the inner query must not reuse (and reset)
	// the statement the outer rows are still reading.
	outer, err := conn.QueryContext(ctx, q, 1)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for outer.Next() {
		var a int
		outer.Scan(&a)
		got = append(got, a)
		if inner := list(q, 3); !slices.Equal(inner, []int{3}) {
			t.Fatalf("inner query: %v, want [3]", inner)
		}
	}
	outer.Close()
	if !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("outer query: %v, want [1 2 3]", got)
	}
	var cached int
	conn.Raw(func(c any) error {
		cached = len(c.(*stmtCacheConn).stmts)
		return nil
	})
	if cached == 0 {
		t.Fatal("no statement was cached")
	}
	// A cached statement sees a changed schema.
	if _, err := conn.ExecContext(ctx, `ALTER TABLE t RENAME COLUMN a TO b`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.QueryContext(ctx, q, 1); err == nil {
		t.Fatal("a cached statement read a column that no longer exists")
	}
	if got := list(`SELECT b FROM t WHERE b >= $1 ORDER BY b`, 2); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("after the rename: %v, want [2 3]", got)
	}
	// A failed statement leaves the connection usable.
	if _, err := conn.ExecContext(ctx, `INSERT INTO t (b) VALUES ($1, $2)`, 1, 2); err == nil {
		t.Fatal("an insert of two values into one column succeeded")
	}
	if got := list(`SELECT b FROM t WHERE b >= $1 ORDER BY b`, 3); !slices.Equal(got, []int{3}) {
		t.Fatalf("after a failed statement: %v, want [3]", got)
	}
}
