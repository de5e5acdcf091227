package closure

import (
	"context"
	"database/sql"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// The deadline really interrupts SQLite: a query of an infinite view (the
// table check skipped, as if a hostile schema had passed it) returns soon
// after the deadline, with a message naming it.
func TestDeadlineInterruptsSQLite(t *testing.T) {
	file := filepath.Join(t.TempDir(), "db.sqlite")
	rw, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Path: file}).String())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE Refs (referrer integer not null, reference integer not null)`,
		`CREATE VIEW ValidPaths (id, path) AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i, 'p' || i FROM n`,
	} {
		if _, err := rw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	rw.Close()
	db, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Path: file, RawQuery: "mode=ro"}).String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := &dbBackend{db: db, path: file, timeout: 300 * time.Millisecond}
	t0 := time.Now()
	_, err = b.valid(context.Background(), []storepath.Path{"/nix/store/00000000000000000000000000000000-x"})
	el := time.Since(t0)
	if err == nil || !strings.Contains(err.Error(), "did not answer within") {
		t.Fatalf("err = %v, want the deadline's message", err)
	}
	if el > 5*time.Second {
		t.Fatalf("returned after %v with a 300 ms deadline", el)
	}
	t.Logf("interrupted after %v: %v", el, err)
}
