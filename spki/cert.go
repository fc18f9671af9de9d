package spki

import (
	"crypto"
	"errors"
	"fmt"
	"time"
)

// Errors about certificates.
var (
	// ErrBadCert is a malformed (cert …) object.
	ErrBadCert = errors.New("spki: malformed certificate")
	// ErrUnsupported is a well-formed construct ecoupons does not implement
	// (SDSI names, on-line tests, threshold subjects).
	ErrUnsupported = errors.New("spki: unsupported construct")
	// ErrNotYetValid means the time is before a not-before date.
	ErrNotYetValid = errors.New("spki: certificate not yet valid")
	// ErrExpired means the time is after a not-after date.
	ErrExpired = errors.New("spki: certificate expired")
)

// Validity is a certificate's validity period (structure draft §5.3). A
// zero bound is unbounded. Dates have one-second precision, in UTC.
type Validity struct {
	NotBefore time.Time
	NotAfter  time.Time
}

// IsZero reports whether v has neither bound.
func (v Validity) IsZero() bool { return v.NotBefore.IsZero() && v.NotAfter.IsZero() }

// Check reports whether t lies within v (both bounds inclusive).
func (v Validity) Check(t time.Time) error {
	if !v.NotBefore.IsZero() && t.Before(v.NotBefore) {
		return fmt.Errorf("%w: valid from %s, now %s", ErrNotYetValid, FormatDate(v.NotBefore), FormatDate(t))
	}
	if !v.NotAfter.IsZero() && t.After(v.NotAfter) {
		return fmt.Errorf("%w: valid until %s, now %s", ErrExpired, FormatDate(v.NotAfter), FormatDate(t))
	}
	return nil
}

// Intersect returns VIntersect(v, w) (RFC 2693 §6.3): the later not-before
// and the earlier not-after. The result may be empty (NotBefore after
// NotAfter), in which case Check fails at every time.
func (v Validity) Intersect(w Validity) Validity {
	r := v
	if !w.NotBefore.IsZero() && (r.NotBefore.IsZero() || w.NotBefore.After(r.NotBefore)) {
		r.NotBefore = w.NotBefore
	}
	if !w.NotAfter.IsZero() && (r.NotAfter.IsZero() || w.NotAfter.Before(r.NotAfter)) {
		r.NotAfter = w.NotAfter
	}
	return r
}

// FormatDate writes t as an SPKI date, YYYY-MM-DD_HH:MM:SS in UTC.
func FormatDate(t time.Time) string { return t.UTC().Format(SPKIDate) }

// ParseDate parses an SPKI date.
func ParseDate(s string) (time.Time, error) { return parseSPKIDate([]byte(s)) }

func (v Validity) sexp() List {
	l := L("valid")
	if !v.NotBefore.IsZero() {
		l = append(l, L("not-before", FormatDate(v.NotBefore)))
	}
	if !v.NotAfter.IsZero() {
		l = append(l, L("not-after", FormatDate(v.NotAfter)))
	}
	return l
}

func parseValidity(l List) (Validity, error) {
	var v Validity
	for i, e := range l[1:] {
		f, ok := e.(List)
		name, _ := f.Head()
		if name == "online" {
			return v, fmt.Errorf("%w: on-line validity tests", ErrUnsupported)
		}
		if !ok || len(f) != 2 {
			return v, fmt.Errorf("%w: (valid …) holds %s", ErrBadCert, describe(e))
		}
		val, ok := plainAtom(f[1])
		if !ok {
			return v, fmt.Errorf("%w: %s needs a date", ErrBadCert, name)
		}
		switch {
		case name == "not-before" && i == 0:
			t, err := ParseDate(val)
			if err != nil {
				return v, fmt.Errorf("%w: not-before: %w", ErrBadCert, err)
			}
			v.NotBefore = t
		case name == "not-after" && v.NotAfter.IsZero():
			t, err := ParseDate(val)
			if err != nil {
				return v, fmt.Errorf("%w: not-after: %w", ErrBadCert, err)
			}
			v.NotAfter = t
		default:
			return v, fmt.Errorf("%w: (valid …) field %q out of place", ErrBadCert, name)
		}
	}
	return v, nil
}

// Cert is an SPKI authorization certificate (structure draft §6):
//
//	(cert (issuer <principal>) (subject <principal>) [(propagate)]
//	      (tag <tag>) [(valid [(not-before d)] [(not-after d)])]
//	      [(comment "…")])
//
// Its hash, which revocation lists name, is the SHA-256 of the canonical
// (cert …) object, signature excluded.
type Cert struct {
	Issuer    Principal
	Subject   Principal
	Propagate bool
	Tag       *Tag
	Validity  Validity
	Comment   string

	raw List // the object as parsed, so that its hash is exactly the signed bytes
}

// Sexp returns the (cert …) object: the parsed bytes when c was parsed,
// else the encoding of its fields.
func (c *Cert) Sexp() List {
	if c.raw != nil {
		return c.raw
	}
	l := L("cert", L("issuer", c.Issuer.Sexp()), L("subject", c.Subject.Sexp()))
	if c.Propagate {
		l = append(l, L("propagate"))
	}
	l = append(l, L("tag", c.Tag.Sexp()))
	if !c.Validity.IsZero() {
		l = append(l, c.Validity.sexp())
	}
	if c.Comment != "" {
		l = append(l, L("comment", c.Comment))
	}
	return l
}

// Hash returns the SHA-256 of the canonical certificate body.
func (c *Cert) Hash() [32]byte { return ObjectHash(c.Sexp()) }

// ParseCert parses a (cert …) object. Fields must appear in the order of
// the structure draft; (version #00#), (display …), (issuer-info …) and
// (subject-info …) are accepted and ignored.
func ParseCert(s Sexp) (*Cert, error) {
	l, ok := s.(List)
	if !ok || !l.Is("cert") {
		return nil, fmt.Errorf("%w: expected (cert …), got %s", ErrBadCert, describe(s))
	}
	c := &Cert{raw: l}
	order := []string{"version", "display", "issuer", "issuer-info", "subject", "subject-info", "propagate", "tag", "valid", "comment"}
	next := 0
	seen := map[string]bool{}
	for _, e := range l[1:] {
		f, ok := e.(List)
		name, ok2 := f.Head()
		if !ok || !ok2 {
			return nil, fmt.Errorf("%w: field %s", ErrBadCert, describe(e))
		}
		pos := -1
		for i := next; i < len(order); i++ {
			if order[i] == name {
				pos = i
				break
			}
		}
		if pos < 0 {
			return nil, fmt.Errorf("%w: unknown, repeated or misplaced field (%s …)", ErrBadCert, name)
		}
		next = pos + 1
		seen[name] = true
		var err error
		switch name {
		case "version":
			if len(f) != 2 || !Equal(f[1], NewBytes([]byte{0})) {
				err = fmt.Errorf("%w: certificate version (only #00#)", ErrUnsupported)
			}
		case "issuer", "subject":
			if len(f) != 2 {
				err = fmt.Errorf("%w: (%s <principal>)", ErrBadCert, name)
				break
			}
			var p Principal
			if p, err = ParsePrincipal(f[1]); err == nil {
				if name == "issuer" {
					c.Issuer = p
				} else {
					c.Subject = p
				}
			}
		case "propagate":
			if len(f) != 1 {
				err = fmt.Errorf("%w: (propagate) takes no arguments", ErrBadCert)
			}
			c.Propagate = true
		case "tag":
			if len(f) != 2 {
				err = fmt.Errorf("%w: (tag <tag-body>)", ErrBadCert)
				break
			}
			c.Tag, err = ParseTag(f[1])
		case "valid":
			c.Validity, err = parseValidity(f)
		case "comment":
			s, ok := plainAtom(f[len(f)-1])
			if len(f) != 2 || !ok {
				err = fmt.Errorf("%w: (comment \"…\")", ErrBadCert)
			}
			c.Comment = s
		}
		if err != nil {
			return nil, err
		}
	}
	for _, req := range []string{"issuer", "subject", "tag"} {
		if !seen[req] {
			return nil, fmt.Errorf("%w: missing (%s …)", ErrBadCert, req)
		}
	}
	return c, nil
}

// SignedCert is a certificate with its issuer's signature. On the wire it
// is (sequence (cert …) (signature …)), the RFC 2693 sequence form.
type SignedCert struct {
	Cert      *Cert
	Signature *Signature
}

// SignCert signs c with signer, whose public key must be c's issuer.
func SignCert(c *Cert, signer crypto.Signer) (*SignedCert, error) {
	pub, err := NewPublicKey(signer.Public())
	if err != nil {
		return nil, err
	}
	if pub.Hash() != c.Issuer.Hash {
		return nil, fmt.Errorf("%w: signer %s is not the issuer", ErrWrongSigner, pub.Hash())
	}
	sig, err := Sign(signer, c.Sexp())
	if err != nil {
		return nil, err
	}
	return &SignedCert{Cert: c, Signature: sig}, nil
}

// Verify checks that the signature covers c and is by c's issuer. It does
// not check validity dates, which depend on the time of use.
func (sc *SignedCert) Verify() error { return sc.VerifyCached(nil) }

// VerifyCached is Verify with a cache of verified signatures (may be nil).
func (sc *SignedCert) VerifyCached(cache VerifyCache) error {
	if sc.Signature.Signer.Hash() != sc.Cert.Issuer.Hash {
		return fmt.Errorf("%w: certificate signed by %s, issuer is %s", ErrWrongSigner, sc.Signature.Signer.Hash(), sc.Cert.Issuer.Hash)
	}
	return sc.Signature.VerifyCached(sc.Cert.Hash(), cache)
}

// IssuerKey returns the issuer's public key, from the certificate or from
// the signature.
func (sc *SignedCert) IssuerKey() *PublicKey {
	if sc.Cert.Issuer.Key != nil {
		return sc.Cert.Issuer.Key
	}
	return sc.Signature.Signer
}

// Sexp returns (sequence (cert …) (signature …)).
func (sc *SignedCert) Sexp() List { return L("sequence", sc.Cert.Sexp(), sc.Signature.Sexp()) }

// ParseSignedCert parses (sequence (cert …) (signature …)) and checks that
// the signature names this certificate's hash. It does not verify the
// signature: call Verify.
func ParseSignedCert(s Sexp) (*SignedCert, error) {
	certs, err := ParseSequence(s)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%w: expected one signed certificate, found %d", ErrBadCert, len(certs))
	}
	return certs[0], nil
}

// ParseSequence parses an RFC 2693 (sequence …) of public keys,
// certificates and signatures, in which each signature follows the
// certificate it signs. Public keys in the sequence are ignored (every
// signature carries its key). Signatures are matched by hash, not verified.
func ParseSequence(s Sexp) ([]*SignedCert, error) {
	l, ok := s.(List)
	if !ok || !l.Is("sequence") {
		return nil, fmt.Errorf("%w: expected (sequence …), got %s", ErrBadCert, describe(s))
	}
	var out []*SignedCert
	var pending *Cert
	for _, e := range l[1:] {
		el, _ := e.(List)
		name, _ := el.Head()
		switch name {
		case "public-key":
			if _, err := ParsePublicKey(el); err != nil {
				return nil, err
			}
		case "cert":
			if pending != nil {
				return nil, fmt.Errorf("%w: certificate without a signature in sequence", ErrBadCert)
			}
			c, err := ParseCert(el)
			if err != nil {
				return nil, err
			}
			pending = c
		case "signature":
			sig, err := ParseSignature(el)
			if err != nil {
				return nil, err
			}
			if pending == nil {
				return nil, fmt.Errorf("%w: signature without a certificate in sequence", ErrMalformedSignature)
			}
			if sig.Hash != pending.Hash() {
				return nil, fmt.Errorf("%w: in sequence", ErrHashMismatch)
			}
			out = append(out, &SignedCert{Cert: pending, Signature: sig})
			pending = nil
		default:
			return nil, fmt.Errorf("%w: sequence element %s", ErrBadCert, describe(e))
		}
	}
	if pending != nil {
		return nil, fmt.Errorf("%w: certificate without a signature in sequence", ErrBadCert)
	}
	return out, nil
}
