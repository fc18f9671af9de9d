package broker

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
)

// ErrRevocation is a revocation request the broker refuses.
var ErrRevocation = errors.New("broker: revocation refused")

func init() {
	addMigration(4, `CREATE TABLE revoked (
		kind    TEXT NOT NULL,
		hash    TEXT NOT NULL,
		by_key  TEXT NOT NULL,
		created BIGINT NOT NULL,
		PRIMARY KEY (kind, hash)
	);
	CREATE TABLE revocation_lists (
		number  BIGINT PRIMARY KEY,
		issued  BIGINT NOT NULL,
		doc     TEXT NOT NULL
	)`)
}

func init() {
	// covers: how many revocations a list names (-1 before this column);
	// since migration 11, the revocation generation it shows.
	addMigration(8, `ALTER TABLE revocation_lists ADD COLUMN covers BIGINT NOT NULL DEFAULT -1`)
}

func init() {
	// expires: when the entry leaves the list (unix seconds, 0: never).
	// Entries from before: a revoked grant the broker recorded leaves when
	// it or its book expires; anything else one year after its
	// revocation, or when the last book the broker held at the upgrade
	// expires, whichever is later (a certificate that matters to a gate
	// names a book, or is a user certificate, valid one year by default).
	// revocation_log: the accepted revocation calls of the last hour, per
	// responsible account (the rate limit). revocation_state.generation
	// counts the changes of the list (entries added or expired), so that
	// RevocationList knows whether its last list is current.
	addMigration(11, `ALTER TABLE revoked ADD COLUMN expires BIGINT NOT NULL DEFAULT 0;
	UPDATE revoked SET expires = (SELECT MAX(CASE WHEN g.not_after > 0 AND g.not_after < k.not_after THEN g.not_after ELSE k.not_after END)
		FROM grants g JOIN books k ON k.id = g.book WHERE g.hash = revoked.hash)
		WHERE kind = 'cert' AND EXISTS (SELECT 1 FROM grants g JOIN books k ON k.id = g.book WHERE g.hash = revoked.hash);
	UPDATE revoked SET expires = CASE WHEN created + 31536000 > COALESCE((SELECT MAX(not_after) FROM books), 0) THEN created + 31536000
		ELSE (SELECT MAX(not_after) FROM books) END WHERE expires = 0;
	CREATE INDEX revoked_expires ON revoked(expires);
	CREATE TABLE revocation_log (
		account TEXT NOT NULL,
		at      BIGINT NOT NULL
	);
	CREATE INDEX revocation_log_account ON revocation_log(account, at);
	CREATE INDEX revocation_log_at ON revocation_log(at);
	CREATE TABLE revocation_state (
		id         BIGINT PRIMARY KEY,
		generation BIGINT NOT NULL
	);
	INSERT INTO revocation_state (id, generation) SELECT 1, COUNT(*) FROM revoked`)
}

// RevocationTTL is how long a published list is valid (its next-update).
const RevocationTTL = time.Hour

// RevokedPastExpiry is how long an entry stays on the list after the
// certificate it revokes expires: gates refuse an expired certificate by
// their own clocks, which may be behind the broker's.
const RevokedPastExpiry = time.Hour

// KeyRevocationRetention is the least time a revoked key stays on the
// list. A key is listed until the later of this retention and the expiry
// of the newest certificate the broker knows to it (grants recorded to it,
// books it owns); recording a later grant to it, or a book it owns,
// extends it.
const KeyRevocationRetention = 365 * 24 * time.Hour

// DefaultRevocationsPerHour is Broker.RevocationsPerHour's default.
const DefaultRevocationsPerHour = 100

// ErrRevocationRate is a revocation refused because the account it comes
// from made Broker.RevocationsPerHour of them in the last hour.
var ErrRevocationRate = errors.New("broker: too many revocations")

// expiryOf is the SQL of the expiry of a recorded grant g on its book k:
// the earlier of the grant's not-after (when it has one) and the book's.
const expiryOf = `CASE WHEN g.not_after > 0 AND g.not_after < k.not_after THEN g.not_after ELSE k.not_after END`

// revocationAccount returns the registered key a revocation by caller
// counts against: the caller itself when it holds a user or a vendor
// account, else the owner of the book of the newest grant recorded to it
// (a device). Empty when the broker does not know the caller: unknown keys
// may not revoke.
func (b *Broker) revocationAccount(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, caller spki.KeyHash) (string, error) {
	var registered bool
	if err := q.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE key_hash = $1) OR EXISTS (SELECT 1 FROM vendors WHERE key_hash = $1)`,
		hexKey(caller)).Scan(&registered); err != nil {
		return "", err
	}
	if registered {
		return hexKey(caller), nil
	}
	var owner string
	err := q.QueryRowContext(ctx, `SELECT u.key_hash FROM grants g JOIN books k ON k.id = g.book JOIN users u ON u.account = k.owner
		WHERE g.subject = $1 ORDER BY g.created DESC, g.hash LIMIT 1`, hexKey(caller)).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return owner, err
}

// recentRevocations counts an account's accepted revocations in the hour
// before now.
func recentRevocations(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, account string, now time.Time) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM revocation_log WHERE account = $1 AND at > $2`, account, now.Add(-time.Hour).Unix()).Scan(&n)
	return n, err
}

// revocationExpiry is when a certificate's revocation stops mattering to
// this broker's gates: every lane open checks the book's expiry, so a
// certificate naming a book the broker holds matters until the earlier of
// its own and the book's expiry; one the broker issued (a user
// certificate) until its own. Any other certificate is refused: no gate of
// this broker relies on it, and its entry could never leave the list.
func (b *Broker) revocationExpiry(ctx context.Context, c *spki.Cert) (time.Time, error) {
	na := c.Validity.NotAfter
	if book, ok := bookOfTag(c.Tag); ok {
		var bookNA int64
		err := b.DB.db.QueryRowContext(ctx, `SELECT not_after FROM books WHERE id = $1`, hex.EncodeToString(book[:])).Scan(&bookNA)
		if errors.Is(err, sql.ErrNoRows) {
			return time.Time{}, fmt.Errorf("%w: the certificate names a book this broker does not hold: no gate of this broker opens a lane under it", ErrRevocation)
		} else if err != nil {
			return time.Time{}, err
		}
		if na.IsZero() || bookNA < na.Unix() {
			na = time.Unix(bookNA, 0)
		}
	} else if c.Issuer.Hash != b.pub.Hash() {
		return time.Time{}, fmt.Errorf("%w: the certificate names no book this broker holds and this broker did not issue it: no gate of this broker relies on it", ErrRevocation)
	}
	if na.IsZero() {
		return time.Time{}, fmt.Errorf("%w: the certificate never expires and names no book: it cannot be revoked (revoke the key instead)", ErrRevocation)
	}
	return na, nil
}

// Revoke records the revocation of a certificate. The caller must be a key
// the broker knows — a user's or a vendor's, or a device's with a grant
// recorded (POST /v1/grants) — and the certificate's issuer, the owner of
// the book it names, or its subject (giving up what it grants). With
// alsoKey, for a lost device:
//
//   - when the caller is the certificate's subject, the key itself is
//     revoked: no chain through it opens a lane any more (a key declaring
//     itself compromised);
//   - otherwise every other certificate the caller issued to the same key
//     and recorded here (POST /v1/grants) is revoked too.
//
// A key is never revoked by anyone but itself: anyone can issue a
// certificate to any key, so issuing one proves no authority over it.
//
// Each account (a user's or vendor's key; a device counts against the
// owner of its grant's book) may revoke RevocationsPerHour times an hour
// (ErrRevocationRate). An entry leaves the list RevokedPastExpiry after
// the certificate it names expires (revocationExpiry), a key's after
// KeyRevocationRetention or its newest certificate's expiry: what any
// account can put on the list is bounded, and goes.
func (b *Broker) Revoke(ctx context.Context, caller spki.KeyHash, sc *spki.SignedCert, alsoKey bool) error {
	// The refusals that cost nothing come first, outside any transaction:
	// a flood of refused revocations writes nothing.
	account, err := b.revocationAccount(ctx, b.DB.db, caller)
	if err != nil {
		return err
	}
	if account == "" {
		return fmt.Errorf("%w: only keys registered at this broker (a user's or a vendor's, or a device's whose grant was recorded with POST /v1/grants) may revoke", ErrRevocation)
	}
	return b.revokeAs(ctx, caller, account, false, sc, alsoKey)
}

// revokeAs is Revoke for a caller whose revocations count against
// account; ownsBook says the caller proved it owns the book the
// certificate names (an anonymous book's key, RevokeAnonymous).
func (b *Broker) revokeAs(ctx context.Context, caller spki.KeyHash, account string, ownsBook bool, sc *spki.SignedCert, alsoKey bool) error {
	limit := b.RevocationsPerHour
	if limit <= 0 {
		limit = DefaultRevocationsPerHour
	}
	if n, err := recentRevocations(ctx, b.DB.db, account, b.Now()); err != nil {
		return err
	} else if n >= limit {
		return fmt.Errorf("%w: the account made %d revocations in the last hour, the most this broker accepts; try again later", ErrRevocationRate, n)
	}
	if err := sc.Verify(); err != nil {
		return fmt.Errorf("%w: %w", ErrRevocation, err)
	}
	subject := sc.Cert.Subject.Hash
	allowed := sc.Cert.Issuer.Hash == caller || subject == caller || ownsBook
	if !allowed {
		if book, ok := bookOfTag(sc.Cert.Tag); ok {
			var owner string
			err := b.DB.db.QueryRowContext(ctx, `SELECT u.key_hash FROM books bk JOIN users u ON u.account = bk.owner WHERE bk.id = $1`,
				hex.EncodeToString(book[:])).Scan(&owner)
			if err == nil && owner == hexKey(caller) {
				allowed = true
			} else if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
	}
	if !allowed {
		return fmt.Errorf("%w: only the certificate's issuer, its subject or the book's owner may revoke it", ErrRevocation)
	}
	expires, err := b.revocationExpiry(ctx, sc.Cert)
	if err != nil {
		return err
	}
	h := sc.Cert.Hash()
	return b.tx(ctx, func(tx *sql.Tx) error {
		now := b.Now()
		if n, err := recentRevocations(ctx, tx, account, now); err != nil {
			return err
		} else if n >= limit {
			return fmt.Errorf("%w: the account made %d revocations in the last hour, the most this broker accepts; try again later", ErrRevocationRate, n)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM revocation_log WHERE at <= $1`, now.Add(-time.Hour).Unix()); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO revocation_log (account, at) VALUES ($1, $2)`, account, now.Unix()); err != nil {
			return err
		}
		changed, err := pruneRevoked(ctx, tx, now)
		if err != nil {
			return err
		}
		// revoke lists hash until exp (unix seconds), unless that is past
		// already; a key's entry only ever moves later.
		revoke := func(kind, hash string, exp int64) error {
			if exp < now.Add(-RevokedPastExpiry).Unix() {
				return nil // expired: gates refuse it without the list
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO revoked (kind, hash, by_key, created, expires) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
				kind, hash, hexKey(caller), now.Unix(), exp)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n > 0 {
				changed = true
				return nil
			}
			_, err = tx.ExecContext(ctx, `UPDATE revoked SET expires = $1 WHERE kind = $2 AND hash = $3 AND expires > 0 AND expires < $1`, exp, kind, hash)
			return err
		}
		if err := revoke("cert", hex.EncodeToString(h[:]), expires.Unix()); err != nil {
			return err
		}
		switch {
		case !alsoKey:
		case subject == caller:
			exp, err := keyRevocationExpiry(ctx, tx, subject, now)
			if err != nil {
				return err
			}
			if err := revoke("key", hexKey(subject), exp); err != nil {
				return err
			}
		default:
			rows, err := tx.QueryContext(ctx, `SELECT g.hash, `+expiryOf+` FROM grants g JOIN books k ON k.id = g.book
				WHERE g.issuer = $1 AND g.subject = $2`, hexKey(caller), hexKey(subject))
			if err != nil {
				return err
			}
			type grant struct {
				hash string
				exp  int64
			}
			var others []grant
			for rows.Next() {
				var g grant
				if err := rows.Scan(&g.hash, &g.exp); err != nil {
					rows.Close()
					return err
				}
				others = append(others, g)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, g := range others {
				if err := revoke("cert", g.hash, g.exp); err != nil {
					return err
				}
			}
		}
		if changed {
			return bumpRevocations(ctx, tx)
		}
		return nil
	})
}

// keyRevocationExpiry is when a key revoked at now leaves the list: after
// KeyRevocationRetention, or when the newest certificate the broker knows
// to it (a grant recorded to it, a book it owns) expires, whichever is
// later.
func keyRevocationExpiry(ctx context.Context, tx *sql.Tx, key spki.KeyHash, now time.Time) (int64, error) {
	exp := now.Add(KeyRevocationRetention).Unix()
	var grants, books int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(`+expiryOf+`), 0) FROM grants g JOIN books k ON k.id = g.book WHERE g.subject = $1`,
		hexKey(key)).Scan(&grants); err != nil {
		return 0, err
	}
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(k.not_after), 0) FROM books k JOIN users u ON u.account = k.owner WHERE u.key_hash = $1`,
		hexKey(key)).Scan(&books); err != nil {
		return 0, err
	}
	return max(exp, grants, books), nil
}

// extendKeyRevocation keeps a revoked key listed until at least exp (a
// new certificate to it, or a book it owns, valid until then).
func extendKeyRevocation(ctx context.Context, tx *sql.Tx, key spki.KeyHash, exp int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE revoked SET expires = $1 WHERE kind = 'key' AND hash = $2 AND expires > 0 AND expires < $1`, exp, hexKey(key))
	return err
}

// pruneRevoked deletes the entries RevokedPastExpiry past their expiry and
// reports whether it deleted any.
func pruneRevoked(ctx context.Context, tx *sql.Tx, now time.Time) (bool, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM revoked WHERE expires > 0 AND expires < $1`, now.Add(-RevokedPastExpiry).Unix())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// bumpRevocations records that the list changed.
func bumpRevocations(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `UPDATE revocation_state SET generation = generation + 1 WHERE id = 1`)
	return err
}

// bookOfTag finds (book |id|) in a spend tag.
func bookOfTag(t *spki.Tag) ([32]byte, bool) {
	var id [32]byte
	if t.Kind != spki.TagList || len(t.Elems) < 2 {
		return id, false
	}
	e := t.Elems[1]
	if e.Kind != spki.TagList || len(e.Elems) != 2 || e.Elems[0].Kind != spki.TagAtom || string(e.Elems[0].Atom.Value) != "book" ||
		e.Elems[1].Kind != spki.TagAtom || len(e.Elems[1].Atom.Value) != 32 {
		return id, false
	}
	copy(id[:], e.Elems[1].Atom.Value)
	return id, true
}

// RevocationList returns the current signed list (canonical bytes). A new
// list, with the next number, is issued when the revocations changed since
// the last one (an entry added, or one past its expiry dropped) or when
// the last one is past half its validity.
func (b *Broker) RevocationList(ctx context.Context) ([]byte, error) {
	var out []byte
	err := b.tx(ctx, func(tx *sql.Tx) error {
		now := b.Now()
		var number, issued, covers int64
		var doc string
		err := tx.QueryRowContext(ctx, `SELECT number, issued, doc, covers FROM revocation_lists ORDER BY number DESC LIMIT 1`).Scan(&number, &issued, &doc, &covers)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		// Expired entries leave the list; the generation counts every
		// change (entries added or expired), so it tells whether the last
		// list is current (timestamps cannot: two revocations in the
		// second a list is issued in would look alike, and counts go down
		// as well as up).
		pruned, err := pruneRevoked(ctx, tx, now)
		if err != nil {
			return err
		}
		if pruned {
			if err := bumpRevocations(ctx, tx); err != nil {
				return err
			}
		}
		var generation, newest int64
		if err := tx.QueryRowContext(ctx, `SELECT generation FROM revocation_state WHERE id = 1`).Scan(&generation); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(created), 0) FROM revoked`).Scan(&newest); err != nil {
			return err
		}
		if doc != "" && generation == covers && now.Sub(time.Unix(issued, 0)) < RevocationTTL/2 {
			// Stored as base64: PostgreSQL's TEXT holds no arbitrary bytes.
			out, err = base64.StdEncoding.DecodeString(doc)
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT kind, hash FROM revoked`)
		if err != nil {
			return err
		}
		var certs [][32]byte
		var keys []spki.KeyHash
		for rows.Next() {
			var kind, h string
			if err := rows.Scan(&kind, &h); err != nil {
				rows.Close()
				return err
			}
			var v [32]byte
			if _, err := hex.Decode(v[:], []byte(h)); err != nil {
				rows.Close()
				return err
			}
			if kind == "cert" {
				certs = append(certs, v)
			} else {
				keys = append(keys, spki.KeyHash(v))
			}
		}
		rows.Close()
		// Issued one second after anything revoked, so "newest < issued"
		// detects later revocations exactly.
		at := now.Truncate(time.Second)
		if at.Unix() <= newest {
			at = time.Unix(newest+1, 0)
		}
		list, err := delegation.SignRevocations(b.Signer, uint64(number+1), at, at.Add(RevocationTTL), certs, keys)
		if err != nil {
			return err
		}
		enc := spki.Canonical(list.Sexp())
		res, err := tx.ExecContext(ctx, `INSERT INTO revocation_lists (number, issued, doc, covers) VALUES ($1, $2, $3, $4) ON CONFLICT (number) DO NOTHING`,
			number+1, at.Unix(), base64.StdEncoding.EncodeToString(enc), generation)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// Another request issued this number first: serve that list.
			if err := tx.QueryRowContext(ctx, `SELECT doc FROM revocation_lists WHERE number = $1`, number+1).Scan(&doc); err != nil {
				return err
			}
			out, err = base64.StdEncoding.DecodeString(doc)
			return err
		}
		out = enc
		return nil
	})
	return out, err
}
