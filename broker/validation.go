package broker

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// Errors of lane checks and reservations (the gate's semi and online
// validation modes).
var (
	// ErrLaneReserved means the lane is reserved for another holder (another
	// gate, or fleet of gates, with its own spent-state store).
	ErrLaneReserved = errors.New("broker: lane reserved")
	// ErrBookExpired means the book is past its expiry.
	ErrBookExpired = errors.New("broker: book expired")
	// ErrRevokedAtBroker means a certificate or key of the lane's open is
	// revoked.
	ErrRevokedAtBroker = errors.New("broker: revoked")
)

// KindReserve is the account kind of the value reserved for a vendor on a
// book's lanes (online validation): one account per book.
const KindReserve = "reserve"

func reserveAccount(book [32]byte) string { return "reserve:" + hex.EncodeToString(book[:]) }

func init() {
	// A lane row may now exist before its first redemption (a reservation
	// writes it with redeemed 0 and the anchor as its value). holder is the
	// gate the lane is reserved for ('' when none); reserved is the value
	// still held for the vendor in the book's reserve account.
	addMigration(6, `ALTER TABLE lanes ADD COLUMN holder TEXT NOT NULL DEFAULT '';
	ALTER TABLE lanes ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0`)
}

// LaneQuery is what a gate asks the broker when it opens a lane in the
// semi or online validation mode. The gate has already verified the open
// off-line; the broker adds what only it knows: that the book is
// registered and funded, not released, that nothing under which the lane
// opens is revoked now, and how far the lane was already redeemed.
type LaneQuery struct {
	Lane   coupons.LaneID
	Anchor coupons.Value // the lane's anchor, checked against the book's Merkle root
	Proof  [][32]byte
	Certs  [][32]byte     // hashes of the certificates of the open (user certificate, delegations)
	Keys   []spki.KeyHash // the owner's and the spender's keys
	// Reserve asks the broker to reserve the lane's unredeemed value for
	// the vendor and pin the lane to Holder (online mode).
	Reserve bool
	Holder  string
}

// CheckLane answers a gate's lane query (semi mode) and, with q.Reserve,
// reserves the lane (online mode): in one transaction the lane is pinned
// to q.Holder (a second holder is refused with ErrLaneReserved; the same
// holder asking again changes nothing) and its unredeemed value moves from
// the book's escrow to the book's reserve account, from which the lane's
// redemptions are then paid. What a reservation holds returns to the
// owner with the rest of the book when it is released after expiry.
func (b *Broker) CheckLane(ctx context.Context, vendorKey spki.KeyHash, q LaneQuery) (LaneStatus, error) {
	var st LaneStatus
	if q.Reserve && (q.Holder == "" || len(q.Holder) > MaxHolder) {
		return st, badRequest("a reservation needs a holder of 1 to %d characters", MaxHolder)
	}
	if len(q.Proof) > 24 || len(q.Certs) > 16 || len(q.Keys) > 16 {
		return st, badRequest("too many proof hashes, certificates or keys")
	}
	bookHex := hex.EncodeToString(q.Lane.Book[:])
	err := b.tx(ctx, func(tx *sql.Tx) error {
		st = LaneStatus{}
		// A key may hold several vendor names (one per currency, say).
		var vendors int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM vendors WHERE key_hash = $1`, hexKey(vendorKey)).Scan(&vendors); err != nil {
			return err
		}
		if vendors == 0 {
			return fmt.Errorf("%w: no vendor registered for this key", ErrUnknownVendor)
		}
		var bk bookRow
		var saltHex, rootHex string
		var notAfter int64
		err := tx.QueryRowContext(ctx, `SELECT vendor, unit, lanes, length, salt, root, released, not_after FROM books WHERE id = $1`, bookHex).
			Scan(&bk.vendor, &bk.unit, &bk.lanes, &bk.length, &saltHex, &rootHex, &bk.released, &notAfter)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %x… is not registered at this broker (its face value is not held)", ErrUnknownBook, q.Lane.Book[:6])
		} else if err != nil {
			return err
		}
		hex.Decode(bk.root[:], []byte(rootHex))
		var mine int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM vendors WHERE key_hash = $1 AND name = $2`, hexKey(vendorKey), bk.vendor).Scan(&mine); err != nil {
			return err
		}
		switch {
		case mine == 0:
			return fmt.Errorf("%w: book of %s", ErrNotYourBook, bk.vendor)
		case bk.released != 0:
			return ErrBookClosed
		case b.Now().Unix() > notAfter:
			return ErrBookExpired
		case int64(q.Lane.Lane) >= bk.lanes:
			return fmt.Errorf("%w: lane %d of %d", coupons.ErrLaneOutOfRange, q.Lane.Lane, bk.lanes)
		}
		if err := coupons.VerifyMerkleProof(bk.root, uint32(bk.lanes), q.Lane.Lane, &q.Anchor, q.Proof); err != nil {
			return fmt.Errorf("%w: %w", errBadRequest, err)
		}
		for _, h := range q.Certs {
			if err := revokedRow(ctx, tx, "cert", hex.EncodeToString(h[:])); err != nil {
				return err
			}
		}
		for _, k := range q.Keys {
			if err := revokedRow(ctx, tx, "key", hexKey(k)); err != nil {
				return err
			}
		}
		var redeemed, reserved int64
		var valueHex, holder string
		err = tx.QueryRowContext(ctx, `SELECT redeemed, value, holder, reserved FROM lanes WHERE book = $1 AND lane = $2`, bookHex, q.Lane.Lane).
			Scan(&redeemed, &valueHex, &holder, &reserved)
		exists := err == nil
		switch {
		case errors.Is(err, sql.ErrNoRows):
			st.Value = q.Anchor
		case err != nil:
			return err
		default:
			st.Redeemed = uint32(redeemed)
			hex.Decode(st.Value[:], []byte(valueHex))
			st.Holder, st.Reserved = holder, reserved
		}
		if !q.Reserve {
			return nil
		}
		switch {
		case holder == q.Holder:
			return nil // already reserved for this holder: idempotent
		case holder != "":
			return fmt.Errorf("%w: lane %d is reserved for another gate: open another lane", ErrLaneReserved, q.Lane.Lane)
		}
		amount, err := coupons.MulAmount(uint64(bk.length-redeemed), bk.unit)
		if err != nil {
			return err
		}
		var currency string
		if err := tx.QueryRowContext(ctx, `SELECT currency FROM accounts WHERE id = $1`, escrowAccount(q.Lane.Book)).Scan(&currency); err != nil {
			return err
		}
		if err := createAccount(ctx, tx, reserveAccount(q.Lane.Book), KindReserve, currency, 0); err != nil {
			return err
		}
		if exists {
			_, err = tx.ExecContext(ctx, `UPDATE lanes SET holder = $1, reserved = $2 WHERE book = $3 AND lane = $4`, q.Holder, amount, bookHex, q.Lane.Lane)
		} else {
			_, err = tx.ExecContext(ctx, `INSERT INTO lanes (book, lane, redeemed, value, holder, reserved) VALUES ($1, $2, 0, $3, $4, $5)`,
				bookHex, q.Lane.Lane, hex.EncodeToString(q.Anchor[:]), q.Holder, amount)
		}
		if err != nil {
			return err
		}
		if _, err := post(ctx, b.DB, tx, b.Now(), "reserve", "", fmt.Sprintf("lane %d reserved for %s", q.Lane.Lane, bk.vendor),
			entry{escrowAccount(q.Lane.Book), -amount}, entry{reserveAccount(q.Lane.Book), amount}); err != nil {
			return err
		}
		st.Holder, st.Reserved = q.Holder, amount
		return nil
	})
	return st, err
}

func revokedRow(ctx context.Context, tx *sql.Tx, kind, hash string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM revoked WHERE kind = $1 AND hash = $2`, kind, hash).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%w: a %s under which the lane opens (%s…) is revoked", ErrRevokedAtBroker, kind, hash[:12])
	}
	return nil
}

func (a *API) postLanes(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	var in LaneRequest
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	id, err := coupons.ParseLaneID(in.Lane)
	if err != nil {
		return 0, nil, badRequest("lane: %v", err)
	}
	q := LaneQuery{Lane: id, Reserve: in.Reserve, Holder: in.Holder}
	if !b64(q.Anchor[:], in.Anchor) {
		return 0, nil, badRequest("anchor is not 32 bytes of base64url")
	}
	for _, list := range []struct {
		in  []string
		out *[][32]byte
	}{{in.Proof, &q.Proof}, {in.Certs, &q.Certs}} {
		if len(list.in) > 24 {
			return 0, nil, badRequest("too many hashes")
		}
		for _, s := range list.in {
			var h [32]byte
			if !b64(h[:], s) {
				return 0, nil, badRequest("hashes are 32 bytes of base64url")
			}
			*list.out = append(*list.out, h)
		}
	}
	if len(in.Keys) > 16 {
		return 0, nil, badRequest("too many keys")
	}
	for _, s := range in.Keys {
		var h spki.KeyHash
		if !b64(h[:], s) {
			return 0, nil, badRequest("key hashes are 32 bytes of base64url")
		}
		q.Keys = append(q.Keys, h)
	}
	st, err := a.Broker.CheckLane(ctx, caller.Hash(), q)
	if err != nil {
		return 0, nil, err
	}
	out := LaneAnswer{Redeemed: st.Redeemed, Value: base64.RawURLEncoding.EncodeToString(st.Value[:]), Holder: st.Holder}
	if st.Reserved > 0 {
		out.Reserved = coupons.FormatAmount(st.Reserved)
	}
	return http.StatusOK, out, nil
}
