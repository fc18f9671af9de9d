package delegation

import (
	"crypto"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/spki"
)

// RevocationsVersion is the version of the revocation list format.
const RevocationsVersion = "1"

// maxRevoked bounds the entries of one list.
const maxRevoked = 1 << 20

// Revocations is a broker's signed revocation list:
//
//	(sequence
//	  (ecoupons-revocations (version "1") (broker (hash sha256 |…|))
//	    (number "42") (issued "date") (next-update "date")
//	    (certs |hash| …) (keys |hash| …))
//	  (signature …))
//
// Numbers increase with every list the broker issues. Certificates are
// named by the SHA-256 of their (cert …) body, keys by their key hash.
type Revocations struct {
	Broker     spki.KeyHash
	Number     uint64
	Issued     time.Time
	NextUpdate time.Time
	Certs      [][32]byte
	Keys       []spki.KeyHash
	Signature  *spki.Signature

	certSet map[[32]byte]bool
	keySet  map[spki.KeyHash]bool
}

func (r *Revocations) body() spki.List {
	certs := spki.L("certs")
	for _, h := range r.Certs {
		certs = append(certs, spki.NewBytes(append([]byte(nil), h[:]...)))
	}
	keys := spki.L("keys")
	for _, h := range r.Keys {
		keys = append(keys, spki.NewBytes(append([]byte(nil), h[:]...)))
	}
	return spki.L("ecoupons-revocations", spki.L("version", RevocationsVersion), spki.L("broker", r.Broker.Sexp()),
		spki.L("number", strconv.FormatUint(r.Number, 10)), spki.L("issued", spki.FormatDate(r.Issued)),
		spki.L("next-update", spki.FormatDate(r.NextUpdate)), certs, keys)
}

// SignRevocations builds and signs a list with the broker's key. Entries
// are sorted so that equal lists have equal bytes.
func SignRevocations(broker crypto.Signer, number uint64, issued, nextUpdate time.Time, certs [][32]byte, keys []spki.KeyHash) (*Revocations, error) {
	pub, err := spki.NewPublicKey(broker.Public())
	if err != nil {
		return nil, err
	}
	if !nextUpdate.After(issued) {
		return nil, fmt.Errorf("%w: next-update must be after issued", ErrBadRevocations)
	}
	r := &Revocations{Broker: pub.Hash(), Number: number, Issued: issued.UTC().Truncate(time.Second), NextUpdate: nextUpdate.UTC().Truncate(time.Second),
		Certs: slices.Clone(certs), Keys: slices.Clone(keys)}
	slices.SortFunc(r.Certs, func(a, b [32]byte) int { return slices.Compare(a[:], b[:]) })
	r.Certs = slices.Compact(r.Certs)
	slices.SortFunc(r.Keys, func(a, b spki.KeyHash) int { return slices.Compare(a[:], b[:]) })
	r.Keys = slices.Compact(r.Keys)
	if r.Signature, err = spki.Sign(broker, r.body()); err != nil {
		return nil, err
	}
	r.index()
	return r, nil
}

func (r *Revocations) index() {
	r.certSet = make(map[[32]byte]bool, len(r.Certs))
	for _, h := range r.Certs {
		r.certSet[h] = true
	}
	r.keySet = make(map[spki.KeyHash]bool, len(r.Keys))
	for _, h := range r.Keys {
		r.keySet[h] = true
	}
}

// Sexp returns the signed list.
func (r *Revocations) Sexp() spki.List { return spki.L("sequence", r.body(), r.Signature.Sexp()) }

// CertRevoked reports whether the certificate with this body hash is revoked.
func (r *Revocations) CertRevoked(h [32]byte) bool { return r.certSet[h] }

// KeyRevoked reports whether the key is revoked.
func (r *Revocations) KeyRevoked(h spki.KeyHash) bool { return r.keySet[h] }

// ParseRevocations parses a signed list and verifies it against the broker
// key it must come from.
func ParseRevocations(x spki.Sexp, broker *spki.PublicKey) (*Revocations, error) {
	l, ok := x.(spki.List)
	if !ok || !l.Is("sequence") || len(l) != 3 {
		return nil, fmt.Errorf("%w: expected (sequence (ecoupons-revocations …) (signature …))", ErrBadRevocations)
	}
	b, ok := l[1].(spki.List)
	if !ok || !b.Is("ecoupons-revocations") || len(b) != 8 {
		return nil, fmt.Errorf("%w: expected (ecoupons-revocations …) with 7 fields", ErrBadRevocations)
	}
	r := &Revocations{}
	if v, ok := field(b[1], "version"); !ok || !isAtom(v, RevocationsVersion) {
		return nil, fmt.Errorf("%w: version (this is version %s)", ErrBadRevocations, RevocationsVersion)
	}
	bh, ok := field(b[2], "broker")
	if !ok {
		return nil, fmt.Errorf("%w: (broker (hash …))", ErrBadRevocations)
	}
	h, err := spki.ParseHash(bh)
	if err != nil {
		return nil, fmt.Errorf("%w: broker: %w", ErrBadRevocations, err)
	}
	r.Broker = h
	num, ok := field(b[3], "number")
	ns, ok2 := atomString(num)
	n, err := strconv.ParseUint(ns, 10, 64)
	if !ok || !ok2 || err != nil || strconv.FormatUint(n, 10) != ns {
		return nil, fmt.Errorf("%w: (number \"n\")", ErrBadRevocations)
	}
	r.Number = n
	for i, dst := range []*time.Time{&r.Issued, &r.NextUpdate} {
		name := [...]string{"issued", "next-update"}[i]
		v, ok := field(b[4+i], name)
		s, ok2 := atomString(v)
		if !ok || !ok2 {
			return nil, fmt.Errorf("%w: (%s \"date\")", ErrBadRevocations, name)
		}
		if *dst, err = spki.ParseDate(s); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadRevocations, name, err)
		}
	}
	for i, name := range []string{"certs", "keys"} {
		el, ok := b[6+i].(spki.List)
		if !ok || !el.Is(name) || len(el)-1 > maxRevoked {
			return nil, fmt.Errorf("%w: (%s |hash| …) with at most %d entries", ErrBadRevocations, name, maxRevoked)
		}
		for _, e := range el[1:] {
			s, ok := atomString(e)
			if !ok || len(s) != 32 {
				return nil, fmt.Errorf("%w: %s entries are 32-byte hashes", ErrBadRevocations, name)
			}
			var v [32]byte
			copy(v[:], s)
			if i == 0 {
				r.Certs = append(r.Certs, v)
			} else {
				r.Keys = append(r.Keys, spki.KeyHash(v))
			}
		}
	}
	if r.Signature, err = spki.ParseSignature(l[2]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRevocations, err)
	}
	if broker == nil || r.Broker != broker.Hash() || !r.Signature.Signer.Equal(broker) {
		return nil, fmt.Errorf("%w: not signed by the expected broker", ErrBadRevocations)
	}
	if err := r.Signature.VerifyObject(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRevocations, err)
	}
	r.index()
	return r, nil
}

// Checker holds the current revocation list of one broker for a vendor:
// it accepts only newer lists, says when the list is stale, and answers
// revocation queries (it implements coupons.Revocations). Safe for
// concurrent use.
type Checker struct {
	broker *spki.PublicKey
	mu     sync.RWMutex
	cur    *Revocations
}

// NewChecker returns a checker for lists signed by broker; until the first
// list arrives nothing is revoked.
func NewChecker(broker *spki.PublicKey) *Checker { return &Checker{broker: broker} }

// Update verifies and installs a list. A list with a lower number than the
// current one is refused with ErrRollback; the same number is accepted only
// with the same content.
func (c *Checker) Update(x spki.Sexp) (*Revocations, error) {
	r, err := ParseRevocations(x, c.broker)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil {
		switch {
		case r.Number < c.cur.Number:
			return nil, fmt.Errorf("%w: number %d, current %d", ErrRollback, r.Number, c.cur.Number)
		case r.Number == c.cur.Number && spki.ObjectHash(r.body()) != spki.ObjectHash(c.cur.body()):
			return nil, fmt.Errorf("%w: two different lists numbered %d", ErrBadRevocations, r.Number)
		}
	}
	c.cur = r
	return r, nil
}

// Current returns the installed list (nil before the first).
func (c *Checker) Current() *Revocations {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cur
}

// Fresh reports ErrStaleRevocations when the installed list is past its
// next-update at now (or none was ever installed): the vendor's cue to
// fetch one, and its policy whether to keep opening lanes meanwhile.
func (c *Checker) Fresh(now time.Time) error {
	cur := c.Current()
	if cur == nil {
		return fmt.Errorf("%w: no list yet", ErrStaleRevocations)
	}
	if now.After(cur.NextUpdate) {
		return fmt.Errorf("%w: next update was due %s", ErrStaleRevocations, spki.FormatDate(cur.NextUpdate))
	}
	return nil
}

// CertRevoked implements coupons.Revocations.
func (c *Checker) CertRevoked(h [32]byte) bool {
	cur := c.Current()
	return cur != nil && cur.CertRevoked(h)
}

// KeyRevoked implements coupons.Revocations.
func (c *Checker) KeyRevoked(h spki.KeyHash) bool {
	cur := c.Current()
	return cur != nil && cur.KeyRevoked(h)
}
