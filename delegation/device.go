package delegation

import (
	"crypto"
	"crypto/ecdh"
	"fmt"

	"github.com/ecoupons/ecoupons/spki"
)

// Device is a delegate's public identity, signed by its signing key:
//
//	(sequence (ecoupons-device (name "phone") (signing-key (public-key …))
//	                           (encryption-key (x25519 |32 bytes|)))
//	          (signature …))
//
// The owner checks the signature before sealing seeds to the encryption
// key, so the two keys travel as one; the owner still has to make sure,
// out of band (fingerprint), that the device is the one in hand.
type Device struct {
	Name       string
	Signing    *spki.PublicKey
	Encryption *ecdh.PublicKey // X25519
	Signature  *spki.Signature
}

// NewDevice signs a device identity. enc must be an X25519 key.
func NewDevice(name string, signer crypto.Signer, enc *ecdh.PublicKey) (*Device, error) {
	pub, err := spki.NewPublicKey(signer.Public())
	if err != nil {
		return nil, err
	}
	if enc.Curve() != ecdh.X25519() {
		return nil, fmt.Errorf("%w: the encryption key must be X25519", ErrBadDevice)
	}
	d := &Device{Name: name, Signing: pub, Encryption: enc}
	if d.Signature, err = spki.Sign(signer, d.body()); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Device) body() spki.List {
	return spki.L("ecoupons-device", spki.L("name", d.Name), spki.L("signing-key", d.Signing.Sexp()),
		spki.L("encryption-key", spki.L("x25519", d.Encryption.Bytes())))
}

// Sexp returns (sequence (ecoupons-device …) (signature …)).
func (d *Device) Sexp() spki.List { return spki.L("sequence", d.body(), d.Signature.Sexp()) }

// Fingerprint is the hash of the device's signing key, which users compare
// out of band.
func (d *Device) Fingerprint() spki.KeyHash { return d.Signing.Hash() }

// ParseDevice parses and verifies a device identity.
func ParseDevice(x spki.Sexp) (*Device, error) {
	l, ok := x.(spki.List)
	if !ok || !l.Is("sequence") || len(l) != 3 {
		return nil, fmt.Errorf("%w: expected (sequence (ecoupons-device …) (signature …))", ErrBadDevice)
	}
	b, ok := l[1].(spki.List)
	if !ok || !b.Is("ecoupons-device") || len(b) != 4 {
		return nil, fmt.Errorf("%w: expected (ecoupons-device (name …) (signing-key …) (encryption-key …))", ErrBadDevice)
	}
	d := &Device{}
	name, ok := field(b[1], "name")
	if !ok {
		return nil, fmt.Errorf("%w: (name \"…\")", ErrBadDevice)
	}
	if n, ok := atomString(name); ok && len(n) <= 64 {
		d.Name = n
	} else {
		return nil, fmt.Errorf("%w: name must be a string of at most 64 bytes", ErrBadDevice)
	}
	sk, ok := field(b[2], "signing-key")
	if !ok {
		return nil, fmt.Errorf("%w: (signing-key (public-key …))", ErrBadDevice)
	}
	var err error
	if d.Signing, err = spki.ParsePublicKey(sk); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDevice, err)
	}
	ek, ok := field(b[3], "encryption-key")
	el, ok2 := ek.(spki.List)
	if !ok || !ok2 || len(el) != 2 || !el.Is("x25519") {
		return nil, fmt.Errorf("%w: (encryption-key (x25519 |…|))", ErrBadDevice)
	}
	raw, ok := atomString(el[1])
	if !ok {
		return nil, fmt.Errorf("%w: x25519 key must be 32 bytes", ErrBadDevice)
	}
	if d.Encryption, err = ecdh.X25519().NewPublicKey([]byte(raw)); err != nil {
		return nil, fmt.Errorf("%w: x25519 key: %v", ErrBadDevice, err)
	}
	if d.Signature, err = spki.ParseSignature(l[2]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDevice, err)
	}
	if !d.Signature.Signer.Equal(d.Signing) {
		return nil, fmt.Errorf("%w: signed by another key than its signing key", ErrBadDevice)
	}
	if err := d.Signature.VerifyObject(d.body()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDevice, err)
	}
	return d, nil
}

// field returns the value of (name value).
func field(x spki.Sexp, name string) (spki.Sexp, bool) {
	l, ok := x.(spki.List)
	if !ok || len(l) != 2 || !l.Is(name) {
		return nil, false
	}
	return l[1], true
}

func atomString(x spki.Sexp) (string, bool) {
	a, ok := x.(*spki.Atom)
	if !ok || a.Hint != nil {
		return "", false
	}
	return string(a.Value), true
}
