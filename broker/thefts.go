package broker

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"fmt"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/tesla"
)

func init() {
	// After every other migration (this file's init runs last): its
	// position in the list is its schema version.
	addMigration(5, `CREATE TABLE thefts (
		book     TEXT NOT NULL REFERENCES books(id),
		lane     BIGINT NOT NULL,
		idx      BIGINT NOT NULL,
		digest   TEXT NOT NULL,
		mac      TEXT NOT NULL,
		next     TEXT NOT NULL,
		vendor   TEXT NOT NULL,
		reported BIGINT NOT NULL,
		PRIMARY KEY (book, lane, idx)
	)`)
}

// The outcomes of theft evidence attached to a redemption
// (RedeemResult.Theft).
const (
	// TheftRecorded: the evidence holds and is recorded (again: idempotent).
	TheftRecorded = "recorded"
)

// Theft is a recorded theft: coupon Index of a lane was spent for a request
// whose binding tag the next chain value does not produce, so whoever
// spent it did not know that value: not the lane's holder.
type Theft struct {
	Lane     coupons.LaneID
	Index    uint32
	Digest   [32]byte // the request the thief paid for
	Vendor   string
	Reported int64 // Unix seconds
}

// theft checks evidence e against the lane's known value v at index at
// (the highest redeemed) and records it; it returns TheftRecorded or why
// the evidence was refused. Refused evidence does not affect the
// redemption it came with.
func (b *Broker) theft(ctx context.Context, tx *sql.Tx, vendor, bookHex string, tag *coupons.LaneTag, lane coupons.LaneID, at uint32, v coupons.Value, e *coupons.Theft) (string, error) {
	next := e.Index + 1
	switch {
	case e.Index == 0 || next <= e.Index:
		return "refused: bad index", nil
	case next > at:
		return fmt.Sprintf("refused: coupon %d is not redeemed yet (lane redeemed up to %d)", next, at), nil
	case at-next > b.MaxRedeemSteps:
		return "refused: evidence too far behind the lane's last redemption", nil
	}
	if got := coupons.Walk(tag, at, v, next); subtle.ConstantTimeCompare(got[:], e.Next[:]) != 1 {
		return fmt.Sprintf("refused: the value given is not coupon %d of the lane", next), nil
	}
	if tesla.VerifyBinding(tesla.Key(e.Next), e.Digest, e.MAC) {
		return "refused: the binding verifies: no theft", nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO thefts (book, lane, idx, digest, mac, next, vendor, reported) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT DO NOTHING`, bookHex, lane.Lane, e.Index, hex.EncodeToString(e.Digest[:]), hex.EncodeToString(e.MAC[:]),
		hex.EncodeToString(e.Next[:]), vendor, b.Now().Unix())
	if err != nil {
		return "", err
	}
	return TheftRecorded, nil
}

// Thefts returns the thefts recorded on the books of the user whose key
// hash is owner, oldest first.
func (b *Broker) Thefts(ctx context.Context, owner spki.KeyHash) ([]Theft, error) {
	return b.thefts(ctx, `JOIN books k ON k.id = t.book JOIN users u ON u.account = k.owner WHERE u.key_hash = $1`, hexKey(owner))
}

// thefts returns the thefts that where (a join and condition on the
// thefts t, with one parameter, arg) selects, oldest first.
func (b *Broker) thefts(ctx context.Context, where string, arg string) ([]Theft, error) {
	var out []Theft
	err := b.tx(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, `SELECT t.book, t.lane, t.idx, t.digest, t.vendor, t.reported FROM thefts t
			`+where+` ORDER BY t.reported, t.book, t.lane, t.idx`, arg)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var th Theft
			var bookHex, digestHex string
			var lane, idx int64
			if err := rows.Scan(&bookHex, &lane, &idx, &digestHex, &th.Vendor, &th.Reported); err != nil {
				return err
			}
			hex.Decode(th.Lane.Book[:], []byte(bookHex))
			hex.Decode(th.Digest[:], []byte(digestHex))
			th.Lane.Lane, th.Index = uint32(lane), uint32(idx)
			out = append(out, th)
		}
		return rows.Err()
	})
	return out, err
}
