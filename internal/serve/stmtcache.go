package serve

import (
	"context"
	"database/sql/driver"
	"sync"
)

// The SQLite driver (modernc) parses every statement it is given afresh:
// database/sql passes each query's text to the connection, which prepares,
// runs and finalizes it. In a burst of jobs that parsing was an eighth of
// the server's CPU, most of it for River's own queries, which are the same
// few texts every time. stmtCacheConnector keeps each connection's
// prepared statements by text and runs them again (modernc resets a
// statement after each use). SQLite re-prepares a cached statement itself
// when the schema changes (migrations), so a cached statement never runs
// against an old schema.

// stmtCacheMax bounds a connection's cached statements: River builds some
// texts per batch size, which would otherwise grow the cache forever.
const stmtCacheMax = 128

type stmtCacheConnector struct {
	dsn string
	d   driver.Driver
}

func (c stmtCacheConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.d.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &stmtCacheConn{Conn: conn, stmts: map[string]driver.Stmt{}}, nil
}

func (c stmtCacheConnector) Driver() driver.Driver { return c.d }

// stmtCacheConn wraps a modernc connection. A statement in use by open
// rows is out of the map until the rows are closed: a second query of the
// same text meanwhile prepares a statement of its own.
type stmtCacheConn struct {
	driver.Conn
	mu    sync.Mutex
	stmts map[string]driver.Stmt
}

// take returns the cached statement for query, out of the cache, or a new
// one.
func (c *stmtCacheConn) take(ctx context.Context, query string) (driver.Stmt, error) {
	c.mu.Lock()
	s, ok := c.stmts[query]
	delete(c.stmts, query)
	c.mu.Unlock()
	if ok {
		return s, nil
	}
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

// give puts a statement back for the next query of its text, or closes it
// when one is there already or the cache is full.
func (c *stmtCacheConn) give(query string, s driver.Stmt) {
	c.mu.Lock()
	if _, ok := c.stmts[query]; !ok && len(c.stmts) < stmtCacheMax {
		c.stmts[query] = s
		s = nil
	}
	c.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

func (c *stmtCacheConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	s, err := c.take(ctx, query)
	if err != nil {
		return nil, err
	}
	res, err := s.(driver.StmtExecContext).ExecContext(ctx, args)
	c.give(query, s)
	return res, err
}

func (c *stmtCacheConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s, err := c.take(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := s.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		c.give(query, s)
		return nil, err
	}
	return &stmtCacheRows{Rows: rows, put: func() { c.give(query, s) }}, nil
}

func (c *stmtCacheConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *stmtCacheConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *stmtCacheConn) Ping(ctx context.Context) error {
	return c.Conn.(driver.Pinger).Ping(ctx)
}

func (c *stmtCacheConn) ResetSession(ctx context.Context) error {
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c *stmtCacheConn) IsValid() bool { return c.Conn.(driver.Validator).IsValid() }

func (c *stmtCacheConn) Close() error {
	c.mu.Lock()
	for q, s := range c.stmts {
		s.Close()
		delete(c.stmts, q)
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// stmtCacheRows gives its statement back when closed.
type stmtCacheRows struct {
	driver.Rows
	once sync.Once
	put  func()
}

func (r *stmtCacheRows) Close() error {
	err := r.Rows.Close()
	r.once.Do(r.put)
	return err
}
