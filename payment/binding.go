package payment

import (
	"crypto/hmac"
	"crypto/sha256"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
)

// MinSecretLen is the shortest binding secret a Binder takes.
const MinSecretLen = 32

// LabelBindingSecret separates the binding secret a gate derives from its
// own secret (BindingSecret) from the other uses of that secret.
const LabelBindingSecret = "ecoupons payment binding v1"

// BindingSecret derives a Binder's secret from a gate's master secret:
// HMAC-SHA256(master, LabelBindingSecret). A gate that already keeps a
// secret for its nonces needs no second one.
func BindingSecret(master []byte) []byte {
	m := hmac.New(sha256.New, master)
	m.Write([]byte(LabelBindingSecret))
	return m.Sum(nil)
}

// Binder computes and checks the challenge id as the draft's stateless
// HMAC-SHA256 binding: id = base64url(HMAC-SHA256(secret, input)) with
//
//	input = realm|method|intent|request|expires|digest|opaque
//
// or, when the challenge names the Payment-Authorization header,
//
//	input = realm|method|intent|request|expires|digest|header|opaque
//
// absent optional parameters giving empty slots. Description is not bound.
// Past secrets stay valid for verification, so the secret can rotate
// without refusing challenges already issued. Make one with NewBinder; it
// is safe for concurrent use.
type Binder struct {
	secrets [][]byte // [0] signs
}

// NewBinder returns a Binder issuing ids under secret and accepting ids
// made under secret or any of previous. Each must have at least
// MinSecretLen bytes (ErrWeakSecret).
func NewBinder(secret []byte, previous ...[]byte) (*Binder, error) {
	b := &Binder{}
	for _, s := range append([][]byte{secret}, previous...) {
		if len(s) < MinSecretLen {
			return nil, fieldErr(ErrWeakSecret, "", "%d bytes (at least %d)", len(s), MinSecretLen)
		}
		b.secrets = append(b.secrets, append([]byte(nil), s...))
	}
	return b, nil
}

// BindingInput returns the bytes the id of c is the HMAC of.
func BindingInput(c *Challenge) []byte {
	slots := []string{c.Realm, c.Method, c.Intent, c.Request, c.Expires, c.Digest}
	if c.Header != "" {
		slots = append(slots, c.Header)
	}
	slots = append(slots, c.Opaque)
	return []byte(strings.Join(slots, "|"))
}

func mac(secret []byte, c *Challenge) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(BindingInput(c))
	return m.Sum(nil)
}

// checkBindable refuses what would make the binding input ambiguous: the
// realm is the one slot whose syntax allows '|' (every other slot is a
// token, base64url or a date), so a realm holding it is refused.
func checkBindable(c *Challenge) error {
	if strings.IndexByte(c.Realm, '|') >= 0 {
		return fieldErr(ErrBadChallenge, "realm", "contains '|', which the binding uses as its separator")
	}
	if c.Digest != "" && strings.IndexByte(c.Digest, '|') >= 0 {
		return fieldErr(ErrBadChallenge, "digest", "contains '|'")
	}
	if c.Expires == "" {
		return fieldErr(ErrBadChallenge, "expires", "missing: a stateless id without an expiry would be valid forever")
	}
	return nil
}

// Bind sets c.ID to the binding of c's other parameters and validates c.
// The challenge must have an expires parameter: a stateless id without one
// would never expire.
func (b *Binder) Bind(c *Challenge) error {
	if len(b.secrets) == 0 {
		return fieldErr(ErrWeakSecret, "", "a Binder from NewBinder is needed")
	}
	if err := checkBindable(c); err != nil {
		return err
	}
	c.ID = b64.EncodeToString(mac(b.secrets[0], c))
	return c.Validate()
}

// Issue builds, binds and returns the ecoupon challenge for r: realm, the
// intent, r as the request, expiring at expires (whole seconds, UTC). With
// paymentAuthorization set, the credential is asked for in
// Payment-Authorization instead of Authorization.
func (b *Binder) Issue(realm, intent string, r *ECouponRequest, expires time.Time, paymentAuthorization bool) (*Challenge, error) {
	req, err := EncodeRequest(r)
	if err != nil {
		return nil, err
	}
	c := &Challenge{
		Realm: realm, Method: Method, Intent: intent, Request: req,
		Expires: expires.UTC().Truncate(time.Second).Format(time.RFC3339), Description: r.Description,
	}
	if paymentAuthorization {
		c.Header = HeaderPaymentAuthorization
	}
	if err := b.Bind(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Verify checks that c (a credential's echo) is a challenge this server
// issued: its id is the binding of its parameters under one of the
// secrets (compared in constant time; ErrInvalidChallenge) and it has not
// expired at now (ErrExpired). It does not check that the request suits
// the resource: the caller compares the decoded request with its route.
func (b *Binder) Verify(c *Challenge, now time.Time) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := checkBindable(c); err != nil {
		return err
	}
	id, err := b64.DecodeString(c.ID)
	if err != nil || len(id) != sha256.Size {
		return fieldErr(ErrInvalidChallenge, "id", "not a binding")
	}
	ok := false
	for _, s := range b.secrets {
		if hmac.Equal(id, mac(s, c)) {
			ok = true
		}
	}
	if !ok {
		return fieldErr(ErrInvalidChallenge, "id", "does not bind these parameters")
	}
	exp, _ := time.Parse(time.RFC3339, c.Expires)
	if !now.Before(exp) {
		return fieldErr(ErrExpired, "expires", "expired at %s", c.Expires)
	}
	return nil
}

// VerifyECoupon is the gate's check of an ecoupon credential before it
// verifies the payment: the method (ErrMethodUnsupported), the binding and
// expiry (Verify), the echoed request against the route's terms — vendor,
// price, unit and currency; another route's or changed terms give
// ErrInvalidChallenge — and the payload (ErrBadCredential). It returns the
// echoed request (whose nonce the lane open answers), the payment and the
// lane-open document (nil when absent).
func (b *Binder) VerifyECoupon(cr *Credential, route *ECouponRequest, now time.Time) (*ECouponRequest, *coupons.Payment, []byte, error) {
	if cr.Challenge.Method != Method {
		return nil, nil, nil, fieldErr(ErrMethodUnsupported, "method", "%q", clip(cr.Challenge.Method))
	}
	if err := b.Verify(&cr.Challenge, now); err != nil {
		return nil, nil, nil, err
	}
	req, err := DecodeRequest(cr.Challenge.Request)
	if err != nil {
		return nil, nil, nil, &Error{Err: ErrInvalidChallenge, Field: "request", Reason: err.Error()}
	}
	if err := req.sameTerms(route); err != nil {
		return nil, nil, nil, err
	}
	p, open, err := cr.ECoupon()
	if err != nil {
		return nil, nil, nil, err
	}
	return req, p, open, nil
}

// sameTerms compares what a payment is worth and to whom.
func (r *ECouponRequest) sameTerms(route *ECouponRequest) error {
	switch {
	case r.Vendor != route.Vendor:
		return fieldErr(ErrInvalidChallenge, "request.recipient", "a challenge for vendor %q, not %q", clip(r.Vendor), route.Vendor)
	case r.Price != route.Price:
		return fieldErr(ErrInvalidChallenge, "request.amount", "a price of %d coupons, the route's is %d", r.Price, route.Price)
	case r.Unit != route.Unit || !strings.EqualFold(r.Currency, route.Currency):
		return fieldErr(ErrInvalidChallenge, "request.methodDetails.unit", "coupons of %s %s, the route takes %s %s", clip(r.Unit), clip(r.Currency), route.Unit, route.Currency)
	case r.Meter != route.Meter || r.Window != route.Window:
		return fieldErr(ErrInvalidChallenge, "request.methodDetails.meter", "a meter of %q and a window of %d, the route's are %q and %d", clip(r.Meter), r.Window, route.Meter, route.Window)
	}
	return nil
}
