package coupons

import (
	"errors"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/spki"
)

type revoked struct {
	certs map[[32]byte]bool
	keys  map[spki.KeyHash]bool
}

func (r revoked) CertRevoked(h [32]byte) bool    { return r.certs[h] }
func (r revoked) KeyRevoked(h spki.KeyHash) bool { return r.keys[h] }

func TestOpenByOwner(t *testing.T) {
	w := newWorld(t)
	o := roundTrip(t, w.open(t, w.alice, 2))
	lane, err := VerifyOpen(o, w.policy)
	if err != nil {
		t.Fatal(err)
	}
	if lane.Anchor != w.anchors[2] || lane.Account != "acct-alice" || lane.Spender != pub(t, w.alice).Hash() || lane.Cap != 0 || len(lane.Certs) != 2 {
		t.Errorf("opened lane: %+v", lane)
	}
	if lane.ID.Lane != 2 || lane.ID.Book != w.book.Book.ID() || lane.Tag != w.book.Book.LaneTag(2) {
		t.Error("lane identity")
	}
}

func TestOpenWithTwoLevelDelegation(t *testing.T) {
	w := newWorld(t)
	toPhone := w.grant(t, w.alice, w.phone, 0, 1, 5_000_000, true)
	toCard := w.grant(t, w.phone, w.card, 1, 1, 3_000_000, false)
	o := roundTrip(t, w.open(t, w.card, 1, toPhone, toCard))
	lane, err := VerifyOpen(o, w.policy)
	if err != nil {
		t.Fatal(err)
	}
	if lane.Cap != 3_000_000 || len(lane.Certs) != 4 || lane.Grant != toPhone.Cert.Hash() || !lane.NotAfter.Equal(t0.Add(7*24*time.Hour)) {
		t.Errorf("opened lane: cap %d, %d certs, not-after %v", lane.Cap, len(lane.Certs), lane.NotAfter)
	}
	// The phone itself may open lane 0 and 1 but not 2.
	if _, err := VerifyOpen(w.open(t, w.phone, 0, toPhone), w.policy); err != nil {
		t.Errorf("phone lane 0: %v", err)
	}
	if _, err := VerifyOpen(w.open(t, w.phone, 2, toPhone), w.policy); !errors.Is(err, ErrNotAuthorized) || !errors.Is(err, spki.ErrTagNotCovered) {
		t.Errorf("phone lane 2: %v", err)
	}
}

func TestOpenRefusals(t *testing.T) {
	w := newWorld(t)
	toPhone := w.grant(t, w.alice, w.phone, 0, 1, 0, true)
	expect := func(name string, o *Open, pol *OpenPolicy, want ...error) {
		t.Helper()
		if pol == nil {
			pol = w.policy
		}
		_, err := VerifyOpen(o, pol)
		for _, e := range want {
			if !errors.Is(err, e) {
				t.Errorf("%s: %v, want %v", name, err, e)
			}
		}
	}
	other := *w.policy
	other.Vendor = "other.example"
	expect("another vendor", w.open(t, w.alice, 0), &other, ErrWrongVendor)

	late := *w.policy
	late.Now = t0.Add(31 * 24 * time.Hour)
	expect("expired book", w.open(t, w.alice, 0), &late, ErrBookExpired)

	noBroker := *w.policy
	noBroker.Brokers = []*spki.PublicKey{pub(t, w.mallory)}
	expect("untrusted broker", w.open(t, w.alice, 0), &noBroker, ErrUntrustedBroker)

	o := w.open(t, w.alice, 0)
	o.Nonce = "nonce-2"
	expect("stale nonce", o, nil, ErrBadNonce)

	o = w.open(t, w.alice, 0)
	o.Lane = 5
	expect("lane beyond the book", o, nil, ErrLaneOutOfRange)

	o = w.open(t, w.alice, 0)
	o.Proof[0][3] ^= 1
	expect("forged Merkle path", o, nil, ErrBadProof)

	o = w.open(t, w.alice, 0)
	o.Anchor = w.anchors[1]
	expect("anchor of another lane", o, nil, ErrBadProof)

	o = w.open(t, w.alice, 0)
	o.User = w.cert(t, w.mallory, pub(t, w.alice), UserTag("acct-alice", "EUR"), false, spki.Validity{})
	expect("user certificate from someone else", o, nil, ErrOwnerNotCertified)

	o = w.open(t, w.alice, 0)
	o.User = w.cert(t, w.broker, pub(t, w.mallory), UserTag("acct-alice", "EUR"), false, spki.Validity{})
	expect("broker certified another user", o, nil, ErrOwnerNotCertified)

	o = w.open(t, w.alice, 0)
	o.User = w.cert(t, w.broker, pub(t, w.alice), UserTag("acct-alice", "USD"), false, spki.Validity{})
	expect("certified in another currency", o, nil, ErrOwnerNotCertified)

	o = w.open(t, w.alice, 0)
	o.User = w.cert(t, w.broker, pub(t, w.alice), UserTag("acct-alice", "EUR"), false, spki.Validity{NotAfter: t0.Add(-time.Second)})
	expect("expired user certificate", o, nil, ErrOwnerNotCertified, spki.ErrExpired)

	o = w.open(t, w.alice, 0)
	forged := *o.Book
	sig := *forged.Signature
	sig.Value = append([]byte(nil), sig.Value...)
	sig.Value[5] ^= 1
	forged.Signature = &sig
	o.Book = &forged
	expect("forged book signature", o, nil, ErrBadBook, spki.ErrBadSignature)

	expect("delegate outside its range", w.open(t, w.phone, 3, toPhone), nil, ErrNotAuthorized, spki.ErrTagNotCovered)
	expect("outsider without delegation", w.open(t, w.mallory, 0), nil, ErrNotAuthorized)
	expect("outsider with someone else's grant", w.open(t, w.mallory, 0, toPhone), nil, ErrNotAuthorized, spki.ErrNoPath)

	expired := w.cert(t, w.alice, pub(t, w.phone), toPhone.Cert.Tag, true, spki.Validity{NotAfter: t0.Add(-time.Minute)})
	expect("expired grant", w.open(t, w.phone, 0, expired), nil, ErrNotAuthorized, spki.ErrExpired)

	noProp := w.grant(t, w.alice, w.phone, 0, 1, 0, false)
	sub := w.grant(t, w.phone, w.card, 1, 1, 0, false)
	expect("sub-grant without propagate", w.open(t, w.card, 1, noProp, sub), nil, ErrNotAuthorized, spki.ErrNotPropagated)

	wide := w.grant(t, w.phone, w.card, 0, 3, 0, false)
	expect("sub-grant wider than its parent", w.open(t, w.card, 1, toPhone, wide), nil, ErrGrantWider)

	capped := w.grant(t, w.alice, w.phone, 0, 1, 2_000_000, true)
	uncapped := w.grant(t, w.phone, w.card, 1, 1, 0, false)
	expect("sub-grant dropping the cap", w.open(t, w.card, 1, capped, uncapped), nil, ErrGrantWider)

	otherBook := w.cert(t, w.alice, pub(t, w.phone), mustSpendTag(t, [32]byte{1}, "news.example", 0, 3), true, spki.Validity{})
	expect("grant for another book", w.open(t, w.phone, 0, otherBook), nil, ErrNotAuthorized)

	otherVendor := w.cert(t, w.alice, pub(t, w.phone), mustSpendTag(t, w.book.Book.ID(), "other.example", 0, 3), true, spki.Validity{})
	expect("grant for another vendor", w.open(t, w.phone, 0, otherVendor), nil, ErrNotAuthorized)

	o = w.open(t, w.phone, 0, toPhone)
	o.Signature, _ = spki.Sign(w.mallory, OpenChallenge("news.example", w.book.Book.ID(), 0, "nonce-1", 0))
	expect("signature by another key than the spender's", o, nil, ErrBadOpenSignature)

	o = w.open(t, w.phone, 0, toPhone)
	o.Lane = 1
	o.Anchor = w.anchors[1]
	o.Proof, _ = MerkleProof(w.anchors, 1)
	expect("challenge signature for another lane", o, nil, ErrBadOpenSignature)

	rv := *w.policy
	rv.Revocations = revoked{certs: map[[32]byte]bool{toPhone.Cert.Hash(): true}}
	expect("revoked grant", w.open(t, w.phone, 0, toPhone), &rv, ErrRevoked)
	rv.Revocations = revoked{keys: map[spki.KeyHash]bool{pub(t, w.phone).Hash(): true}}
	expect("revoked device key", w.open(t, w.phone, 0, toPhone), &rv, ErrRevoked)
	rv.Revocations = revoked{keys: map[spki.KeyHash]bool{pub(t, w.phone).Hash(): true}}
	expect("revoked intermediate key", w.open(t, w.card, 1, toPhone, w.grant(t, w.phone, w.card, 1, 1, 0, false)), &rv, ErrRevoked)
	rv.Revocations = revoked{certs: map[[32]byte]bool{w.user.Cert.Hash(): true}}
	expect("revoked user certificate", w.open(t, w.alice, 0), &rv, ErrRevoked)
}

func mustSpendTag(t testing.TB, book [32]byte, vendor string, lo, hi uint32) *spki.Tag {
	tag, err := SpendTag(book, vendor, lo, hi, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

func TestParseOpenErrors(t *testing.T) {
	w := newWorld(t)
	good := w.open(t, w.phone, 0, w.grant(t, w.alice, w.phone, 0, 1, 0, true)).Sexp()
	cut := func(i int) spki.List { return append(append(spki.List(nil), good[:i]...), good[i+1:]...) }
	bad := []spki.Sexp{
		spki.L("ecoupons-open"),
		spki.L("x"),
		cut(1), cut(2), cut(3), cut(4), cut(5), cut(9), cut(10), cut(11),
		append(append(spki.List(nil), good...), spki.L("extra")),
	}
	for i, x := range bad {
		if _, err := ParseOpen(x); !errors.Is(err, ErrBadOpen) && !errors.Is(err, ErrBadBook) {
			t.Errorf("case %d: %v", i, err)
		}
	}
}

func TestOpenWithSignatureCache(t *testing.T) {
	w := newWorld(t)
	cache := &mapCache{}
	w.policy.Cache = cache
	toPhone := w.grant(t, w.alice, w.phone, 0, 1, 0, true)
	if _, err := VerifyOpen(w.open(t, w.phone, 0, toPhone), w.policy); err != nil {
		t.Fatal(err)
	}
	if len(cache.m) != 4 { // book, book certificate, user certificate, grant
		t.Fatalf("cache holds %d signatures, want 4", len(cache.m))
	}
	if _, err := VerifyOpen(w.open(t, w.phone, 1, toPhone), w.policy); err != nil {
		t.Fatal(err)
	}
	// A forged grant signature is not covered by the cached verification of
	// the genuine one.
	forged := *toPhone
	sig := *toPhone.Signature
	sig.Value = append([]byte(nil), sig.Value...)
	sig.Value[9] ^= 1
	forged.Signature = &sig
	if _, err := VerifyOpen(w.open(t, w.phone, 0, &forged), w.policy); !errors.Is(err, spki.ErrBadSignature) {
		t.Fatalf("forged grant with a warm cache: %v", err)
	}
	// Nor is the spender's challenge signature ever cached: a stale one fails.
	o := w.open(t, w.phone, 0, toPhone)
	o.Nonce = "nonce-1"
	o.Signature.Value[0] ^= 1
	if _, err := VerifyOpen(o, w.policy); !errors.Is(err, ErrBadOpenSignature) {
		t.Fatalf("bad challenge signature with a warm cache: %v", err)
	}
}

// An open whose user certificate is left out is still accepted: funding is
// the book certificate's job; the user certificate only names an account.
func TestOpenWithoutUserCertificate(t *testing.T) {
	w := newWorld(t)
	o := w.open(t, w.alice, 0)
	o.User = nil
	if err := o.SignOpen(w.alice, "nonce-1"); err != nil {
		t.Fatal(err)
	}
	lane, err := VerifyOpen(roundTrip(t, o), w.policy)
	if err != nil {
		t.Fatal(err)
	}
	if lane.Account != "" || len(lane.Certs) != 1 || lane.Certs[0] != w.funding.Cert.Hash() {
		t.Errorf("opened lane: account %q, certs %d", lane.Account, len(lane.Certs))
	}
}

// The attacks of an unfunded spender: a book the broker never certified
// (no certificate, or one the spender made itself), and certificates of
// the broker for something else than this book as it is.
func TestUnfundedBookRefusedAtOpen(t *testing.T) {
	w := newWorld(t)
	b := w.book.Book
	expect := func(name string, fc *spki.SignedCert, pol *OpenPolicy) {
		t.Helper()
		if pol == nil {
			pol = w.policy
		}
		o := w.open(t, w.alice, 0)
		o.Funding = fc
		if _, err := VerifyOpen(roundTrip(t, o), pol); !errors.Is(err, ErrBookNotFunded) {
			t.Errorf("%s: %v, want %v", name, err, ErrBookNotFunded)
		}
	}
	expect("no book certificate", nil, nil)

	// Self-made: the owner certifies its own book, naming itself or
	// pretending to be the broker.
	self, err := FundingCert(b, pub(t, w.broker), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	self.Issuer = spki.KeyPrincipal(pub(t, w.alice))
	sc, err := spki.SignCert(self, w.alice)
	if err != nil {
		t.Fatal(err)
	}
	expect("certified by the owner", sc, nil)
	forged := *w.funding
	sig := *w.funding.Signature
	sig.Value = append([]byte(nil), sig.Value...)
	sig.Value[5] ^= 1
	forged.Signature = &sig
	expect("broker's certificate with a forged signature", &forged, nil)
	byMallory, err := spki.Sign(w.mallory, w.funding.Cert.Sexp())
	if err != nil {
		t.Fatal(err)
	}
	expect("broker's certificate signed by another key", &spki.SignedCert{Cert: w.funding.Cert, Signature: byMallory}, nil)

	// Genuine broker signatures over the wrong statement.
	sign := func(mod func(c *spki.Cert)) *spki.SignedCert {
		c, err := FundingCert(b, pub(t, w.broker), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		mod(c)
		sc, err := spki.SignCert(c, w.broker)
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}
	other, _, err := CreateWithSecrets(Params{Vendor: "news.example", Broker: b.Broker, Owner: b.Owner, Lanes: 1, Length: 2,
		Currency: "EUR", Unit: 1_000_000, NotAfter: b.NotAfter}, testSecrets("small"), nil)
	if err != nil {
		t.Fatal(err)
	}
	expect("certificate of another (smaller) book", sign(func(c *spki.Cert) { c.Subject = spki.HashPrincipal(spki.KeyHash(other.ID())) }), nil)
	expect("smaller face value", sign(func(c *spki.Cert) {
		c.Tag, _ = spki.ParseTag(fundingTagSexp(b.Vendor, 1_000_000, b.Unit, b.Currency))
	}), nil)
	expect("another vendor", sign(func(c *spki.Cert) {
		c.Tag, _ = spki.ParseTag(fundingTagSexp("other.example", 64_000_000, b.Unit, b.Currency))
	}), nil)
	expect("another currency", sign(func(c *spki.Cert) {
		c.Tag, _ = spki.ParseTag(fundingTagSexp(b.Vendor, 64_000_000, b.Unit, "USD"))
	}), nil)
	expect("a wildcard tag", sign(func(c *spki.Cert) { c.Tag = spki.AllTag() }), nil)
	expect("valid beyond the book", sign(func(c *spki.Cert) { c.Validity.NotAfter = b.NotAfter.Add(time.Hour) }), nil)
	expect("no expiry", sign(func(c *spki.Cert) { c.Validity.NotAfter = time.Time{} }), nil)
	expect("not valid yet", sign(func(c *spki.Cert) { c.Validity.NotBefore = t0.Add(time.Hour) }), nil)
	expect("delegable", sign(func(c *spki.Cert) { c.Propagate = true }), nil)
	late := *w.policy
	late.Now = t0.Add(10 * 24 * time.Hour)
	expect("expired certificate", sign(func(c *spki.Cert) { c.Validity.NotAfter = t0.Add(24 * time.Hour) }), &late)
}
