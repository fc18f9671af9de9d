package brokerapi

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
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

// OfficePath is the prefix of the broker's back-office pages.
const OfficePath = "/office/"

// Errors of request authentication.
var (
	// ErrUnsigned is a request without an ECoupon-Signature header.
	ErrUnsigned = errors.New("broker: request not signed")
	// ErrBadAuth is a malformed signature header or a signature that does
	// not verify.
	ErrBadAuth = errors.New("broker: bad request signature")
	// ErrReplayed is a request whose timestamp is outside the replay
	// window, or whose nonce was seen.
	ErrReplayed = errors.New("broker: request replayed or outside the replay window")
	// ErrWrongBroker is a request or sign-in link signed for another
	// broker: its signature names the audience's key hash, so that it
	// cannot be replayed at a broker where the same key is registered.
	ErrWrongBroker = errors.New("broker: request signed for another broker")
)

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
	h, err := SignatureHeader(broker, req.Method, req.URL.RequestURI(), body, signer, now)
	if err == nil {
		req.Header.Set(HeaderSignature, h)
	}
	return err
}

// SignatureHeader returns the ECoupon-Signature value of a request
// (method, uri: path and query, body) to the broker whose key hash is
// broker, signed by signer at now.
func SignatureHeader(broker spki.KeyHash, method, uri string, body []byte, signer crypto.Signer, now time.Time) (string, error) {
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

// OfficeLoginURL returns a login link to the back office of the broker at
// base whose key hash is broker, signed by signer (a user's or a vendor's
// key) at now. It is valid at that broker only, within its replay window,
// once.
func OfficeLoginURL(base string, broker spki.KeyHash, signer crypto.Signer, now time.Time) (string, error) {
	h, err := SignatureHeader(broker, http.MethodGet, OfficePath+"login", nil, signer, now)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(base, "/") + OfficePath + "login?auth=" + url.QueryEscape(h), nil
}

// Signed is a request signature that verified (VerifySignature). Its
// nonce is not recorded: the broker must record it to refuse replays.
type Signed struct {
	Key   *spki.PublicKey // the caller's key
	TS    int64           // the request's Unix time
	Nonce []byte          // the request's nonce, 12 to 32 bytes
}

// VerifySignature checks a signature header h (the ECoupon-Signature
// format) over method, uri and body for the broker whose key hash is
// self: that it names this broker, that the signature verifies and that
// its timestamp is within ReplayWindow of now.
func VerifySignature(h string, self spki.KeyHash, method, uri string, body []byte, now time.Time) (*Signed, error) {
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
	if d := now.Sub(time.Unix(ts, 0)); d > ReplayWindow || d < -ReplayWindow {
		return nil, fmt.Errorf("%w: timestamp %d is %s from the broker's clock", ErrReplayed, ts, d.Round(time.Second))
	}
	return &Signed{Key: key, TS: ts, Nonce: nonce}, nil
}
