package payment

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/ecoupons/ecoupons/coupons"
)

// Credential is a Payment credential: the challenge it answers (echoed
// unchanged), an optional payer identifier and the method's payload. On
// the wire it is "Payment " followed by base64url (unpadded) of its JSON,
// in Authorization or in Payment-Authorization.
type Credential struct {
	// Challenge is the challenge answered, every parameter as received.
	Challenge Challenge `json:"challenge"`
	// Source optionally identifies the payer (the draft recommends a DID).
	Source string `json:"source,omitempty"`
	// Payload is the method's JSON object; ECoupon decodes ecoupon's.
	Payload json.RawMessage `json:"payload"`

	canonical []byte // the payload as NewCredential wrote it, in JCS form
}

// ECouponPayload is the payload of an ecoupon credential: the payment of
// the ECoupon scheme (docs/PROTOCOL.md §10) and, on a lane's first use,
// its lane-open document.
type ECouponPayload struct {
	// Lane is base64url(book ID) "." lane index.
	Lane string `json:"lane"`
	// Index is the coupon's index on the lane (1, 2, …).
	Index uint32 `json:"index"`
	// Value is the coupon, base64url of 32 bytes.
	Value string `json:"value"`
	// Binding is the request binding, base64url of 16 bytes; absent only
	// on a lane's last coupon.
	Binding string `json:"binding,omitempty"`
	// Open is the lane-open document (any S-expression form), base64url
	// of its bytes.
	Open string `json:"open,omitempty"`
}

// NewCredential returns the credential paying challenge c with p, carrying
// the lane-open document open when it is not nil.
func NewCredential(c *Challenge, p *coupons.Payment, open []byte) (*Credential, error) {
	if max := MaxCredentialLen / 2; len(open) > max {
		return nil, tooLarge(ErrBadCredential, len(open), max)
	}
	pl := ECouponPayload{Lane: p.Lane.String(), Index: p.Index, Value: b64.EncodeToString(p.Value[:])}
	if p.HasMAC {
		pl.Binding = b64.EncodeToString(p.MAC[:])
	}
	if open != nil {
		pl.Open = b64.EncodeToString(open)
	}
	raw := appendPayloadJCS(make([]byte, 0, 160+len(pl.Open)), &pl)
	return &Credential{Challenge: *c, Payload: raw, canonical: raw}, nil
}

// JSON returns the JCS serialisation of cr. It fails only when the payload
// is not I-JSON (ErrBadJSON).
func (cr *Credential) JSON() ([]byte, error) {
	payload := cr.canonical
	if !bytes.Equal(payload, cr.Payload) {
		var err error
		if payload, err = Canonicalize(cr.Payload); err != nil {
			return nil, err
		}
	}
	return appendCredentialJCS(make([]byte, 0, 512+len(payload)), cr, payload), nil
}

// Header returns the credential's header value, "Payment <base64url>".
func (cr *Credential) Header() (string, error) {
	j, err := cr.JSON()
	if err != nil {
		return "", err
	}
	if n := len(Scheme) + 1 + b64.EncodedLen(len(j)); n > MaxCredentialLen {
		return "", tooLarge(ErrBadCredential, n, MaxCredentialLen)
	}
	return Scheme + " " + b64.EncodeToString(j), nil
}

// ParseCredential parses a credential header value, "Payment" 1*SP
// base64url-nopad, from Authorization or Payment-Authorization. It checks
// the JSON's shape and the echoed challenge's syntax, not the binding
// (Binder.Verify) nor the payload (ECoupon). Errors match
// ErrBadCredential.
func ParseCredential(h string) (*Credential, error) {
	if len(h) > MaxCredentialLen {
		return nil, tooLarge(ErrBadCredential, len(h), MaxCredentialLen)
	}
	if len(h) <= len(Scheme) || !strings.EqualFold(h[:len(Scheme)], Scheme) || h[len(Scheme)] != ' ' {
		return nil, fieldErr(ErrBadCredential, "", "scheme is not %s", Scheme)
	}
	tok := strings.TrimRight(strings.TrimLeft(h[len(Scheme):], " "), " \t")
	if !isBase64URL(tok) {
		return nil, fieldErr(ErrBadCredential, "", "not unpadded base64url")
	}
	j, err := b64.DecodeString(tok)
	if err != nil {
		return nil, fieldErr(ErrBadCredential, "", "not unpadded base64url")
	}
	var cr Credential
	if err := json.Unmarshal(j, &cr); err != nil {
		return nil, fieldErr(ErrBadCredential, "", "not a credential's JSON: %v", err)
	}
	if p := bytes.TrimSpace(cr.Payload); len(p) == 0 || p[0] != '{' {
		return nil, fieldErr(ErrBadCredential, "payload", "missing or not an object")
	}
	if err := cr.Challenge.Validate(); err != nil {
		return nil, &Error{Err: ErrBadCredential, Field: "challenge", Reason: err.Error()}
	}
	return &cr, nil
}

// CredentialFromRequest returns the Payment credential of a request and
// the field it came in: Payment-Authorization (with or without the
// "Payment" scheme before the token), or Authorization when that holds the
// Payment scheme. ErrNoCredential when there is none; a request
// with more than one is refused (ErrBadCredential).
func CredentialFromRequest(h http.Header) (*Credential, string, error) {
	var found []string
	var field string
	for _, v := range h.Values(HeaderPaymentAuthorization) {
		if isBase64URL(strings.TrimSpace(v)) {
			v = Scheme + " " + strings.TrimSpace(v) // the credential without its scheme
		}
		found, field = append(found, v), HeaderPaymentAuthorization
	}
	for _, v := range h.Values("Authorization") {
		if len(v) > len(Scheme) && strings.EqualFold(v[:len(Scheme)], Scheme) && v[len(Scheme)] == ' ' {
			found, field = append(found, v), "Authorization"
		}
	}
	switch len(found) {
	case 0:
		return nil, "", ErrNoCredential
	case 1:
		cr, err := ParseCredential(found[0])
		return cr, field, err
	}
	return nil, "", fieldErr(ErrBadCredential, "", "%d Payment credentials in one request", len(found))
}

// ECoupon decodes the credential's payload as the ecoupon method's: the
// payment, and the lane-open document when there is one (nil otherwise).
// A credential for another method gives ErrMethodUnsupported; a payload
// that does not decode, ErrBadCredential.
func (cr *Credential) ECoupon() (*coupons.Payment, []byte, error) {
	if cr.Challenge.Method != Method {
		return nil, nil, fieldErr(ErrMethodUnsupported, "method", "%q", clip(cr.Challenge.Method))
	}
	var pl ECouponPayload
	if err := json.Unmarshal(cr.Payload, &pl); err != nil {
		return nil, nil, fieldErr(ErrBadCredential, "payload", "%v", err)
	}
	lane, err := coupons.ParseLaneID(pl.Lane)
	if err != nil {
		return nil, nil, fieldErr(ErrBadCredential, "payload.lane", "%v", err)
	}
	p := &coupons.Payment{Lane: lane, Index: pl.Index}
	if pl.Index == 0 {
		return nil, nil, fieldErr(ErrBadCredential, "payload.index", "not a coupon index (1, 2, …)")
	}
	if !decodeExact(p.Value[:], pl.Value) {
		return nil, nil, fieldErr(ErrBadCredential, "payload.value", "not 32 bytes of unpadded base64url")
	}
	if pl.Binding != "" {
		if !decodeExact(p.MAC[:], pl.Binding) {
			return nil, nil, fieldErr(ErrBadCredential, "payload.binding", "not 16 bytes of unpadded base64url")
		}
		p.HasMAC = true
	}
	var open []byte
	if pl.Open != "" {
		if open, err = b64.DecodeString(pl.Open); err != nil {
			return nil, nil, fieldErr(ErrBadCredential, "payload.open", "not unpadded base64url")
		}
	}
	return p, open, nil
}

func decodeExact(dst []byte, s string) bool {
	if len(s) != b64.EncodedLen(len(dst)) {
		return false
	}
	n, err := b64.Decode(dst, []byte(s))
	return err == nil && n == len(dst)
}
