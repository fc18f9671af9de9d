package broker

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
)

// stmtCache keeps statements prepared on the database (not on one
// transaction), so that a statement run by every batch is compiled once:
// modernc.org/sqlite compiles in Go what SQLite compiles in C, and a
// statement of a thousand rows' parameters costs milliseconds to compile.
// A transaction runs a cached statement through Tx.StmtContext, which
// reuses the statement already prepared on the transaction's connection.
//
// Statements must be prepared outside any transaction: SQLite has one
// connection (OpenSQLite), which a transaction holds, so preparing on the
// database from inside one would wait for it forever. Redeem prepares its
// statements before it begins its transaction (redeemStmts).
type stmtCache struct {
	mu     sync.Mutex
	stmts  map[string]*sql.Stmt
	redeem *redeemStmts
}

// get returns the statement of query, preparing it on db the first time;
// the caller holds c.mu.
func (c *stmtCache) get(ctx context.Context, db *sql.DB, query string) (*sql.Stmt, error) {
	if s := c.stmts[query]; s != nil {
		return s, nil
	}
	s, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if c.stmts == nil {
		c.stmts = map[string]*sql.Stmt{}
	}
	c.stmts[query] = s
	return s, nil
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, s := range c.stmts {
		s.Close()
		delete(c.stmts, q)
	}
	c.redeem = nil
}

// padSizes are the row counts of the cached statements that read a
// batch's books and lanes: a chunk of n rows runs the statement of the
// smallest size ≥ n, its parameters padded by repeating its last row
// (an IN list with a value twice matches its rows once), so that a
// few statements serve every batch.
var padSizes = []int{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, chunk}

// padSize is the smallest of padSizes that holds n rows (n ≤ chunk).
func padSize(n int) int {
	for _, s := range padSizes {
		if s >= n {
			return s
		}
	}
	return chunk
}

// redeemStmts are Redeem's statements on SQLite, prepared once.
type redeemStmts struct {
	vendors *sql.Stmt
	books   map[int]*sql.Stmt // by padSize
	lanes   map[int]*sql.Stmt // by padSize
	// update writes one lane that exists; never backwards.
	update *sql.Stmt
}

const (
	vendorsQuery = `SELECT name, account, currency FROM vendors WHERE key_hash = $1`
	booksQuery   = `SELECT k.id, k.vendor, a.currency, k.unit, k.lanes, k.length, k.salt, k.root, k.released
			FROM books k JOIN accounts a ON a.id = k.owner WHERE k.id IN `
	// On SQLite the lanes' read also returns their rowid (lanesSQL).
	lanesQuery = `SELECT book, lane, redeemed, value, reserved%s FROM lanes WHERE (book, lane) IN (VALUES `
	// The rowid read in the same transaction names one row, so SQLite
	// finds it without the primary key's index, and writes it without a
	// statement journal (a statement that writes several rows and may
	// fail part way first copies every page it changes to one). The lane's
	// key is checked all the same.
	laneUpdate = `UPDATE lanes SET redeemed = ?, value = ?, reserved = ? WHERE rowid = ? AND book = ? AND lane = ? AND redeemed <= ?`
)

// booksSQL is the query of loadBooks for n books.
func (d *DB) booksSQL(n int) string {
	var q strings.Builder
	q.WriteString(booksQuery)
	q.WriteByte('(')
	for i := 1; i <= n; i++ {
		if i > 1 {
			q.WriteString(", ")
		}
		q.WriteString(d.param(i))
	}
	q.WriteByte(')')
	return q.String()
}

// lanesSQL is the query of loadLanes for n lanes.
func (d *DB) lanesSQL(n int) string {
	var q strings.Builder
	rowid := ""
	if d.dialect == "sqlite" {
		rowid = ", rowid"
	}
	fmt.Fprintf(&q, lanesQuery, rowid)
	d.placeholders(&q, n, 2, []string{"", "CAST(%s AS BIGINT)"})
	q.WriteByte(')')
	return q.String()
}

// redeemStmts returns Redeem's prepared statements on SQLite (nil on
// PostgreSQL, whose driver caches the statements it prepares). It must be
// called outside a transaction.
func (d *DB) redeemStmts(ctx context.Context) (*redeemStmts, error) {
	if d.dialect != "sqlite" {
		return nil, nil
	}
	c := &d.prepared
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.redeem != nil {
		return c.redeem, nil
	}
	var err error
	get := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var s *sql.Stmt
		s, err = c.get(ctx, d.db, q)
		return s
	}
	rs := &redeemStmts{vendors: get(vendorsQuery), update: get(laneUpdate), books: map[int]*sql.Stmt{}, lanes: map[int]*sql.Stmt{}}
	for _, n := range padSizes {
		rs.books[n] = get(d.booksSQL(n))
		rs.lanes[n] = get(d.lanesSQL(n))
	}
	if err != nil {
		return nil, err
	}
	c.redeem = rs
	return rs, nil
}
