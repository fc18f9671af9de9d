package broker

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/ecoupons/ecoupons/brokerapi"
	"github.com/ecoupons/ecoupons/spki"
)

// ErrUnknownKey is a signed request from a key this broker does not know
// (no user or vendor account, no grant recorded to it) on a call other
// than the registering ones (POST /v1/users, POST /v1/vendors).
var ErrUnknownKey = errors.New("broker: key not registered at this broker")

func init() {
	addMigration(2, `CREATE TABLE nonces (
		key_hash TEXT NOT NULL,
		nonce    TEXT NOT NULL,
		ts       BIGINT NOT NULL,
		PRIMARY KEY (key_hash, nonce)
	)`)
	// Which keys the broker knows is asked at every signed request; nonces
	// are pruned by age at every insert.
	addMigration(10, `CREATE INDEX vendors_key ON vendors(key_hash);
	CREATE INDEX grants_subject ON grants(subject);
	CREATE INDEX nonces_ts ON nonces(ts);
	CREATE INDEX sessions_key ON sessions(key_hash, expires)`)
}

// signedCall is a request whose signature, audience and timestamp
// verified; its nonce is not recorded yet (useNonce).
type signedCall struct {
	key   *spki.PublicKey
	ts    int64
	nonce []byte
}

// checkSignature checks a signature header h (the ECoupon-Signature
// format) over method, uri and body: that it names this broker, that the
// signature verifies and that its timestamp is within the replay window.
// It touches no database.
func (b *Broker) checkSignature(h, method, uri string, body []byte) (*signedCall, error) {
	s, err := brokerapi.VerifySignature(h, b.pub.Hash(), method, uri, body, b.Now())
	if err != nil {
		return nil, err
	}
	return &signedCall{key: s.Key, ts: s.TS, nonce: s.Nonce}, nil
}

// useNonce records a call's nonce, so that a replay fails, and deletes
// the nonces older than twice the replay window (a request's timestamp is
// within the window of the broker's clock, so none of them can be
// replayed any more).
func (b *Broker) useNonce(ctx context.Context, c *signedCall) error {
	now := b.Now()
	return b.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM nonces WHERE ts < $1`, now.Add(-2*ReplayWindow).Unix()); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO nonces (key_hash, nonce, ts) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			hexKey(c.key.Hash()), base64.RawURLEncoding.EncodeToString(c.nonce), c.ts)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: nonce already used", ErrReplayed)
		}
		return nil
	})
}

// KnownKey reports whether the broker knows a key: a user's or a
// vendor's, or the subject of a grant recorded with POST /v1/grants.
// Only known keys may make signed calls other than the registering ones,
// sign in to the back office and revoke; so what unknown keys can make
// the broker store (nonces, sessions, revocations) is nothing.
func (b *Broker) KnownKey(ctx context.Context, k spki.KeyHash) (bool, error) {
	var known bool
	err := b.DB.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE key_hash = $1)
		OR EXISTS (SELECT 1 FROM vendors WHERE key_hash = $1) OR EXISTS (SELECT 1 FROM grants WHERE subject = $1)`, hexKey(k)).Scan(&known)
	return known, err
}

// verifySigned checks a signature header h over method, uri and body
// (checkSignature), refuses a key the broker does not know
// (ErrUnknownKey) and records the nonce, so that a replay fails. It
// returns the signer's key.
func (b *Broker) verifySigned(ctx context.Context, h, method, uri string, body []byte) (*spki.PublicKey, error) {
	c, err := b.checkSignature(h, method, uri, body)
	if err != nil {
		return nil, err
	}
	known, err := b.KnownKey(ctx, c.key.Hash())
	if err != nil {
		return nil, err
	}
	if !known {
		return nil, fmt.Errorf("%w: %s (register first: POST /v1/users or POST /v1/vendors)", ErrUnknownKey, c.key.Hash())
	}
	if err := b.useNonce(ctx, c); err != nil {
		return nil, err
	}
	return c.key, nil
}
