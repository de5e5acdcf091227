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
	"sort"
	"time"
)

// The server's own tables sit beside River's in the same database. The SQL is
// the common subset of SQLite and Postgres ($N placeholders, TEXT, BIGINT),
// so both drivers share it.
var schema = []string{
	// tenant is the tenant's name, or the operator's for role 'operator'.
	`CREATE TABLE IF NOT EXISTS closet_tokens (
		hash TEXT PRIMARY KEY,
		tenant TEXT NOT NULL,
		created_ns BIGINT NOT NULL,
		role TEXT NOT NULL DEFAULT 'tenant')`,
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
	// A database made before operators existed: its tokens are tenants'.
	if rows, err := db.QueryContext(ctx, `SELECT role FROM closet_tokens WHERE 1 = 0`); err == nil {
		rows.Close()
	} else if _, err := db.ExecContext(ctx, `ALTER TABLE closet_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'tenant'`); err != nil {
		return fmt.Errorf("add the role column to closet_tokens: %w", err)
	}
	return nil
}

// Token roles. A tenant submits jobs and sees only its own; an operator
// submits nothing and sees every tenant's jobs (the page, GET, events,
// cancel).
const (
	RoleTenant   = "tenant"
	RoleOperator = "operator"
)

// principal is who a token speaks for.
type principal struct {
	Name     string // the tenant, or the operator's name
	Operator bool
}

// conds is the WHERE clause of a query being built: each condition takes
// the next $N placeholder, so that both databases read it.
type conds struct {
	sql  string
	args []any
}

// and adds a condition whose one placeholder is written %d.
func (c *conds) and(cond string, arg any) *conds {
	c.args = append(c.args, arg)
	c.sql += fmt.Sprintf(" AND "+cond, len(c.args))
	return c
}

// where is " WHERE 1 = 1 AND ...".
func (c *conds) where() string { return " WHERE 1 = 1" + c.sql }

// next is the number of the next placeholder.
func (c *conds) next() int { return len(c.args) + 1 }

// visibleTo narrows the rows to what p may see: a tenant its own (column
// names the tenant), an operator all of them.
func (c *conds) visibleTo(p principal, column string) *conds {
	if p.Operator {
		return c
	}
	return c.and(column+" = $%d", p.Name)
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
	Tenant  string // the tenant, or the operator's name
	Role    string // RoleTenant or RoleOperator
	Created time.Time
}

// AddToken makes a new token for tenant and returns it; only its hash is kept.
func AddToken(ctx context.Context, db *sql.DB, tenant string) (string, error) {
	return addToken(ctx, db, tenant, RoleTenant)
}

// AddOperatorToken makes a new operator token (every tenant's jobs on the
// page and through GET; no submissions) and returns it; only its hash is
// kept.
func AddOperatorToken(ctx context.Context, db *sql.DB, name string) (string, error) {
	return addToken(ctx, db, name, RoleOperator)
}

func addToken(ctx context.Context, db *sql.DB, name, role string) (string, error) {
	if err := checkTenant(name); err != nil {
		return "", err
	}
	tok, err := newToken()
	if err != nil {
		return "", fmt.Errorf("make a token: %w", err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO closet_tokens (hash, tenant, created_ns, role) VALUES ($1, $2, $3, $4)`,
		tokenHash(tok), name, time.Now().UnixNano(), role); err != nil {
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
	rows, err := db.QueryContext(ctx, `SELECT hash, tenant, role, created_ns FROM closet_tokens ORDER BY role DESC, tenant, created_ns`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var ts []Token
	for rows.Next() {
		var h, tenant, role string
		var ns int64
		if err := rows.Scan(&h, &tenant, &role, &ns); err != nil {
			return nil, err
		}
		ts = append(ts, Token{ID: h[:12], Tenant: tenant, Role: role, Created: time.Unix(0, ns)})
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

// whoIs answers whom a bearer token speaks for (Name "" for nobody).
func whoIs(ctx context.Context, db *sql.DB, token string) (principal, error) {
	var p principal
	var role string
	err := db.QueryRowContext(ctx, `SELECT tenant, role FROM closet_tokens WHERE hash = $1`, tokenHash(token)).Scan(&p.Name, &role)
	if errors.Is(err, sql.ErrNoRows) {
		return principal{}, nil
	}
	p.Operator = role == RoleOperator
	return p, err
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

// getJob reads one job; a job of another tenant is not found (an operator
// finds every job).
func getJob(ctx context.Context, db *sql.DB, p principal, id string) (jobRow, bool, error) {
	c := (&conds{}).and("j.id = $%d", id).visibleTo(p, "j.tenant")
	j, err := scanJob(db.QueryRowContext(ctx, jobSelect+c.where(), c.args...))
	if errors.Is(err, sql.ErrNoRows) {
		return j, false, nil
	}
	return j, err == nil, err
}

// listJobs reads the latest jobs p may see, newest first; with state, only
// the jobs in that state.
func listJobs(ctx context.Context, db *sql.DB, p principal, state string, limit int) ([]jobRow, error) {
	c := (&conds{}).visibleTo(p, "j.tenant")
	if state != "" {
		c.and("j.state = $%d", state)
	}
	rows, err := db.QueryContext(ctx, jobSelect+c.where()+fmt.Sprintf(" ORDER BY j.created_ns DESC LIMIT $%d", c.next()), append(c.args, limit)...)
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
	// IN, not <> done: the index on state then reads only the live jobs,
	// however many finished jobs the table holds.
	rows, err := db.QueryContext(ctx, `SELECT state, count(*) FROM closet_jobs WHERE state IN ($1, $2) GROUP BY state`, StateQueued, StateRunning)
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

// tenantCounts are one tenant's figures on the page: jobs queued and
// running, and verdicts.
type tenantCounts struct {
	Tenant          string
	Queued, Running int64
	Verdicts        map[string]int64
}

// countsByTenant counts, per tenant that p may see, the jobs queued and
// running and the verdicts, sorted by tenant.
func countsByTenant(ctx context.Context, db *sql.DB, p principal) ([]tenantCounts, error) {
	byName := map[string]*tenantCounts{}
	get := func(t string) *tenantCounts {
		if byName[t] == nil {
			byName[t] = &tenantCounts{Tenant: t, Verdicts: map[string]int64{}}
		}
		return byName[t]
	}
	if !p.Operator {
		get(p.Name)
	}
	add := func(q string, args []any, f func(c *tenantCounts, key string, n int64)) error {
		rows, err := db.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var t, key string
			var n int64
			if err := rows.Scan(&t, &key, &n); err != nil {
				return err
			}
			f(get(t), key, n)
		}
		return rows.Err()
	}
	c := (&conds{}).and("state <> $%d", StateDone).visibleTo(p, "tenant")
	if err := add(`SELECT tenant, state, count(*) FROM closet_jobs`+c.where()+` GROUP BY tenant, state`, c.args, func(c *tenantCounts, state string, n int64) {
		switch state {
		case StateQueued:
			c.Queued = n
		case StateRunning:
			c.Running = n
		}
	}); err != nil {
		return nil, err
	}
	c = (&conds{}).visibleTo(p, "tenant")
	if err := add(`SELECT tenant, verdict, count(*) FROM closet_verdicts`+c.where()+` GROUP BY tenant, verdict`, c.args, func(c *tenantCounts, v string, n int64) { c.Verdicts[v] = n }); err != nil {
		return nil, err
	}
	out := make([]tenantCounts, 0, len(byName))
	for _, c := range byName {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant < out[j].Tenant })
	return out, nil
}
