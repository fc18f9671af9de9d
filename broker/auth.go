package broker

import (
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
)

func init() {
	addMigration(2, `CREATE TABLE nonces (
		key_hash TEXT NOT NULL,
		nonce    TEXT NOT NULL,
		ts       BIGINT NOT NULL,
		PRIMARY KEY (key_hash, nonce)
	)`)
}

// RequestObject is what a caller signs (path is the request URI: path and
// query):
//
//	(ecoupons-request (method "POST") (path "/v1/books") (body |SHA-256 of the body|)
//	                  (ts "unix seconds") (nonce |16 bytes|))
func RequestObject(method, path string, body []byte, ts int64, nonce []byte) spki.List {
	h := sha256.Sum256(body)
	return spki.L("ecoupons-request", spki.L("method", method), spki.L("path", path), spki.L("body", h[:]),
		spki.L("ts", strconv.FormatInt(ts, 10)), spki.L("nonce", nonce))
}

// SignRequest sets the ECoupon-Signature header of req (whose body is
// body) with signer:
//
//	ECoupon-Signature: key=<transport of (public-key …)>, ts=<unix>, nonce=<b64url>, sig=<transport of (signature …)>
func SignRequest(req *http.Request, body []byte, signer crypto.Signer, now time.Time) error {
	h, err := signatureHeader(req.Method, req.URL.RequestURI(), body, signer, now)
	if err == nil {
		req.Header.Set(HeaderSignature, h)
	}
	return err
}

// signatureHeader returns the ECoupon-Signature value of a request.
func signatureHeader(method, uri string, body []byte, signer crypto.Signer, now time.Time) (string, error) {
	pub, err := spki.NewPublicKey(signer.Public())
	if err != nil {
		return "", err
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	ts := now.Unix()
	sig, err := spki.Sign(signer, RequestObject(method, uri, body, ts, nonce))
	if err != nil {
		return "", err
	}
	return "key=" + string(spki.Transport(pub.Sexp())) + ", ts=" + strconv.FormatInt(ts, 10) +
		", nonce=" + base64.RawURLEncoding.EncodeToString(nonce) + ", sig=" + string(spki.Transport(sig.Sexp())), nil
}

// authenticate checks a request's signature, timestamp and nonce and
// returns the caller's key. The nonce is recorded, so a replay fails.
func (b *Broker) authenticate(ctx context.Context, r *http.Request, body []byte) (*spki.PublicKey, error) {
	return b.verifySigned(ctx, r.Header.Get(HeaderSignature), r.Method, r.URL.RequestURI(), body)
}

// verifySigned checks a signature header h (the ECoupon-Signature format)
// over method, uri and body, its timestamp and nonce, and returns the
// signer's key. The nonce is recorded, so a replay fails.
func (b *Broker) verifySigned(ctx context.Context, h, method, uri string, body []byte) (*spki.PublicKey, error) {
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
	if err := sig.VerifyObject(RequestObject(method, uri, body, ts, nonce)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAuth, err)
	}
	now := b.Now()
	if d := now.Sub(time.Unix(ts, 0)); d > ReplayWindow || d < -ReplayWindow {
		return nil, fmt.Errorf("%w: timestamp %d is %s from the broker's clock", ErrReplayed, ts, d.Round(time.Second))
	}
	err = b.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM nonces WHERE ts < $1`, now.Add(-2*ReplayWindow).Unix()); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO nonces (key_hash, nonce, ts) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			hexKey(key.Hash()), base64.RawURLEncoding.EncodeToString(nonce), ts)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: nonce already used", ErrReplayed)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}
