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
	// covers: how many revocations a list names (-1 before this column).
	addMigration(8, `ALTER TABLE revocation_lists ADD COLUMN covers BIGINT NOT NULL DEFAULT -1`)
}

// RevocationTTL is how long a published list is valid (its next-update).
const RevocationTTL = time.Hour

// Revoke records the revocation of a certificate. The caller must be its
// issuer, the owner of the book it names, or its subject (giving up what
// it grants). With alsoKey, for a lost device:
//
//   - when the caller is the certificate's subject, the key itself is
//     revoked: no chain through it opens a lane any more (a key declaring
//     itself compromised);
//   - otherwise every other certificate the caller issued to the same key
//     and recorded here (POST /v1/grants) is revoked too.
//
// A key is never revoked by anyone but itself: anyone can issue a
// certificate to any key, so issuing one proves no authority over it.
func (b *Broker) Revoke(ctx context.Context, caller spki.KeyHash, sc *spki.SignedCert, alsoKey bool) error {
	if err := sc.Verify(); err != nil {
		return fmt.Errorf("%w: %w", ErrRevocation, err)
	}
	subject := sc.Cert.Subject.Hash
	allowed := sc.Cert.Issuer.Hash == caller || subject == caller
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
	h := sc.Cert.Hash()
	return b.tx(ctx, func(tx *sql.Tx) error {
		now := b.Now().Unix()
		revoke := func(kind, hash string) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO revoked (kind, hash, by_key, created) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
				kind, hash, hexKey(caller), now)
			return err
		}
		if err := revoke("cert", hex.EncodeToString(h[:])); err != nil {
			return err
		}
		switch {
		case !alsoKey:
			return nil
		case subject == caller:
			return revoke("key", hexKey(subject))
		}
		rows, err := tx.QueryContext(ctx, `SELECT hash FROM grants WHERE issuer = $1 AND subject = $2`, hexKey(caller), hexKey(subject))
		if err != nil {
			return err
		}
		var others []string
		for rows.Next() {
			var g string
			if err := rows.Scan(&g); err != nil {
				rows.Close()
				return err
			}
			others = append(others, g)
		}
		rows.Close()
		for _, g := range others {
			if err := revoke("cert", g); err != nil {
				return err
			}
		}
		return rows.Err()
	})
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
// the last one or when the last one is past half its validity.
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
		// Revocations are never removed, so their count tells whether the
		// last list has them all (timestamps cannot: two revocations in
		// the second a list is issued in would look alike).
		var count, newest int64
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(MAX(created), 0) FROM revoked`).Scan(&count, &newest); err != nil {
			return err
		}
		if doc != "" && count == covers && now.Sub(time.Unix(issued, 0)) < RevocationTTL/2 {
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
			number+1, at.Unix(), base64.StdEncoding.EncodeToString(enc), int64(len(certs)+len(keys)))
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
