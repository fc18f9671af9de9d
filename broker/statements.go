package broker

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// StatementRow aggregates one day's transactions of one kind on an account.
type StatementRow struct {
	Day          time.Time // UTC midnight
	Kind         string    // topup, book, redeem, release
	Transactions int64
	Amount       int64 // nanos, signed: positive into the account
}

// Statement is an account's activity over [From, To), aggregated per day
// and kind, with its opening and closing balances.
type Statement struct {
	Account  string
	Currency string
	From, To time.Time
	Opening  int64
	Closing  int64
	Rows     []StatementRow
}

// Statement aggregates an account's entries between from and to (UTC
// days; to exclusive).
func (b *Broker) Statement(ctx context.Context, account string, from, to time.Time) (*Statement, error) {
	a, err := b.DB.Account(ctx, account)
	if err != nil {
		return nil, err
	}
	if !to.After(from) || to.Sub(from) > 366*24*time.Hour {
		return nil, fmt.Errorf("%w: a statement covers 1 to 366 days", errBadRequest)
	}
	st := &Statement{Account: account, Currency: a.Currency, From: from, To: to}
	q := func(query string, args ...any) *sql.Row { return b.DB.db.QueryRowContext(ctx, query, args...) }
	var opening sql.NullInt64
	if err := q(`SELECT SUM(e.amount) FROM entries e JOIN transactions t ON t.id = e.tx WHERE e.account = $1 AND t.created < $2`,
		account, from.Unix()).Scan(&opening); err != nil {
		return nil, err
	}
	st.Opening, st.Closing = opening.Int64, opening.Int64
	rows, err := b.DB.db.QueryContext(ctx, `SELECT (t.created / 86400) * 86400 AS day, t.kind, COUNT(*), SUM(e.amount)
		FROM entries e JOIN transactions t ON t.id = e.tx
		WHERE e.account = $1 AND t.created >= $2 AND t.created < $3
		GROUP BY day, t.kind ORDER BY day, t.kind`, account, from.Unix(), to.Unix())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var r StatementRow
		var day int64
		if err := rows.Scan(&day, &r.Kind, &r.Transactions, &r.Amount); err != nil {
			return nil, err
		}
		r.Day = time.Unix(day, 0).UTC()
		st.Closing += r.Amount
		st.Rows = append(st.Rows, r)
	}
	return st, rows.Err()
}
