// Package broker is the ecoupons broker: it certifies users, registers
// vendors, holds the face value of coupon books, redeems coupons and keeps
// a double-entry ledger in SQL (embedded SQLite by default).
//
// Money never floats: amounts are int64 nanos (coupons.NanosPerUnit). Every
// transfer is one database transaction whose entries sum to zero; every
// account has a floor its balance may not cross (0 for pre-paid users,
// escrows and vendors; minus the credit limit for post-paid users; none
// for the outside world, which funds top-ups and receives payouts).
package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// Errors of the ledger.
var (
	// ErrInsufficientFunds means a transfer would take an account below its floor.
	ErrInsufficientFunds = errors.New("broker: insufficient funds")
	// ErrNoAccount is an unknown account.
	ErrNoAccount = errors.New("broker: no such account")
	// ErrCurrency means a transfer mixes currencies.
	ErrCurrency = errors.New("broker: currency mismatch")
	// ErrAmount is a zero, negative or overflowing amount.
	ErrAmount = errors.New("broker: bad amount")
	// ErrUnbalanced means a transaction's entries do not sum to zero.
	ErrUnbalanced = errors.New("broker: unbalanced transaction")
)

// Account kinds.
const (
	KindUser   = "user"   // a user's money: floor 0 (pre-paid) or −credit limit (post-paid)
	KindEscrow = "escrow" // the unspent face value of one book
	KindVendor = "vendor" // a vendor's earnings
	KindFees   = "fees"   // the broker's fees
	KindWorld  = "world"  // money outside the system: top-ups come from it, payouts go to it
	// KindReserve (validation.go): a book's value reserved for its vendor.
)

// noFloor is the floor of accounts that may go arbitrarily negative.
const noFloor = math.MinInt64

// DB is the broker's database.
type DB struct {
	db      *sql.DB
	dialect string // "sqlite" or "pgx"
	// prepared holds statements compiled once for the database's life
	// (prepared.go); SQLite only.
	prepared stmtCache
}

// OpenSQLite opens (creating if needed) the broker database at path, in
// WAL mode with synchronous=FULL, and applies the migrations.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	// One writer at a time is what SQLite does anyway; a single connection
	// makes BEGIN IMMEDIATE queue in Go instead of spinning on busy.
	db.SetMaxOpenConns(1)
	d := &DB{db: db, dialect: "sqlite"}
	if err := d.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

// OpenPostgres opens the broker database at a PostgreSQL URL
// (postgres://user:password@host:port/db) and applies the migrations.
// Every broker transaction runs SERIALIZABLE and is retried on
// serialization failures, so concurrent redemptions cannot pay twice.
func OpenPostgres(ctx context.Context, url string) (*DB, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("broker: PostgreSQL: %w", err)
	}
	db.SetMaxOpenConns(16)
	d := &DB{db: db, dialect: "pgx"}
	if err := d.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

// Open opens a broker database: a postgres:// URL, or a SQLite file path.
func Open(ctx context.Context, dsn string) (*DB, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return OpenPostgres(ctx, dsn)
	}
	return OpenSQLite(ctx, dsn)
}

// sqlFor adapts a statement of the migrations to the dialect.
func (d *DB) sqlFor(stmt string) string {
	if d.dialect == "pgx" {
		return strings.ReplaceAll(stmt, "INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")
	}
	return stmt
}

// retryable reports a PostgreSQL serialization failure or deadlock, after
// which the transaction is run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// Close closes the database.
func (d *DB) Close() error {
	d.prepared.close()
	return d.db.Close()
}

// migrations are the schema's versions: migrations[v] (v from 1) is the
// SQL that takes the schema from version v-1 to v; each runs once, in
// order (schema_version). Files add theirs with addMigration.
var migrations = map[int]string{
	1: `CREATE TABLE accounts (
		id       TEXT PRIMARY KEY,
		kind     TEXT NOT NULL,
		currency TEXT NOT NULL,
		floor    BIGINT NOT NULL,
		balance  BIGINT NOT NULL DEFAULT 0,
		created  BIGINT NOT NULL,
		CHECK (balance >= floor)
	);
	CREATE TABLE transactions (
		id      INTEGER PRIMARY KEY,
		kind    TEXT NOT NULL,
		idem    TEXT UNIQUE,
		created BIGINT NOT NULL,
		memo    TEXT NOT NULL DEFAULT ''
	);
	CREATE TABLE entries (
		tx      BIGINT NOT NULL REFERENCES transactions(id),
		account TEXT NOT NULL REFERENCES accounts(id),
		amount  BIGINT NOT NULL,
		PRIMARY KEY (tx, account)
	);
	CREATE INDEX entries_account ON entries(account, tx);`,
}

// addMigration registers the migration to schema version v.
func addMigration(v int, sql string) {
	if _, dup := migrations[v]; dup {
		panic(fmt.Sprintf("broker: two migrations to version %d", v))
	}
	migrations[v] = sql
}

func (d *DB) migrate(ctx context.Context) error {
	if _, err := d.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("broker: migrating: %w", err)
	}
	var v int
	err := d.db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := d.db.ExecContext(ctx, `INSERT INTO schema_version VALUES (0)`); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	for i := v; i < len(migrations); i++ {
		if migrations[i+1] == "" {
			return fmt.Errorf("broker: migration %d is missing (a bug: versions must be 1…%d)", i+1, len(migrations))
		}
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, stmt := range strings.Split(migrations[i+1], ";") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, d.sqlFor(stmt)); err != nil {
				tx.Rollback()
				return fmt.Errorf("broker: migration %d: %w", i+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = $1`, i+1); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// Account is a ledger account.
type Account struct {
	ID       string
	Kind     string
	Currency string
	Floor    int64
	Balance  int64
}

// createAccount inserts an account if it does not exist.
func createAccount(ctx context.Context, tx *sql.Tx, id, kind, currency string, floor int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO accounts (id, kind, currency, floor, balance, created) VALUES ($1, $2, $3, $4, 0, $5)
		ON CONFLICT (id) DO NOTHING`, id, kind, currency, floor, time.Now().Unix())
	return err
}

// Account returns an account.
func (d *DB) Account(ctx context.Context, id string) (Account, error) {
	var a Account
	err := d.db.QueryRowContext(ctx, `SELECT id, kind, currency, floor, balance FROM accounts WHERE id = $1`, id).
		Scan(&a.ID, &a.Kind, &a.Currency, &a.Floor, &a.Balance)
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("%w: %s", ErrNoAccount, id)
	}
	return a, err
}

// entry is one leg of a transfer.
type entry struct {
	account string
	amount  int64
}

// post records a balanced transaction inside tx: it checks currencies and
// floors, updates balances and writes the entries. idem, when not empty,
// makes the transaction idempotent: a second post with the same key is a
// no-op reported by done = false. Entries of the same account are merged
// (one entry per account); zero entries are left out.
//
// Its statements do not grow with the entries: the accounts are read,
// updated and the entries written a chunk of accounts per statement, so
// a batch's transfer from a thousand escrows costs a few statements.
func post(ctx context.Context, d *DB, tx *sql.Tx, now time.Time, kind, idem, memo string, entries ...entry) (done bool, err error) {
	var sum int64
	merged := make([]entry, 0, len(entries))
	at := make(map[string]int, len(entries))
	for _, e := range entries {
		if e.amount == 0 {
			continue
		}
		if (e.amount > 0 && sum > math.MaxInt64-e.amount) || (e.amount < 0 && sum < math.MinInt64-e.amount) {
			return false, ErrAmount
		}
		sum += e.amount
		if i, ok := at[e.account]; ok {
			m := &merged[i]
			if (e.amount > 0 && m.amount > math.MaxInt64-e.amount) || (e.amount < 0 && m.amount < math.MinInt64-e.amount) {
				return false, ErrAmount
			}
			m.amount += e.amount
			continue
		}
		at[e.account] = len(merged)
		merged = append(merged, e)
	}
	if sum != 0 {
		return false, fmt.Errorf("%w: entries sum to %d", ErrUnbalanced, sum)
	}
	entries = merged[:0]
	for _, e := range merged {
		if e.amount != 0 {
			entries = append(entries, e)
		}
	}
	var idemArg any
	if idem != "" {
		idemArg = idem
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM transactions WHERE idem = $1`, idem).Scan(&n); err != nil {
			return false, err
		}
		if n > 0 {
			return false, nil
		}
	}
	// Check every leg before changing anything, so that a refused
	// transfer leaves the transaction untouched.
	type accountRow struct {
		currency   string
		floor, bal int64
	}
	accounts := make(map[string]accountRow, len(entries))
	for rest := entries; len(rest) > 0; {
		n := min(len(rest), ledgerChunk)
		args := make([]any, n)
		var q strings.Builder
		q.WriteString(`SELECT id, currency, floor, balance FROM accounts WHERE id IN (`)
		for i, e := range rest[:n] {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString(d.param(i + 1))
			args[i] = e.account
		}
		q.WriteByte(')')
		rows, err := tx.QueryContext(ctx, q.String(), args...)
		if err != nil {
			return false, err
		}
		for rows.Next() {
			var id string
			var a accountRow
			if err := rows.Scan(&id, &a.currency, &a.floor, &a.bal); err != nil {
				rows.Close()
				return false, err
			}
			accounts[id] = a
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return false, err
		}
		rest = rest[n:]
	}
	currency := ""
	for _, e := range entries {
		a, ok := accounts[e.account]
		if !ok {
			return false, fmt.Errorf("%w: %s", ErrNoAccount, e.account)
		}
		cur, floor, bal := a.currency, a.floor, a.bal
		if currency == "" {
			currency = cur
		} else if cur != currency {
			return false, fmt.Errorf("%w: %s is in %s, not %s", ErrCurrency, e.account, cur, currency)
		}
		if (e.amount > 0 && bal > math.MaxInt64-e.amount) || (e.amount < 0 && (bal < math.MinInt64-e.amount || bal+e.amount < floor)) {
			if e.amount < 0 {
				if floor < 0 && floor != noFloor {
					return false, fmt.Errorf("%w: %s holds %s with a credit limit of %s, needs %s", ErrInsufficientFunds, e.account,
						money(bal, cur), money(-floor, cur), money(-e.amount, cur))
				}
				return false, fmt.Errorf("%w: %s holds %s, needs %s", ErrInsufficientFunds, e.account, money(bal, cur), money(-e.amount, cur))
			}
			return false, ErrAmount
		}
	}
	var txID int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO transactions (kind, idem, created, memo) VALUES ($1, $2, $3, $4) RETURNING id`,
		kind, idemArg, now.Unix(), memo).Scan(&txID); err != nil {
		return false, err
	}
	for rest := entries; len(rest) > 0; {
		n := min(len(rest), ledgerChunk)
		// The balances: one UPDATE … FROM (VALUES …) (column1 the
		// account, column2 the amount: the default names of a VALUES
		// list in both dialects).
		args := make([]any, 0, 3*n)
		var q strings.Builder
		q.WriteString(`UPDATE accounts SET balance = balance + v.column2 FROM (VALUES `)
		for i, e := range rest[:n] {
			if i > 0 {
				q.WriteString(", ")
			}
			fmt.Fprintf(&q, "(%s, CAST(%s AS BIGINT))", d.param(2*i+1), d.param(2*i+2))
			args = append(args, e.account, e.amount)
		}
		q.WriteString(`) AS v WHERE accounts.id = v.column1`)
		res, err := tx.ExecContext(ctx, q.String(), args...)
		if err != nil {
			return false, err
		}
		if got, err := res.RowsAffected(); err == nil && got != int64(n) {
			return false, fmt.Errorf("broker: %d of %d balances updated", got, n)
		}
		// The entries: one multi-row INSERT.
		args = args[:0]
		q.Reset()
		q.WriteString(`INSERT INTO entries (tx, account, amount) VALUES `)
		for i, e := range rest[:n] {
			if i > 0 {
				q.WriteString(", ")
			}
			fmt.Fprintf(&q, "(%s, %s, %s)", d.param(3*i+1), d.param(3*i+2), d.param(3*i+3))
			args = append(args, txID, e.account, e.amount)
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return false, err
		}
		rest = rest[n:]
	}
	return true, nil
}

// param is the i-th parameter (from 1) of a statement: $i for
// PostgreSQL; for SQLite an anonymous ?, numbered in order of appearance
// (SQLite takes $i for a name, and looks names up in a list: quadratic
// in a statement of thousands of parameters).
func (d *DB) param(i int) string {
	if d.dialect == "pgx" {
		return "$" + strconv.Itoa(i)
	}
	return "?"
}

// ledgerChunk bounds the accounts one statement of post reads or writes
// (3 parameters each: far below either database's limit).
const ledgerChunk = 1000

// CheckInvariants verifies the ledger: every transaction sums to zero,
// every balance equals the sum of its entries and respects its floor.
func (d *DB) CheckInvariants(ctx context.Context) error {
	var bad int
	if err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT tx FROM entries GROUP BY tx HAVING SUM(amount) <> 0) AS t`).Scan(&bad); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d transactions do not sum to zero", ErrUnbalanced, bad)
	}
	if err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts a WHERE a.balance <> COALESCE((SELECT SUM(amount) FROM entries e WHERE e.account = a.id), 0) OR a.balance < a.floor`).Scan(&bad); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("broker: %d accounts whose balance disagrees with their entries or is below the floor", bad)
	}
	if err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts a WHERE a.kind = 'reserve' AND a.balance <> COALESCE((SELECT SUM(l.reserved) FROM lanes l WHERE 'reserve:' || l.book = a.id), 0)`).Scan(&bad); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d books whose reserve account disagrees with their lanes' reservations", ErrUnbalanced, bad)
	}
	if err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT currency FROM accounts GROUP BY currency HAVING SUM(balance) <> 0) AS t`).Scan(&bad); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%w: the balances of %d currencies do not sum to zero", ErrUnbalanced, bad)
	}
	return nil
}
