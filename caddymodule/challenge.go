package caddymodule

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// labelNonce prefixes the HMAC of a challenge nonce.
const labelNonce = "ecoupons nonce v1"

// nonceMaker issues and checks stateless challenge nonces:
// base64url(be64(bucket) || HMAC-SHA256(secret, label || vendor || be64(bucket))[:16]),
// valid in the bucket of issue and the next one.
type nonceMaker struct {
	secret []byte
	vendor string
	ttl    time.Duration
	now    func() time.Time
}

var errNonce = errors.New("nonce is malformed, forged or expired; use the nonce of a fresh 402 challenge")

func (n *nonceMaker) mac(bucket uint64) []byte {
	m := hmac.New(sha256.New, n.secret)
	m.Write([]byte(labelNonce))
	m.Write([]byte(n.vendor))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], bucket)
	m.Write(b[:])
	return m.Sum(nil)[:16]
}

func (n *nonceMaker) bucket() uint64 { return uint64(n.now().UnixNano() / int64(n.ttl)) }

func (n *nonceMaker) issue() string {
	b := n.bucket()
	raw := binary.BigEndian.AppendUint64(nil, b)
	raw = append(raw, n.mac(b)...)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func (n *nonceMaker) check(s string) error {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) != 24 {
		return errNonce
	}
	b := binary.BigEndian.Uint64(raw[:8])
	cur := n.bucket()
	if b != cur && b+1 != cur {
		return errNonce
	}
	if !hmac.Equal(raw[8:], n.mac(b)) {
		return errNonce
	}
	return nil
}

// challenge is the body of a 402 answer, and the parameters of its
// WWW-Authenticate header.
type challenge struct {
	Error    string `json:"error"`            // machine-readable reason code
	Reason   string `json:"reason,omitempty"` // human-readable detail
	Realm    string `json:"realm"`
	Vendor   string `json:"vendor"`
	Price    uint32 `json:"price"`    // coupons per request
	Unit     string `json:"unit"`     // value of one coupon, decimal
	Currency string `json:"currency"` // ISO 4217
	Broker   string `json:"broker,omitempty"`
	// Store names the gate's spent state (publicStoreID): gates that share
	// a store share its lanes; a wallet keeps each lane at the store it
	// opened it at.
	Store string `json:"store,omitempty"`
	Nonce string `json:"nonce"`
	// Lease is the route's spending lease (coupons) when above 1: after
	// a gate restart a lane may resume up to this many coupons past the
	// client's position, and wallets accept such a jump.
	Lease uint32 `json:"lease,omitempty"`
	// Meter is a metered route's meter ("events 10": price is per unit)
	// and Window the units a payment pre-pays (docs/PROTOCOL.md §14
	// Sessions); empty and 0 on a route charged per request.
	Meter  string `json:"meter,omitempty"`
	Window uint32 `json:"window,omitempty"`
	// Resume is, in a coupon_spent refusal, the first coupon the lane
	// takes now.
	Resume uint32 `json:"resume,omitempty"`
	Hint   string `json:"hint"`

	pay *paymentScheme // adds the Payment challenge to the 402 (paymentscheme.go)
}

// publicStoreID is the name of a store in challenges: base64url of the
// first 16 bytes of SHA-256("ecoupons store" ‖ its ID), so that clients
// can tell stores apart without learning the ID the broker pins lanes to.
func publicStoreID(id string) string {
	h := sha256.Sum256([]byte("ecoupons store\x00" + id))
	return base64.RawURLEncoding.EncodeToString(h[:16])
}

func quoteParam(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// header renders WWW-Authenticate: ECoupon realm=…, vendor=…, price=…,
// unit=…, currency=…, broker=…, nonce=…
func (c *challenge) header() string {
	var b strings.Builder
	b.WriteString("ECoupon realm=")
	b.WriteString(quoteParam(c.Realm))
	b.WriteString(", vendor=" + quoteParam(c.Vendor))
	b.WriteString(", price=" + strconv.FormatUint(uint64(c.Price), 10))
	b.WriteString(", unit=" + quoteParam(c.Unit))
	b.WriteString(", currency=" + c.Currency)
	if c.Broker != "" {
		b.WriteString(", broker=" + quoteParam(c.Broker))
	}
	if c.Store != "" {
		b.WriteString(", store=" + c.Store)
	}
	if c.Lease > 1 {
		b.WriteString(", lease=" + strconv.FormatUint(uint64(c.Lease), 10))
	}
	if c.Meter != "" {
		b.WriteString(", meter=" + quoteParam(c.Meter) + ", window=" + strconv.FormatUint(uint64(c.Window), 10))
	}
	if c.Resume > 0 {
		b.WriteString(", resume=" + strconv.FormatUint(uint64(c.Resume), 10))
	}
	b.WriteString(", nonce=" + c.Nonce)
	return b.String()
}

// writeJSON writes a JSON answer with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	if writePaymentScheme(w, status, v) {
		return // the Payment scheme's answer (paymentscheme.go)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// problem is the body of refusals other than 402 (which carry the whole
// challenge): 400, 404, 405, 413, 429 and 503.
type problem struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}
