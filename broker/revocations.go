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

// RevocationTTL is how long a published list is valid (its next-update).
const RevocationTTL = time.Hour

// Revoke records the revocation of a certificate, and with alsoKey of its
// subject's key (a lost device). The caller must be the certificate's
// issuer, or the owner of the book the certificate names.
func (b *Broker) Revoke(ctx context.Context, caller spki.KeyHash, sc *spki.SignedCert, alsoKey bool) error {
	if err := sc.Verify(); err != nil {
		return fmt.Errorf("%w: %w", ErrRevocation, err)
	}
	allowed := sc.Cert.Issuer.Hash == caller
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
		return fmt.Errorf("%w: only the certificate's issuer or the book's owner may revoke it", ErrRevocation)
	}
	h := sc.Cert.Hash()
	return b.tx(ctx, func(tx *sql.Tx) error {
		now := b.Now().Unix()
		if _, err := tx.ExecContext(ctx, `INSERT INTO revoked (kind, hash, by_key, created) VALUES ('cert', $1, $2, $3) ON CONFLICT DO NOTHING`,
			hex.EncodeToString(h[:]), hexKey(caller), now); err != nil {
			return err
		}
		if alsoKey {
			if _, err := tx.ExecContext(ctx, `INSERT INTO revoked (kind, hash, by_key, created) VALUES ('key', $1, $2, $3) ON CONFLICT DO NOTHING`,
				hexKey(sc.Cert.Subject.Hash), hexKey(caller), now); err != nil {
				return err
			}
		}
		return nil
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
		var number, issued int64
		var doc string
		err := tx.QueryRowContext(ctx, `SELECT number, issued, doc FROM revocation_lists ORDER BY number DESC LIMIT 1`).Scan(&number, &issued, &doc)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var newest int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(created), 0) FROM revoked`).Scan(&newest); err != nil {
			return err
		}
		if doc != "" && newest < issued && now.Sub(time.Unix(issued, 0)) < RevocationTTL/2 {
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
		if _, err := tx.ExecContext(ctx, `INSERT INTO revocation_lists (number, issued, doc) VALUES ($1, $2, $3)`, number+1, at.Unix(), base64.StdEncoding.EncodeToString(enc)); err != nil {
			return err
		}
		out = enc
		return nil
	})
	return out, err
}
