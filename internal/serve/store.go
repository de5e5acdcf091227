package serve

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// The server's own tables sit beside River's in the same database. The SQL is
// the common subset of SQLite and Postgres ($N placeholders, TEXT, BIGINT),
// so both drivers share it.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS closet_tokens (
		hash TEXT PRIMARY KEY,
		tenant TEXT NOT NULL,
		created_ns BIGINT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS closet_jobs (
		id TEXT PRIMARY KEY,
		tenant TEXT NOT NULL,
		state TEXT NOT NULL,
		cancel_requested BIGINT NOT NULL DEFAULT 0,
		river_id BIGINT NOT NULL DEFAULT 0,
		request TEXT NOT NULL,
		runs BIGINT NOT NULL DEFAULT 0,
		created_ns BIGINT NOT NULL,
		started_ns BIGINT NOT NULL DEFAULT 0,
		worker TEXT NOT NULL DEFAULT '')`,
	`CREATE INDEX IF NOT EXISTS closet_jobs_tenant ON closet_jobs (tenant, created_ns)`,
	`CREATE INDEX IF NOT EXISTS closet_jobs_state ON closet_jobs (state)`,
	// One row per finished job: the primary key is what makes a second
	// verdict for the same job impossible, whatever crashes in between.
	`CREATE TABLE IF NOT EXISTS closet_verdicts (
		job_id TEXT PRIMARY KEY,
		tenant TEXT NOT NULL,
		verdict TEXT NOT NULL,
		result TEXT NOT NULL,
		finished_ns BIGINT NOT NULL)`,
	// Every server says it is alive here; a running job whose server has
	// been silent too long goes back to the queue (reap).
	`CREATE TABLE IF NOT EXISTS closet_workers (
		id TEXT PRIMARY KEY,
		seen_ns BIGINT NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS closet_verdicts_tenant ON closet_verdicts (tenant, verdict)`,
}

// Job states as the API shows them.
const (
	StateQueued  = "queued"
	StateRunning = "running"
	StateDone    = "done"
)

func migrateOwn(ctx context.Context, db *sql.DB) error {
	for _, q := range schema {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("create the server's tables: %w", err)
		}
	}
	return nil
}

// tokenHash is what the database keeps of a token: its SHA-256, hex.
func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// newToken is 256 random bits, URL-safe, with a prefix that says what it is.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "closet_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// newJobID is 80 random bits: ids say nothing about other tenants' jobs.
func newJobID() string {
	b := make([]byte, 10)
	rand.Read(b)
	return "j" + hex.EncodeToString(b)
}

// Token is one listed token: never the token itself, which is not kept.
type Token struct {
	ID      string // the first 12 hex digits of its hash
	Tenant  string
	Created time.Time
}

// AddToken makes a new token for tenant and returns it; only its hash is kept.
func AddToken(ctx context.Context, db *sql.DB, tenant string) (string, error) {
	if err := checkTenant(tenant); err != nil {
		return "", err
	}
	tok, err := newToken()
	if err != nil {
		return "", fmt.Errorf("make a token: %w", err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO closet_tokens (hash, tenant, created_ns) VALUES ($1, $2, $3)`,
		tokenHash(tok), tenant, time.Now().UnixNano()); err != nil {
		return "", fmt.Errorf("store the token: %w", err)
	}
	return tok, nil
}

func checkTenant(t string) error {
	if t == "" || len(t) > 64 {
		return errors.New("tenant: want 1 to 64 characters of a-z, A-Z, 0-9, '.', '_' or '-'")
	}
	for _, c := range t {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("tenant %q: want only a-z, A-Z, 0-9, '.', '_' or '-'", t)
		}
	}
	return nil
}

// ListTokens lists every token's id and tenant.
func ListTokens(ctx context.Context, db *sql.DB) ([]Token, error) {
	rows, err := db.QueryContext(ctx, `SELECT hash, tenant, created_ns FROM closet_tokens ORDER BY tenant, created_ns`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var ts []Token
	for rows.Next() {
		var h, tenant string
		var ns int64
		if err := rows.Scan(&h, &tenant, &ns); err != nil {
			return nil, err
		}
		ts = append(ts, Token{ID: h[:12], Tenant: tenant, Created: time.Unix(0, ns)})
	}
	return ts, rows.Err()
}

// RevokeToken deletes the token whose id (a prefix of its hash, at least 8
// hex digits) is given; it fails unless exactly one token matches.
func RevokeToken(ctx context.Context, db *sql.DB, id string) error {
	if len(id) < 8 {
		return fmt.Errorf("token id %q: give at least 8 hex digits (closet serve token list shows them)", id)
	}
	if _, err := hex.DecodeString(id[:len(id)&^1]); err != nil {
		return fmt.Errorf("token id %q: not hex (closet serve token list shows ids)", id)
	}
	res, err := db.ExecContext(ctx, `DELETE FROM closet_tokens WHERE hash IN (SELECT hash FROM closet_tokens WHERE substr(hash, 1, $1) = $2)`, len(id), id)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("token id %s: no such token (closet serve token list)", id)
	}
	return nil
}

// tenantOf answers which tenant a bearer token belongs to ("" for none).
func tenantOf(ctx context.Context, db *sql.DB, token string) (string, error) {
	var tenant string
	err := db.QueryRowContext(ctx, `SELECT tenant FROM closet_tokens WHERE hash = $1`, tokenHash(token)).Scan(&tenant)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return tenant, err
}

// jobRow is a job with its verdict, when it has one.
type jobRow struct {
	ID, Tenant, State string
	Request           string
	Runs              int64
	Cancel            bool
	Created, Started  int64
	Verdict           string
	Result            string
	Finished          int64
}

const jobSelect = `SELECT j.id, j.tenant, j.state, j.request, j.runs, j.cancel_requested, j.created_ns, j.started_ns,
	COALESCE(v.verdict, ''), COALESCE(v.result, ''), COALESCE(v.finished_ns, 0)
	FROM closet_jobs j LEFT JOIN closet_verdicts v ON v.job_id = j.id`

type scanner interface{ Scan(...any) error }

func scanJob(r scanner) (jobRow, error) {
	var j jobRow
	var cancel int64
	err := r.Scan(&j.ID, &j.Tenant, &j.State, &j.Request, &j.Runs, &cancel, &j.Created, &j.Started, &j.Verdict, &j.Result, &j.Finished)
	j.Cancel = cancel != 0
	return j, err
}

// getJob reads one job; a job of another tenant is not found.
func getJob(ctx context.Context, db *sql.DB, tenant, id string) (jobRow, bool, error) {
	j, err := scanJob(db.QueryRowContext(ctx, jobSelect+` WHERE j.id = $1 AND j.tenant = $2`, id, tenant))
	if errors.Is(err, sql.ErrNoRows) {
		return j, false, nil
	}
	return j, err == nil, err
}

// listJobs reads a tenant's latest jobs, newest first.
func listJobs(ctx context.Context, db *sql.DB, tenant string, limit int) ([]jobRow, error) {
	rows, err := db.QueryContext(ctx, jobSelect+` WHERE j.tenant = $1 ORDER BY j.created_ns DESC LIMIT $2`, tenant, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var js []jobRow
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		js = append(js, j)
	}
	return js, rows.Err()
}

// depth counts the jobs accepted and not yet finished, on every machine.
func depth(ctx context.Context, db *sql.DB) (queued, running int64, err error) {
	rows, err := db.QueryContext(ctx, `SELECT state, count(*) FROM closet_jobs WHERE state <> $1 GROUP BY state`, StateDone)
	if err != nil {
		return 0, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return 0, 0, err
		}
		switch s {
		case StateQueued:
			queued = n
		case StateRunning:
			running = n
		}
	}
	return queued, running, rows.Err()
}

// verdictCounts counts a tenant's verdicts.
func verdictCounts(ctx context.Context, db *sql.DB, tenant string) (map[string]int64, error) {
	rows, err := db.QueryContext(ctx, `SELECT verdict, count(*) FROM closet_verdicts WHERE tenant = $1 GROUP BY verdict`, tenant)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string]int64{}
	for rows.Next() {
		var v string
		var n int64
		if err := rows.Scan(&v, &n); err != nil {
			return nil, err
		}
		m[v] = n
	}
	return m, rows.Err()
}
