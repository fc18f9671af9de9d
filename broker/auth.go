package broker

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/spki"
)

// HeaderSignature carries a request's signature by the caller's key.
const HeaderSignature = "ECoupon-Signature"

// ReplayWindow is how far a request's timestamp may be from the broker's
// clock; nonces are remembered that long.
const ReplayWindow = 5 * time.Minute

// Errors of request authentication.
var (
	ErrUnsigned = errors.New("broker: request not signed")
	ErrBadAuth  = errors.New("broker: bad request signature")
	ErrReplayed = errors.New("broker: request replayed or outside the replay window")
	// ErrWrongBroker is a request or sign-in link signed for another
	// broker: its signature names the audience's key hash, so that it
	// cannot be replayed at a broker where the same key is registered.
	ErrWrongBroker = errors.New("broker: request signed for another broker")
	// ErrUnknownKey is a signed request from a key this broker does not
	// know (no user or vendor account, no grant recorded to it) on a call
	// other than the registering ones (POST /v1/users, POST /v1/vendors).
	ErrUnknownKey = errors.New("broker: key not registered at this broker")
)

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

// RequestObject is what a caller signs for the broker whose key hash is
// broker (path is the request URI: path and query):
//
//	(ecoupons-request (broker (hash sha256 |…|)) (method "POST") (path "/v1/books")
//	                  (body |SHA-256 of the body|) (ts "unix seconds") (nonce |16 bytes|))
//
// Naming the broker makes a request, or a back-office sign-in link, made
// for one broker useless at any other, even where the same key is
// registered at both.
func RequestObject(broker spki.KeyHash, method, path string, body []byte, ts int64, nonce []byte) spki.List {
	h := sha256.Sum256(body)
	return spki.L("ecoupons-request", spki.L("broker", broker.Sexp()), spki.L("method", method), spki.L("path", path), spki.L("body", h[:]),
		spki.L("ts", strconv.FormatInt(ts, 10)), spki.L("nonce", nonce))
}

// SignRequest sets the ECoupon-Signature header of req (whose body is
// body) with signer, for the broker whose key hash is broker:
//
//	ECoupon-Signature: key=<transport of (public-key …)>, broker=<base64url key hash>, ts=<unix>,
//	                   nonce=<b64url>, sig=<transport of (signature …)>
func SignRequest(req *http.Request, body []byte, signer crypto.Signer, broker spki.KeyHash, now time.Time) error {
	h, err := signatureHeader(broker, req.Method, req.URL.RequestURI(), body, signer, now)
	if err == nil {
		req.Header.Set(HeaderSignature, h)
	}
	return err
}

// signatureHeader returns the ECoupon-Signature value of a request to
// the broker whose key hash is broker.
func signatureHeader(broker spki.KeyHash, method, uri string, body []byte, signer crypto.Signer, now time.Time) (string, error) {
	if broker == (spki.KeyHash{}) {
		return "", errors.New("broker: signing a request needs the broker's key (its hash names the audience)")
	}
	pub, err := spki.NewPublicKey(signer.Public())
	if err != nil {
		return "", err
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	ts := now.Unix()
	sig, err := spki.Sign(signer, RequestObject(broker, method, uri, body, ts, nonce))
	if err != nil {
		return "", err
	}
	return "key=" + string(spki.Transport(pub.Sexp())) + ", broker=" + base64.RawURLEncoding.EncodeToString(broker[:]) +
		", ts=" + strconv.FormatInt(ts, 10) + ", nonce=" + base64.RawURLEncoding.EncodeToString(nonce) +
		", sig=" + string(spki.Transport(sig.Sexp())), nil
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
	if h == "" {
		return nil, ErrUnsigned
	}
	if len(h) > 4096 {
		return nil, fmt.Errorf("%w: header too long", ErrBadAuth)
	}
	params := map[string]string{}
	for _, part := range strings.Split(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || params[k] != "" {
			return nil, fmt.Errorf("%w: malformed %s header", ErrBadAuth, HeaderSignature)
		}
		params[k] = v
	}
	self := b.pub.Hash()
	aud, err := base64.RawURLEncoding.DecodeString(params["broker"])
	switch {
	case params["broker"] == "":
		return nil, fmt.Errorf("%w: the signature names no broker (sign for this broker's key, %s)", ErrBadAuth, base64.RawURLEncoding.EncodeToString(self[:]))
	case err != nil || len(aud) != len(self):
		return nil, fmt.Errorf("%w: broker is not a base64url SHA-256 key hash", ErrBadAuth)
	case !bytes.Equal(aud, self[:]):
		return nil, fmt.Errorf("%w: it was made for the broker whose key hash is %s, this broker's is %s", ErrWrongBroker,
			params["broker"], base64.RawURLEncoding.EncodeToString(self[:]))
	}
	kx, err := spki.Parse([]byte(params["key"]))
	if err != nil {
		return nil, fmt.Errorf("%w: key: %w", ErrBadAuth, err)
	}
	key, err := spki.ParsePublicKey(kx)
	if err != nil {
		return nil, fmt.Errorf("%w: key: %w", ErrBadAuth, err)
	}
	ts, err := strconv.ParseInt(params["ts"], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: ts", ErrBadAuth)
	}
	nonce, err := base64.RawURLEncoding.DecodeString(params["nonce"])
	if err != nil || len(nonce) < 12 || len(nonce) > 32 {
		return nil, fmt.Errorf("%w: nonce", ErrBadAuth)
	}
	sx, err := spki.Parse([]byte(params["sig"]))
	if err != nil {
		return nil, fmt.Errorf("%w: sig: %w", ErrBadAuth, err)
	}
	sig, err := spki.ParseSignature(sx)
	if err != nil {
		return nil, fmt.Errorf("%w: sig: %w", ErrBadAuth, err)
	}
	if !sig.Signer.Equal(key) {
		return nil, fmt.Errorf("%w: signed by another key than the one named", ErrBadAuth)
	}
	if err := sig.VerifyObject(RequestObject(self, method, uri, body, ts, nonce)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAuth, err)
	}
	now := b.Now()
	if d := now.Sub(time.Unix(ts, 0)); d > ReplayWindow || d < -ReplayWindow {
		return nil, fmt.Errorf("%w: timestamp %d is %s from the broker's clock", ErrReplayed, ts, d.Round(time.Second))
	}
	return &signedCall{key: key, ts: ts, nonce: nonce}, nil
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
