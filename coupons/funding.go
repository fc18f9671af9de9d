package coupons

import (
	"crypto"
	"errors"
	"fmt"
	"time"

	"github.com/ecoupons/ecoupons/spki"
)

// ErrBookNotFunded means a lane open (or a grant) shows no valid book
// certificate: the broker has not vouched that it holds, or lends, the
// book's face value, so nothing guarantees the vendor will be paid.
var ErrBookNotFunded = errors.New("coupons: book not funded by its broker")

// FundingTag is the tag of a book certificate: the broker holds (or, for a
// post-paid account, guarantees) the face value of a book for a vendor, in
// coupons of unit, all in one currency.
//
//	(ecoupons-funded (vendor v) (face "0.064" EUR) (unit "0.001" EUR))
func FundingTag(b *Book) (*spki.Tag, error) {
	face, err := b.FaceValue()
	if err != nil {
		return nil, err
	}
	return spki.ParseTag(fundingTagSexp(b.Vendor, face, b.Unit, b.Currency))
}

func fundingTagSexp(vendor string, face, unit int64, currency string) spki.List {
	return spki.L("ecoupons-funded", spki.L("vendor", vendor),
		spki.L("face", FormatAmount(face), currency), spki.L("unit", FormatAmount(unit), currency))
}

// FundingCert is the book certificate the broker issues when it accepts a
// book: issuer the broker's key, subject the book's ID as a hash
// principal, the FundingTag, valid until the book's expiry.
//
//	(cert (issuer (public-key …)) (subject (hash sha256 |book_id|))
//	      (tag (ecoupons-funded …)) (valid (not-before …) (not-after …)))
func FundingCert(b *Book, broker *spki.PublicKey, notBefore time.Time) (*spki.Cert, error) {
	if broker.Hash() != b.Broker {
		return nil, fmt.Errorf("%w: the book names another broker", ErrBookNotFunded)
	}
	tag, err := FundingTag(b)
	if err != nil {
		return nil, err
	}
	return &spki.Cert{Issuer: spki.KeyPrincipal(broker), Subject: spki.HashPrincipal(spki.KeyHash(b.ID())), Tag: tag,
		Validity: spki.Validity{NotBefore: notBefore.UTC().Truncate(time.Second), NotAfter: b.NotAfter}}, nil
}

// SignFunding issues a book certificate with the broker's signer.
func SignFunding(b *Book, broker crypto.Signer, notBefore time.Time) (*spki.SignedCert, error) {
	pub, err := spki.NewPublicKey(broker.Public())
	if err != nil {
		return nil, err
	}
	c, err := FundingCert(b, pub, notBefore)
	if err != nil {
		return nil, err
	}
	return spki.SignCert(c, broker)
}

// VerifyFunding checks a book certificate: issued and signed by the
// book's broker (whose key the caller trusts by hash: b.Broker), for this
// book, with exactly the book's vendor, face value, unit and currency,
// valid at now and not beyond the book's expiry. cache may be nil. Every
// failure wraps ErrBookNotFunded.
func VerifyFunding(sc *spki.SignedCert, b *Book, now time.Time, cache spki.VerifyCache) error {
	if sc == nil {
		return fmt.Errorf("%w: no book certificate; the owner must register the book at its broker (POST /v1/books), which answers with it", ErrBookNotFunded)
	}
	c := sc.Cert
	id := b.ID()
	switch {
	case c.Issuer.Hash != b.Broker:
		return fmt.Errorf("%w: the book certificate is not issued by the book's broker", ErrBookNotFunded)
	case c.Subject.Hash != spki.KeyHash(id):
		return fmt.Errorf("%w: the book certificate is for another book", ErrBookNotFunded)
	case c.Propagate:
		return fmt.Errorf("%w: a book certificate cannot be delegated (propagate)", ErrBookNotFunded)
	case !c.Validity.NotAfter.IsZero() && c.Validity.NotAfter.After(b.NotAfter) || c.Validity.NotAfter.IsZero():
		return fmt.Errorf("%w: the book certificate must end by the book's expiry", ErrBookNotFunded)
	}
	face, err := b.FaceValue()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBookNotFunded, err)
	}
	want, err := spki.ParseTag(fundingTagSexp(b.Vendor, face, b.Unit, b.Currency))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBookNotFunded, err)
	}
	if !c.Tag.Equal(want) {
		return fmt.Errorf("%w: the book certificate vouches for %s, the book needs %s", ErrBookNotFunded, c.Tag, want)
	}
	if err := c.Validity.Check(now); err != nil {
		return fmt.Errorf("%w: %w", ErrBookNotFunded, err)
	}
	if err := sc.VerifyCached(cache); err != nil {
		return fmt.Errorf("%w: %w", ErrBookNotFunded, err)
	}
	return nil
}

// BlindFundingHead heads an anonymous book's funding proof, (ecoupon-blind-funding
// (denomination |id|) (prefix |…|) (signature |…|)), which package
// blindfund makes and checks: the broker's RSA blind signature over the
// book under a denomination's key.
const BlindFundingHead = "ecoupon-blind-funding"

// BlindFunding checks an anonymous book's funding proof (Open.Blind) for
// book b at now: the denomination is one its broker published and is
// valid now, the book's face value and currency are the denomination's,
// and the signature is over this book. It returns the proof's hash, the
// principal a revocation list names to stop the book. Errors wrap
// ErrBookNotFunded. Package caddymodule implements it with package
// blindfund (which this package cannot import).
type BlindFunding interface {
	VerifyBlindFunding(proof spki.List, b *Book, now time.Time) ([32]byte, error)
}
