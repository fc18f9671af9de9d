package broker

import (
	"database/sql"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
)

// TestWriteLanesNeverBackwards: writeLanes fails the batch when a lane's
// row moved past what the batch read (another writer, here a statement
// of the same transaction between the read and the write), and writes
// the lanes otherwise; on SQLite (one UPDATE per lane, by the rowid
// read) and on PostgreSQL (one UPDATE … FROM (VALUES …) per chunk).
func TestWriteLanesNeverBackwards(t *testing.T) { onBoth(t, testWriteLanesNeverBackwards) }

func testWriteLanesNeverBackwards(t *testing.T) {
	f := newFixture(t)
	vk := pub(t, f.vendor).Hash()
	bk := f.newBook(t, 4, 8, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	if res, err := f.b.Redeem(ctx, vk, []Redemption{bk.coupon(0, 3, true), bk.coupon(1, 2, true)}); err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatal(err, res)
	}
	stmts, err := f.b.DB.redeemStmts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := bk.sb.Book.ID()
	bookHex := hex.EncodeToString(id[:])
	redeemed := func(tx *sql.Tx, lane int) int64 {
		var n int64
		if err := tx.QueryRowContext(ctx, `SELECT redeemed FROM lanes WHERE book = $1 AND lane = $2`, bookHex, lane).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rollback := errors.New("rolled back")
	for _, moved := range []bool{false, true} {
		var writeErr error
		err := f.b.tx(ctx, func(tx *sql.Tx) error {
			batch := []Redemption{bk.coupon(0, 5, false), bk.coupon(1, 4, false)}
			rs := &redeemState{db: f.b.DB, stmts: stmts, books: map[[32]byte]*bookRow{}, lanes: map[coupons.LaneID]*laneRow{}}
			if err := rs.loadBooks(ctx, tx, batch); err != nil {
				return err
			}
			if err := rs.loadLanes(ctx, tx, batch); err != nil {
				return err
			}
			for _, r := range batch {
				l := rs.lanes[r.Lane]
				if !l.exists {
					t.Fatalf("lane %d not read", r.Lane.Lane)
				}
				l.redeemed, l.value, l.changed = int64(r.Index), r.Value, true
				rs.changed = append(rs.changed, l)
			}
			if moved {
				if _, err := tx.ExecContext(ctx, `UPDATE lanes SET redeemed = 6 WHERE book = $1 AND lane = 0`, bookHex); err != nil {
					return err
				}
			}
			writeErr = rs.writeLanes(ctx, tx)
			if writeErr == nil {
				if r0, r1 := redeemed(tx, 0), redeemed(tx, 1); r0 != 5 || r1 != 4 {
					t.Errorf("moved %v: lanes at %d and %d after the write, want 5 and 4", moved, r0, r1)
				}
			}
			return rollback
		})
		if !errors.Is(err, rollback) {
			t.Fatal(err)
		}
		if (writeErr != nil) != moved {
			t.Errorf("moved %v: writeLanes: %v", moved, writeErr)
		}
	}
	tx, err := f.b.DB.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if r0, r1 := redeemed(tx, 0), redeemed(tx, 1); r0 != 3 || r1 != 2 {
		t.Errorf("lanes at %d and %d after the rollbacks, want 3 and 2", r0, r1)
	}
}
