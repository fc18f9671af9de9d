package payment

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Challenge is a Payment challenge: the parameters of
// WWW-Authenticate: Payment …, which a credential echoes. Values are
// unquoted; Request and Opaque are kept as on the wire (base64url), as the
// binding covers them so.
type Challenge struct {
	// ID binds the other parameters (Binder); required.
	ID string `json:"id"`
	// Realm is the protection space; required.
	Realm string `json:"realm"`
	// Method is the payment method identifier, lower-case letters; required.
	Method string `json:"method"`
	// Intent is the kind of payment (IntentCharge, IntentSession); required.
	Intent string `json:"intent"`
	// Request is the method's request: base64url (unpadded) of JCS JSON;
	// required. EncodeRequest and DecodeRequest make and read ecoupon's.
	Request string `json:"request"`
	// Expires is the RFC 3339 time after which the challenge is refused.
	Expires string `json:"expires,omitempty"`
	// Digest is the request body's Content-Digest (RFC 9530) the
	// credential must be sent with.
	Digest string `json:"digest,omitempty"`
	// Opaque is server correlation data, base64url JSON, echoed unchanged.
	Opaque string `json:"opaque,omitempty"`
	// Header is HeaderPaymentAuthorization when the server wants the
	// credential there, "" for Authorization.
	Header string `json:"header,omitempty"`
	// Description is for display only and not bound.
	Description string `json:"description,omitempty"`
}

// AppendHeader appends the WWW-Authenticate value of c to dst, every
// value quoted. Validate c first: bytes a quoted-string cannot carry are
// dropped.
func (c *Challenge) AppendHeader(dst []byte) []byte {
	dst = append(dst, Scheme...)
	dst = append(dst, ' ')
	first := true
	param := func(name, value string) {
		if !first {
			dst = append(dst, ", "...)
		}
		first = false
		dst = append(dst, name...)
		dst = append(dst, '=')
		dst = appendQuoted(dst, value)
	}
	param("id", c.ID)
	param("realm", c.Realm)
	param("method", c.Method)
	param("intent", c.Intent)
	param("request", c.Request)
	for _, p := range [...]struct{ name, value string }{
		{"expires", c.Expires}, {"digest", c.Digest}, {"opaque", c.Opaque}, {"header", c.Header}, {"description", c.Description},
	} {
		if p.value != "" {
			param(p.name, p.value)
		}
	}
	return dst
}

// String returns the WWW-Authenticate value of c.
func (c *Challenge) String() string {
	return string(c.AppendHeader(make([]byte, 0, 256+len(c.Request))))
}

// Validate checks each parameter's syntax: the required ones present and
// non-empty, method lower-case letters, intent a token of letters, digits
// and '-', request and opaque base64url, expires RFC 3339, header
// Payment-Authorization, and no control bytes. Errors match
// ErrBadChallenge.
func (c *Challenge) Validate() error {
	for _, p := range [...]struct{ name, value string }{
		{"id", c.ID}, {"realm", c.Realm}, {"method", c.Method}, {"intent", c.Intent}, {"request", c.Request},
	} {
		if p.value == "" {
			return fieldErr(ErrBadChallenge, p.name, "missing or empty")
		}
	}
	for _, p := range [...]struct{ name, value string }{
		{"id", c.ID}, {"realm", c.Realm}, {"digest", c.Digest}, {"description", c.Description},
	} {
		if hasCTL(p.value) {
			return fieldErr(ErrBadChallenge, p.name, "control byte")
		}
	}
	for _, p := range [...]struct{ name, value string }{
		{"id", c.ID}, {"realm", c.Realm}, {"digest", c.Digest}, {"description", c.Description},
	} {
		if !utf8.ValidString(p.value) {
			return fieldErr(ErrBadChallenge, p.name, "not UTF-8")
		}
	}
	if !isMethodID(c.Method) {
		return fieldErr(ErrBadChallenge, "method", "%q is not lower-case letters", clip(c.Method))
	}
	if !isIntent(c.Intent) {
		return fieldErr(ErrBadChallenge, "intent", "%q is not letters, digits and '-'", clip(c.Intent))
	}
	if len(c.Request) > MaxRequestLen {
		return tooLarge(ErrBadChallenge, len(c.Request), MaxRequestLen)
	}
	if !isBase64URL(c.Request) {
		return fieldErr(ErrBadChallenge, "request", "not unpadded base64url")
	}
	if c.Opaque != "" && !isBase64URL(c.Opaque) {
		return fieldErr(ErrBadChallenge, "opaque", "not unpadded base64url")
	}
	if c.Expires != "" {
		if _, err := time.Parse(time.RFC3339, c.Expires); err != nil {
			return fieldErr(ErrBadChallenge, "expires", "%q is not an RFC 3339 date-time", clip(c.Expires))
		}
	}
	if c.Header != "" && !strings.EqualFold(c.Header, HeaderPaymentAuthorization) {
		return fieldErr(ErrBadChallenge, "header", "%q is not %s", clip(c.Header), HeaderPaymentAuthorization)
	}
	return nil
}

// ExpiresAt returns the parsed expires parameter, or the zero time when
// there is none (or it does not parse).
func (c *Challenge) ExpiresAt() time.Time {
	t, _ := time.Parse(time.RFC3339, c.Expires)
	return t
}

// CredentialHeader returns the request header the credential for c goes
// in: Payment-Authorization when c asks for it, Authorization otherwise.
func (c *Challenge) CredentialHeader() string {
	if c.Header != "" {
		return HeaderPaymentAuthorization
	}
	return "Authorization"
}

// ParseChallenges returns the Payment challenges of a WWW-Authenticate
// value, of any method, skipping other schemes. A malformed Payment
// challenge is left out and reported in the error (matching
// ErrBadChallenge) beside the valid ones; a value that does not parse at
// all gives no challenge and an error matching ErrBadAuthParams.
func ParseChallenges(h string) ([]Challenge, error) {
	acs, err := ParseAuthChallenges(h)
	if err != nil {
		return nil, err
	}
	var out []Challenge
	var errs []error
	for i := range acs {
		ac := &acs[i]
		if !strings.EqualFold(ac.Scheme, Scheme) {
			continue
		}
		c := challengeFromParams(ac.Params)
		if ac.Token68 != "" {
			errs = append(errs, fieldErr(ErrBadChallenge, "", "a token68 instead of auth-params"))
			continue
		}
		if err := c.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

func challengeFromParams(ps []AuthParam) Challenge {
	var c Challenge
	for _, p := range ps {
		switch p.Name {
		case "id":
			c.ID = p.Value
		case "realm":
			c.Realm = p.Value
		case "method":
			c.Method = p.Value
		case "intent":
			c.Intent = p.Value
		case "request":
			c.Request = p.Value
		case "expires":
			c.Expires = p.Value
		case "digest":
			c.Digest = p.Value
		case "opaque":
			c.Opaque = p.Value
		case "header":
			c.Header = p.Value
		case "description":
			c.Description = p.Value
		}
	}
	return c
}

// ChallengesFromResponse returns the Payment challenges of every
// WWW-Authenticate field of a response's header, as ParseChallenges does.
func ChallengesFromResponse(h http.Header) ([]Challenge, error) {
	var out []Challenge
	var errs []error
	total := 0
	for _, v := range h.Values("WWW-Authenticate") {
		if total += len(v); total > 4*MaxChallengeLen {
			errs = append(errs, tooLarge(ErrBadAuthParams, total, 4*MaxChallengeLen))
			break
		}
		cs, err := ParseChallenges(v)
		out = append(out, cs...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// SelectECoupon returns the first of cs with method ecoupon and the given
// intent, or nil.
func SelectECoupon(cs []Challenge, intent string) *Challenge {
	for i := range cs {
		if cs[i].Method == Method && cs[i].Intent == intent {
			return &cs[i]
		}
	}
	return nil
}

// isMethodID: payment-method-id = 1*LOWERALPHA.
func isMethodID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 'a' || s[i] > 'z' {
			return false
		}
	}
	return true
}

// isIntent: intent = 1*( ALPHA / DIGIT / "-" ).
func isIntent(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isBase64URL: base64url-nopad = 1*( ALPHA / DIGIT / "-" / "_" ), of a
// length an encoding can have.
func isBase64URL(s string) bool {
	if s == "" || len(s)%4 == 1 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// b64 is strict unpadded base64url: non-zero trailing bits are refused, so
// each value has one encoding.
var b64 = base64.RawURLEncoding.Strict()

// ECouponRequest decodes the request parameter of an ecoupon challenge.
func (c *Challenge) ECouponRequest() (*ECouponRequest, error) {
	if c.Method != Method {
		return nil, fieldErr(ErrMethodUnsupported, "method", "%q", clip(c.Method))
	}
	return DecodeRequest(c.Request)
}

// Expired reports whether c is past its expires time at now (a challenge
// without one never expires for the client; the gate refuses it).
func (c *Challenge) Expired(now time.Time) bool {
	exp := c.ExpiresAt()
	return !exp.IsZero() && !now.Before(exp)
}
