// Package blindfund is the funding proof of an anonymous book: an RSA
// blind signature (RFC 9474, RSABSSA-SHA384-PSS-Randomized, with
// github.com/cloudflare/circl's blindrsa) of the broker over the book's
// ID, under a key the broker keeps for one face value, currency and
// period (a denomination). The broker debits the reader's account when it
// signs, but signs a blinded message: it never sees the book it funded,
// and the proof the book later carries cannot be linked to the signing.
// A gate checks the proof against the denomination (whose key the broker
// certifies), the book's face value and currency, and the period.
//
// The flow:
//
//	req, blinded, _ := blindfund.Blind(denom, bookID, rand.Reader) // reader
//	blindSig, _ := blindfund.Sign(denomKey, blinded)              // broker: debits the face value
//	proof, _ := req.Finish(blindSig)                              // reader: the book's proof
//	err := proof.Verify(denom, bookID, face, currency, notAfter, now) // gate
//
// A wallet blinds with BlindSeeded (randomness from a stored seed, so an
// issuance survives a crash); a gate keeps its brokers' certified
// denominations in a Set, which checks a lane open's proof
// (coupons.BlindFunding) once per book. docs/PROTOCOL.md §20 is the
// protocol and its privacy analysis. The package imports no Caddy and no
// SQL driver.
package blindfund

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cloudflare/circl/blindsign/blindrsa"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// Variant is the RFC 9474 variant every denomination uses.
const Variant = blindrsa.SHA384PSSRandomized

// label starts every signed message: a signature of this package is
// never one of anything else.
const label = "ecoupons anonymous book v1"

// MinKeyBits is the smallest denomination key taken (RFC 9474 asks for at
// least 2048 bits).
const MinKeyBits = 2048

var (
	// ErrWrongDenomination is a proof made under another denomination
	// than the one it is checked against, or a book whose face value or
	// currency is not the denomination's.
	ErrWrongDenomination = errors.New("blindfund: the book is not of this denomination")
	// ErrKeyExpired is a proof checked outside its denomination's period,
	// or a book that outlives it.
	ErrKeyExpired = errors.New("blindfund: the denomination's key is not valid now, or the book outlives it")
	// ErrBadSignature is a proof whose signature does not verify: a book
	// other than the one signed, or a forgery.
	ErrBadSignature = errors.New("blindfund: the signature does not verify")
	// ErrFormat is a denomination or proof that does not parse.
	ErrFormat = errors.New("blindfund: malformed")
)

// Denomination is a broker's blind-signing key for books of one face value
// and currency, valid for one period. Its ID names it in proofs.
type Denomination struct {
	Face      int64  // the books' face value, in billionths of Currency
	Currency  string // ISO 4217
	NotBefore time.Time
	// NotAfter ends the key's validity: no proof under it is taken after
	// it, and a book it funds must expire by then.
	NotAfter time.Time
	Key      *rsa.PublicKey
}

// NewDenomination makes a denomination and its private key.
func NewDenomination(rnd io.Reader, face int64, currency string, notBefore, notAfter time.Time, bits int) (*Denomination, *rsa.PrivateKey, error) {
	if bits < MinKeyBits {
		return nil, nil, fmt.Errorf("blindfund: a key of %d bits; at least %d", bits, MinKeyBits)
	}
	sk, err := rsa.GenerateKey(rnd, bits)
	if err != nil {
		return nil, nil, err
	}
	d := &Denomination{Face: face, Currency: currency, NotBefore: notBefore.UTC().Truncate(time.Second), NotAfter: notAfter.UTC().Truncate(time.Second), Key: &sk.PublicKey}
	if err := d.check(); err != nil {
		return nil, nil, err
	}
	return d, sk, nil
}

func (d *Denomination) check() error {
	switch {
	case d.Face <= 0:
		return fmt.Errorf("%w: denomination face value %d", ErrFormat, d.Face)
	case len(d.Currency) != 3:
		return fmt.Errorf("%w: denomination currency %q", ErrFormat, d.Currency)
	case !d.NotAfter.After(d.NotBefore):
		return fmt.Errorf("%w: denomination period ends before it starts", ErrFormat)
	case d.Key == nil || d.Key.N.BitLen() < MinKeyBits:
		return fmt.Errorf("%w: denomination key under %d bits", ErrFormat, MinKeyBits)
	}
	return nil
}

// Sexp is the denomination as the broker publishes it (and certifies it):
// (ecoupon-denomination (face "1.024") (currency EUR) (not-before …)
// (not-after …) (rsa-pss-sha384 |PKIX DER|)).
func (d *Denomination) Sexp() spki.List {
	der, _ := x509.MarshalPKIXPublicKey(d.Key)
	return spki.L("ecoupon-denomination", spki.L("face", coupons.FormatAmount(d.Face)), spki.L("currency", d.Currency),
		spki.L("not-before", spki.FormatDate(d.NotBefore)), spki.L("not-after", spki.FormatDate(d.NotAfter)),
		spki.L("rsa-pss-sha384", der))
}

// ID names the denomination: SHA-256 of its canonical S-expression.
func (d *Denomination) ID() [32]byte { return sha256.Sum256(spki.Canonical(d.Sexp())) }

// ParseDenomination parses a published denomination (any S-expression
// form).
func ParseDenomination(b []byte) (*Denomination, error) {
	x, err := spki.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	l, ok := x.(spki.List)
	if !ok || !l.Is("ecoupon-denomination") || len(l) != 6 {
		return nil, fmt.Errorf("%w: not an (ecoupon-denomination (face) (currency) (not-before) (not-after) (rsa-pss-sha384))", ErrFormat)
	}
	field := func(i int, name string) ([]byte, error) {
		f, ok := l[i].(spki.List)
		if !ok || !f.Is(name) || len(f) != 2 {
			return nil, fmt.Errorf("%w: denomination element %d is not (%s …)", ErrFormat, i, name)
		}
		a, ok := f[1].(*spki.Atom)
		if !ok {
			return nil, fmt.Errorf("%w: (%s …) is not an atom", ErrFormat, name)
		}
		return a.Value, nil
	}
	var d Denomination
	vals := make([][]byte, 5)
	for i, name := range []string{"face", "currency", "not-before", "not-after", "rsa-pss-sha384"} {
		if vals[i], err = field(i+1, name); err != nil {
			return nil, err
		}
	}
	if d.Face, err = coupons.ParseAmount(string(vals[0])); err != nil {
		return nil, fmt.Errorf("%w: face: %v", ErrFormat, err)
	}
	d.Currency = string(vals[1])
	if d.NotBefore, err = spki.ParseDate(string(vals[2])); err != nil {
		return nil, fmt.Errorf("%w: not-before: %v", ErrFormat, err)
	}
	if d.NotAfter, err = spki.ParseDate(string(vals[3])); err != nil {
		return nil, fmt.Errorf("%w: not-after: %v", ErrFormat, err)
	}
	pk, err := x509.ParsePKIXPublicKey(vals[4])
	if err != nil {
		return nil, fmt.Errorf("%w: key: %v", ErrFormat, err)
	}
	if d.Key, ok = pk.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("%w: the key is not an RSA key", ErrFormat)
	}
	if err := d.check(); err != nil {
		return nil, err
	}
	return &d, nil
}

// message is what a proof signs: the label, the denomination and the
// book.
func message(denom, book [32]byte) []byte {
	m := make([]byte, 0, len(label)+1+64)
	m = append(m, label...)
	m = append(m, 0)
	m = append(m, denom[:]...)
	return append(m, book[:]...)
}

// Request is a reader's blinded request for a proof, kept until the
// broker's answer.
type Request struct {
	client   blindrsa.Client
	state    blindrsa.State
	prepared []byte
	denom    [32]byte
	book     [32]byte
}

// Blind prepares the message for book under d and blinds it: blinded goes
// to the broker, the Request stays with the reader.
func Blind(d *Denomination, book [32]byte, rnd io.Reader) (*Request, []byte, error) {
	c, err := blindrsa.NewClient(Variant, d.Key)
	if err != nil {
		return nil, nil, err
	}
	r := &Request{client: c, denom: d.ID(), book: book}
	if r.prepared, err = c.Prepare(rnd, message(r.denom, book)); err != nil {
		return nil, nil, err
	}
	blinded, st, err := c.Blind(rnd, r.prepared)
	if err != nil {
		return nil, nil, err
	}
	r.state = st
	return r, blinded, nil
}

// labelSeed starts the stream of a seeded blinding.
const labelSeed = "ecoupons blind seed v1"

// BlindSeeded is Blind with its randomness (the message prefix, the PSS
// salt, the blinding factor) drawn from SHAKE256(labelSeed ‖ seed): the
// same seed gives the same request. A wallet stores a fresh random seed
// with the book before it asks the broker, so that after a crash it can
// blind again, retry the issuance (the broker answers a retry with the
// same blind signature) and unblind the answer: a book paid for is never
// lost. The seed is as secret as the blinding: whoever has it links the
// book to the issuance.
func BlindSeeded(d *Denomination, book [32]byte, seed [32]byte) (*Request, []byte, error) {
	x := sha3.NewSHAKE256()
	x.Write([]byte(labelSeed))
	x.Write(seed[:])
	return Blind(d, book, x)
}

// Sign is the broker's side: it signs a blinded message with a
// denomination's private key (and must debit the reader's account by
// the denomination's face value in the same transaction).
func Sign(sk *rsa.PrivateKey, blinded []byte) ([]byte, error) {
	if len(blinded) != sk.Size() {
		return nil, fmt.Errorf("%w: a blinded message of %d bytes for a %d-byte key", ErrFormat, len(blinded), sk.Size())
	}
	return blindrsa.NewSigner(sk).BlindSign(blinded)
}

// Finish unblinds the broker's answer into the book's proof, checking it.
func (r *Request) Finish(blindSig []byte) (*Proof, error) {
	sig, err := r.client.Finalize(r.state, blindSig)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	p := &Proof{Denomination: r.denom, Signature: sig}
	copy(p.Prefix[:], r.prepared[:32])
	return p, nil
}

// Proof is an anonymous book's funding proof: the denomination it was
// signed under, the randomizing prefix and the RSA-PSS signature.
type Proof struct {
	Denomination [32]byte
	Prefix       [32]byte
	Signature    []byte
}

// Sexp is the proof as a book carries it: (ecoupon-blind-funding
// (denomination |id|) (prefix |32 bytes|) (signature |…|)).
func (p *Proof) Sexp() spki.List {
	return spki.L(coupons.BlindFundingHead, spki.L("denomination", p.Denomination[:]), spki.L("prefix", p.Prefix[:]),
		spki.L("signature", p.Signature))
}

// MaxSignature bounds a proof's signature (a 8192-bit key's).
const MaxSignature = 1024

// ParseProof parses a proof (any S-expression form).
func ParseProof(b []byte) (*Proof, error) {
	x, err := spki.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return ProofFromSexp(x)
}

// ProofFromSexp reads a parsed proof (as a lane open carries it).
func ProofFromSexp(x spki.Sexp) (*Proof, error) {
	l, ok := x.(spki.List)
	if !ok || !l.Is(coupons.BlindFundingHead) || len(l) != 4 {
		return nil, fmt.Errorf("%w: not an (ecoupon-blind-funding (denomination) (prefix) (signature))", ErrFormat)
	}
	var p Proof
	for i, name := range []string{"denomination", "prefix", "signature"} {
		f, ok := l[i+1].(spki.List)
		if !ok || !f.Is(name) || len(f) != 2 {
			return nil, fmt.Errorf("%w: element %d is not (%s …)", ErrFormat, i+1, name)
		}
		a, ok := f[1].(*spki.Atom)
		if !ok {
			return nil, fmt.Errorf("%w: (%s …) is not an atom", ErrFormat, name)
		}
		switch name {
		case "denomination", "prefix":
			if len(a.Value) != 32 {
				return nil, fmt.Errorf("%w: %s of %d bytes, not 32", ErrFormat, name, len(a.Value))
			}
			if name == "denomination" {
				copy(p.Denomination[:], a.Value)
			} else {
				copy(p.Prefix[:], a.Value)
			}
		default:
			if len(a.Value) == 0 || len(a.Value) > MaxSignature {
				return nil, fmt.Errorf("%w: a signature of %d bytes", ErrFormat, len(a.Value))
			}
			p.Signature = append([]byte(nil), a.Value...)
		}
	}
	return &p, nil
}

// Verify checks that p funds the book book, of face value face (billionths
// of currency) expiring at bookNotAfter, under d, at now.
func (p *Proof) Verify(d *Denomination, book [32]byte, face int64, currency string, bookNotAfter, now time.Time) error {
	if err := p.checkTerms(d, face, currency, bookNotAfter, now); err != nil {
		return err
	}
	v, err := blindrsa.NewVerifier(Variant, d.Key)
	if err != nil {
		return err
	}
	prepared := append(p.Prefix[:len(p.Prefix):len(p.Prefix)], message(p.Denomination, book)...)
	if err := v.Verify(prepared, p.Signature); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return nil
}

// checkTerms checks what a proof's signature does not: the denomination
// named, the book's face value and currency, and the periods.
func (p *Proof) checkTerms(d *Denomination, face int64, currency string, bookNotAfter, now time.Time) error {
	switch {
	case p.Denomination != d.ID():
		return fmt.Errorf("%w: the proof names another denomination", ErrWrongDenomination)
	case face != d.Face || currency != d.Currency:
		return fmt.Errorf("%w: a book of %s %s under a denomination of %s %s", ErrWrongDenomination,
			coupons.FormatAmount(face), currency, coupons.FormatAmount(d.Face), d.Currency)
	case now.Before(d.NotBefore) || now.After(d.NotAfter):
		return fmt.Errorf("%w: valid %s to %s", ErrKeyExpired, d.NotBefore.Format(time.RFC3339), d.NotAfter.Format(time.RFC3339))
	case bookNotAfter.After(d.NotAfter):
		return fmt.Errorf("%w: the book expires %s, after its denomination's key (%s)", ErrKeyExpired,
			bookNotAfter.Format(time.RFC3339), d.NotAfter.Format(time.RFC3339))
	}
	return nil
}
