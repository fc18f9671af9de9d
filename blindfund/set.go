package blindfund

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// ErrUnknownDenomination is a proof naming a denomination the verifier
// does not know (its broker has not published it, or not to this gate).
var ErrUnknownDenomination = errors.New("blindfund: unknown denomination")

// labelCache prefixes the cache key of a verified proof.
const labelCache = "ecoupons blind cache v1"

// Tag is the tag of a broker's certificate on a denomination, whose
// subject is the denomination's ID as a hash:
// (ecoupon-denomination (face "1.024") (currency EUR)).
func Tag(d *Denomination) (*spki.Tag, error) {
	return spki.ParseTag(spki.L("ecoupon-denomination", spki.L("face", coupons.FormatAmount(d.Face)), spki.L("currency", d.Currency)))
}

// CheckCert checks a broker's certificate on d: issued by broker, for
// d's ID, with d's tag, valid over d's whole period, and signed.
func CheckCert(d *Denomination, cert *spki.SignedCert, broker *spki.PublicKey) error {
	c := cert.Cert
	tag, err := Tag(d)
	if err != nil {
		return err
	}
	switch {
	case c.Issuer.Hash != broker.Hash():
		return fmt.Errorf("%w: the denomination is certified by another key than the broker's", ErrFormat)
	case c.Subject.Hash != spki.KeyHash(d.ID()):
		return fmt.Errorf("%w: the certificate is for another denomination", ErrFormat)
	case !c.Tag.Equal(tag):
		return fmt.Errorf("%w: the certificate vouches for %s, the denomination is %s", ErrFormat, c.Tag, tag)
	case c.Propagate || c.Validity.NotBefore.After(d.NotBefore) || c.Validity.NotAfter.Before(d.NotAfter):
		return fmt.Errorf("%w: the certificate does not cover the denomination's period", ErrFormat)
	}
	return cert.Verify()
}

// VerifyCached is Verify with a cache of verified proofs (may be nil):
// the checks of denomination, face, currency and period run every time,
// the RSA verification once per proof and book.
func (p *Proof) VerifyCached(d *Denomination, book [32]byte, face int64, currency string, bookNotAfter, now time.Time, cache spki.VerifyCache) error {
	if cache == nil {
		return p.Verify(d, book, face, currency, bookNotAfter, now)
	}
	key := p.cacheKey(book)
	if cache.Verified(key) {
		return p.checkTerms(d, face, currency, bookNotAfter, now)
	}
	if err := p.Verify(d, book, face, currency, bookNotAfter, now); err != nil {
		return err
	}
	cache.Remember(key)
	return nil
}

func (p *Proof) cacheKey(book [32]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(labelCache))
	h.Write(book[:])
	h.Write(spki.Canonical(p.Sexp()))
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// Hash is the SHA-256 of the proof's canonical form: the principal a
// revocation list names to stop an anonymous book.
func (p *Proof) Hash() [32]byte { return sha256.Sum256(spki.Canonical(p.Sexp())) }

// Set is the denominations a verifier (a gate) knows, each certified by
// one of the brokers it trusts. It implements coupons.BlindFunding. Safe
// for concurrent use.
type Set struct {
	brokers map[spki.KeyHash]*spki.PublicKey
	cache   spki.VerifyCache
	// Miss, when set, is called when a proof names a denomination the set
	// does not hold, before it is refused: it may fetch the brokers'
	// published denominations into the set.
	Miss func()

	mu   sync.RWMutex
	byID map[[32]byte]member
}

type member struct {
	d      *Denomination
	broker spki.KeyHash
}

// NewSet makes an empty set trusting brokers' certificates; cache (may
// be nil) remembers verified proofs.
func NewSet(brokers []*spki.PublicKey, cache spki.VerifyCache) *Set {
	s := &Set{brokers: map[spki.KeyHash]*spki.PublicKey{}, cache: cache, byID: map[[32]byte]member{}}
	for _, b := range brokers {
		s.brokers[b.Hash()] = b
	}
	return s
}

// Add adds d, certified by cert, whose issuer must be a trusted broker.
func (s *Set) Add(d *Denomination, cert *spki.SignedCert) error {
	b := s.brokers[cert.Cert.Issuer.Hash]
	if b == nil {
		return fmt.Errorf("%w: the denomination is certified by an untrusted key", ErrFormat)
	}
	if err := CheckCert(d, cert, b); err != nil {
		return err
	}
	s.mu.Lock()
	s.byID[d.ID()] = member{d, b.Hash()}
	s.mu.Unlock()
	return nil
}

// Len is the number of denominations held.
func (s *Set) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byID)
}

// Published is one entry of a broker's GET /v1/denominations answer.
type Published struct {
	ID           string `json:"id"`
	Face         string `json:"face"`
	Currency     string `json:"currency"`
	Denomination string `json:"denomination"` // transport form
	Certificate  string `json:"certificate"`  // the broker's, transport form
}

// AddPublished adds the denominations of a broker's GET /v1/denominations
// answer ({"denominations": [Published…]}); it returns how many it added
// and the first error (the others are still added).
func (s *Set) AddPublished(raw []byte) (int, error) {
	var doc struct {
		Denominations []Published `json:"denominations"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return 0, fmt.Errorf("%w: denominations: %v", ErrFormat, err)
	}
	n := 0
	var first error
	for _, p := range doc.Denominations {
		err := s.addOne(p)
		if err == nil {
			n++
		} else if first == nil {
			first = err
		}
	}
	return n, first
}

func (s *Set) addOne(p Published) error {
	d, err := ParseDenomination([]byte(p.Denomination))
	if err != nil {
		return err
	}
	x, err := spki.Parse([]byte(p.Certificate))
	if err != nil {
		return fmt.Errorf("%w: certificate: %v", ErrFormat, err)
	}
	cert, err := spki.ParseSignedCert(x)
	if err != nil {
		return fmt.Errorf("%w: certificate: %v", ErrFormat, err)
	}
	return s.Add(d, cert)
}

func (s *Set) lookup(id [32]byte) (member, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.byID[id]
	return m, ok
}

// VerifyBlindFunding checks an anonymous book's proof (coupons.BlindFunding):
// a denomination of the book's broker, valid now, of the book's face
// value and currency, and a signature over this book. Errors wrap
// coupons.ErrBookNotFunded and one of ErrUnknownDenomination,
// ErrWrongDenomination, ErrKeyExpired, ErrBadSignature or ErrFormat.
func (s *Set) VerifyBlindFunding(proof spki.List, b *coupons.Book, now time.Time) ([32]byte, error) {
	p, err := ProofFromSexp(proof)
	if err != nil {
		return [32]byte{}, fmt.Errorf("%w: %w", coupons.ErrBookNotFunded, err)
	}
	m, ok := s.lookup(p.Denomination)
	if !ok && s.Miss != nil {
		s.Miss()
		m, ok = s.lookup(p.Denomination)
	}
	if !ok {
		return [32]byte{}, fmt.Errorf("%w: %w %x…", coupons.ErrBookNotFunded, ErrUnknownDenomination, p.Denomination[:6])
	}
	if m.broker != b.Broker {
		return [32]byte{}, fmt.Errorf("%w: %w: the denomination is another broker's", coupons.ErrBookNotFunded, ErrWrongDenomination)
	}
	face, err := b.FaceValue()
	if err != nil {
		return [32]byte{}, fmt.Errorf("%w: %w", coupons.ErrBookNotFunded, err)
	}
	if err := p.VerifyCached(m.d, b.ID(), face, b.Currency, b.NotAfter, now, s.cache); err != nil {
		return [32]byte{}, fmt.Errorf("%w: %w", coupons.ErrBookNotFunded, err)
	}
	return p.Hash(), nil
}
