package broker

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// Redemption is one lane's highest coupon, submitted by the vendor. The
// first redemption of a lane also carries the lane's anchor and its Merkle
// proof, which the broker checks against the book's root and keeps.
type Redemption struct {
	Lane   coupons.LaneID
	Index  uint32
	Value  coupons.Value
	Anchor *coupons.Value // required on a lane's first redemption
	Proof  [][32]byte
	// Theft, when set, is evidence the gate found on this lane (a coupon
	// spent by someone who did not know the next chain value); it is
	// checked against the redeemed chain and recorded for the book's owner.
	Theft *coupons.Theft
}

// RedeemResult says what one redemption paid.
type RedeemResult struct {
	Lane    coupons.LaneID
	Coupons uint32 // newly redeemed coupons (0 when already redeemed: idempotent)
	Amount  int64  // paid to the vendor, in nanos, after the fee
	Fee     int64
	Err     error // why this item was refused (nil when paid or already paid)
	// Code is Err's reason code (RedeemUnknownBook, …; "" when paid).
	Code string
	// Theft is TheftRecorded, or why the item's theft evidence was
	// refused ("" without evidence).
	Theft string
}

// maxBatch bounds one redemption batch.
const maxBatch = 10000

// Redeem pays a vendor for a batch of redemptions, in one database
// transaction: for each lane only the increase over what it already
// redeemed is paid, from the book's escrow to the vendor (less the fee).
// A retried batch pays nothing twice. Items that fail verification are
// refused one by one (RedeemResult.Err) without affecting the others.
func (b *Broker) Redeem(ctx context.Context, vendorKey spki.KeyHash, batch []Redemption) ([]RedeemResult, error) {
	if len(batch) == 0 || len(batch) > maxBatch {
		return nil, fmt.Errorf("%w: a batch holds 1 to %d redemptions", ErrRedemption, maxBatch)
	}
	out := make([]RedeemResult, len(batch))
	err := b.tx(ctx, func(tx *sql.Tx) error {
		// The vendor names of the key: several when the vendor registered
		// one per currency, say; each book pays the account of its name.
		rs := &redeemState{books: map[[32]byte]*bookRow{}, totals: map[[32]byte]*bookTotals{}, vendors: map[string]vendorRow{}}
		rows, err := tx.QueryContext(ctx, `SELECT name, account, currency FROM vendors WHERE key_hash = $1`, hexKey(vendorKey))
		if err != nil {
			return err
		}
		for rows.Next() {
			var name string
			var v vendorRow
			if err := rows.Scan(&name, &v.account, &v.currency); err != nil {
				rows.Close()
				return err
			}
			rs.vendors[name] = v
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(rs.vendors) == 0 {
			return fmt.Errorf("%w: no vendor registered for this key", ErrUnknownVendor)
		}
		// Prepared once per batch: the three statements every item runs.
		for _, p := range []struct {
			dst   **sql.Stmt
			query string
		}{
			{&rs.selectLane, `SELECT redeemed, value, reserved FROM lanes WHERE book = $1 AND lane = $2`},
			{&rs.insertLane, `INSERT INTO lanes (book, lane, redeemed, value) VALUES ($1, $2, $3, $4)`},
			{&rs.updateLane, `UPDATE lanes SET redeemed = $1, value = $2, reserved = $3 WHERE book = $4 AND lane = $5`},
		} {
			if *p.dst, err = tx.PrepareContext(ctx, p.query); err != nil {
				return err
			}
			defer (*p.dst).Close()
		}
		for i := range batch {
			res, err := b.redeemOne(ctx, tx, rs, &batch[i])
			if err != nil && !isItemError(err) {
				return err // a database failure: the whole batch rolls back
			}
			res.Err = err
			if ie := (itemError{}); errors.As(err, &ie) {
				res.Code = ie.code
			}
			out[i] = res
		}
		// One ledger transaction per book: the escrow (and the reserve, for
		// reserved lanes) pays the vendor and the fees. The lanes' redeemed
		// marks, updated above in the same database transaction, make the
		// batch idempotent.
		for book, t := range rs.totals {
			amount := t.escrow + t.reserve
			if amount == 0 {
				continue
			}
			v := rs.vendors[rs.books[book].vendor]
			if _, err := post(ctx, tx, b.Now(), "redeem", "", "", entry{escrowAccount(book), -t.escrow}, entry{reserveAccount(book), -t.reserve},
				entry{v.account, amount - t.fee}, entry{feesAccount(v.currency), t.fee}); err != nil {
				return err // the escrow always covers its book's coupons: a failure here is a bug or corruption
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// redeemState caches, within one batch, the books it touches and the
// amounts owed per book.
type redeemState struct {
	books   map[[32]byte]*bookRow
	totals  map[[32]byte]*bookTotals
	vendors map[string]vendorRow // the caller's vendor names

	selectLane, insertLane, updateLane *sql.Stmt
}

// vendorRow is a vendor name's account and currency.
type vendorRow struct{ account, currency string }

// bookTotals is what one batch pays from a book: from its escrow, from
// its reserve (reserved lanes), and the broker's fee out of both.
type bookTotals struct{ escrow, reserve, fee int64 }

type bookRow struct {
	vendor, currency    string
	unit, lanes, length int64
	released            int64
	salt, root          [32]byte
}

// itemError marks a refusal of one item (as opposed to a database error),
// with its reason code (RedeemResult.Code).
type itemError struct {
	error
	code string
}

func (e itemError) Unwrap() error { return e.error }

func isItemError(err error) bool {
	var ie itemError
	return errors.As(err, &ie)
}

func refuse(code, format string, args ...any) error {
	return itemError{fmt.Errorf("%w: "+format, append([]any{ErrRedemption}, args...)...), code}
}

func (b *Broker) redeemOne(ctx context.Context, tx *sql.Tx, rs *redeemState, r *Redemption) (RedeemResult, error) {
	res := RedeemResult{Lane: r.Lane}
	bookHex := hex.EncodeToString(r.Lane.Book[:])
	bk, ok := rs.books[r.Lane.Book]
	if !ok {
		bk = &bookRow{}
		var saltHex, rootHex string
		err := tx.QueryRowContext(ctx, `SELECT k.vendor, a.currency, k.unit, k.lanes, k.length, k.salt, k.root, k.released
			FROM books k JOIN accounts a ON a.id = k.owner WHERE k.id = $1`, bookHex).
			Scan(&bk.vendor, &bk.currency, &bk.unit, &bk.lanes, &bk.length, &saltHex, &rootHex, &bk.released)
		if errors.Is(err, sql.ErrNoRows) {
			return res, itemError{fmt.Errorf("%w: %x…", ErrUnknownBook, r.Lane.Book[:6]), RedeemUnknownBook}
		}
		if err != nil {
			return res, err
		}
		hex.Decode(bk.salt[:], []byte(saltHex))
		hex.Decode(bk.root[:], []byte(rootHex))
		rs.books[r.Lane.Book] = bk
	}
	v, mine := rs.vendors[bk.vendor]
	vendor := bk.vendor
	switch {
	case !mine:
		return res, itemError{fmt.Errorf("%w: book of %s", ErrNotYourBook, bk.vendor), RedeemNotYourBook}
	case bk.currency != v.currency:
		// Never so for a book registered here (RegisterBook refuses a
		// book in another currency than its vendor's); refused rather
		// than posted across currencies.
		return res, itemError{fmt.Errorf("%w: the book is in %s, vendor %s is paid in %s", ErrCurrency, bk.currency, vendor, v.currency), RedeemCurrencyMismatch}
	case bk.released != 0:
		return res, itemError{ErrBookClosed, RedeemBookClosed}
	case int64(r.Lane.Lane) >= bk.lanes:
		return res, refuse(RedeemLaneOutOfRange, "lane %d of %d", r.Lane.Lane, bk.lanes)
	case int64(r.Index) > bk.length || r.Index == 0:
		return res, refuse(RedeemBadIndex, "index %d outside 1…%d", r.Index, bk.length)
	}

	var prev uint32
	var prevValue coupons.Value
	var redeemed, reserved int64
	var valueHex string
	err := rs.selectLane.QueryRowContext(ctx, bookHex, r.Lane.Lane).Scan(&redeemed, &valueHex, &reserved)
	first := errors.Is(err, sql.ErrNoRows)
	switch {
	case first:
		if r.Anchor == nil {
			return res, refuse(RedeemBadProof, "first redemption of lane %d needs its anchor and Merkle proof", r.Lane.Lane)
		}
		if err := coupons.VerifyMerkleProof(bk.root, uint32(bk.lanes), r.Lane.Lane, r.Anchor, r.Proof); err != nil {
			return res, itemError{fmt.Errorf("%w: %w", ErrRedemption, err), RedeemBadProof}
		}
		prevValue = *r.Anchor
	case err != nil:
		return res, err
	default:
		prev = uint32(redeemed)
		hex.Decode(prevValue[:], []byte(valueHex))
	}
	tag := coupons.NewLaneTag(bk.salt, r.Lane.Lane)
	if r.Index <= prev {
		// Already redeemed: pays nothing, not an error.
		if r.Theft != nil {
			res.Theft, err = b.theft(ctx, tx, vendor, bookHex, &tag, r.Lane, prev, prevValue, r.Theft)
		}
		return res, err
	}
	if r.Index-prev > b.MaxRedeemSteps {
		return res, refuse(RedeemMoreOften, "%d coupons since the last redemption of this lane, limit %d: redeem more often", r.Index-prev, b.MaxRedeemSteps)
	}
	if got := coupons.Walk(&tag, r.Index, r.Value, prev); subtle.ConstantTimeCompare(got[:], prevValue[:]) != 1 {
		return res, refuse(RedeemBadCoupon, "coupon %d does not hash to the lane's last redeemed value", r.Index)
	}
	n := r.Index - prev
	amount, err := coupons.MulAmount(uint64(n), bk.unit)
	if err != nil {
		return res, itemError{err, RedeemRefused}
	}
	fee := amount/10000*b.FeeBasisPoints + amount%10000*b.FeeBasisPoints/10000
	// A reserved lane is paid from its reservation, which holds exactly
	// its unredeemed value.
	fromReserve := min(amount, reserved)
	if first {
		_, err = rs.insertLane.ExecContext(ctx, bookHex, r.Lane.Lane, r.Index, hex.EncodeToString(r.Value[:]))
	} else {
		_, err = rs.updateLane.ExecContext(ctx, r.Index, hex.EncodeToString(r.Value[:]), reserved-fromReserve, bookHex, r.Lane.Lane)
	}
	if err != nil {
		return res, err
	}
	t := rs.totals[r.Lane.Book]
	if t == nil {
		t = &bookTotals{}
		rs.totals[r.Lane.Book] = t
	}
	t.escrow += amount - fromReserve
	t.reserve += fromReserve
	t.fee += fee
	res.Coupons, res.Amount, res.Fee = n, amount-fee, fee
	if r.Theft != nil {
		res.Theft, err = b.theft(ctx, tx, vendor, bookHex, &tag, r.Lane, r.Index, r.Value, r.Theft)
	}
	return res, err
}

// ReleaseExpired returns the unspent escrow of every book whose expiry is
// more than ReleaseGrace in the past to its owner, and closes the book to
// further redemptions. It returns the number of books released.
func (b *Broker) ReleaseExpired(ctx context.Context) (int, error) {
	cutoff := b.Now().Add(-b.ReleaseGrace).Unix()
	rows, err := b.DB.db.QueryContext(ctx, `SELECT id, owner FROM books WHERE released = 0 AND not_after < $1`, cutoff)
	if err != nil {
		return 0, err
	}
	type due struct{ id, owner string }
	var list []due
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.id, &d.owner); err != nil {
			rows.Close()
			return 0, err
		}
		list = append(list, d)
	}
	rows.Close()
	n := 0
	for _, d := range list {
		err := b.tx(ctx, func(tx *sql.Tx) error {
			var bal, res int64
			if err := tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = $1`, "escrow:"+d.id).Scan(&bal); err != nil {
				return err
			}
			// The reserve account exists once a lane was reserved.
			err := tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = $1`, "reserve:"+d.id).Scan(&res)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if bal+res > 0 {
				if _, err := post(ctx, tx, b.Now(), "release", "release:"+d.id, "unspent face value back to the owner",
					entry{"escrow:" + d.id, -bal}, entry{"reserve:" + d.id, -res}, entry{d.owner, bal + res}); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE lanes SET reserved = 0 WHERE book = $1`, d.id); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `UPDATE books SET released = $1 WHERE id = $2 AND released = 0`, b.Now().Unix(), d.id)
			return err
		})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
