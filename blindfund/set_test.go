package blindfund

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testutil"
	"github.com/ecoupons/ecoupons/spki"
)

// mapCache is a spki.VerifyCache for tests.
type mapCache map[[32]byte]bool

func (m mapCache) Verified(k [32]byte) bool { return m[k] }
func (m mapCache) Remember(k [32]byte)      { m[k] = true }

// setWorld is a broker key, a denomination it certifies, a gate's set
// trusting the broker, and an anonymous book of the denomination's face
// value funded under it.
type setWorld struct {
	broker ed25519.PrivateKey
	d      *Denomination
	set    *Set
	book   *coupons.Book
	proof  *Proof
}

func newSetWorld(t testing.TB, cache spki.VerifyCache) *setWorld {
	w := &setWorld{broker: testutil.Key("broker")}
	bp, _ := spki.NewPublicKey(w.broker.Public())
	d, sk := denom(t, "set")
	w.d = d
	tag, err := Tag(d)
	if err != nil {
		t.Fatal(err)
	}
	id := d.ID()
	cert, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(bp), Subject: spki.HashPrincipal(spki.KeyHash(id)), Tag: tag,
		Validity: spki.Validity{NotBefore: d.NotBefore, NotAfter: d.NotAfter}}, w.broker)
	if err != nil {
		t.Fatal(err)
	}
	w.set = NewSet([]*spki.PublicKey{bp}, cache)
	if err := w.set.Add(d, cert); err != nil {
		t.Fatal(err)
	}
	owner := testutil.Key("owner")
	op, _ := spki.NewPublicKey(owner.Public())
	// 1.024 EUR: 1 lane of 1024 coupons of 0.001 EUR.
	w.book, _, _, err = coupons.Create(coupons.Params{Vendor: "news.example", Broker: bp.Hash(), Owner: op.Hash(), Lanes: 1, Length: 1024,
		Currency: "EUR", Unit: 1_000_000, NotAfter: t0.AddDate(0, 1, 0)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.proof = fund(t, d, sk, w.book.ID())
	return w
}

// TestSetRefusesMisuse: the gate's set takes a proof of its broker's
// denomination once per book (then from the cache), and refuses a
// denomination it does not hold, one certified by a key it does not
// trust, and an altered book even when a genuine proof of another book
// is cached.
func TestSetRefusesMisuse(t *testing.T) {
	cache := mapCache{}
	w := newSetWorld(t, cache)
	now := t0.Add(time.Hour)
	if _, err := w.set.VerifyBlindFunding(w.proof.Sexp(), w.book, now); err != nil {
		t.Fatal(err)
	}
	if len(cache) != 1 {
		t.Fatalf("%d proofs cached", len(cache))
	}
	if _, err := w.set.VerifyBlindFunding(w.proof.Sexp(), w.book, now); err != nil {
		t.Fatal(err)
	}
	other, _, _, err := coupons.Create(coupons.Params{Vendor: w.book.Vendor, Broker: w.book.Broker, Owner: w.book.Owner, Lanes: 1, Length: 1024,
		Currency: "EUR", Unit: 1_000_000, NotAfter: w.book.NotAfter}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.set.VerifyBlindFunding(w.proof.Sexp(), other, now); !errors.Is(err, ErrBadSignature) || !errors.Is(err, coupons.ErrBookNotFunded) {
		t.Fatalf("an altered book with a cached proof of the genuine one: %v", err)
	}
	missed := 0
	empty := NewSet(nil, nil)
	empty.Miss = func() { missed++ }
	if _, err := empty.VerifyBlindFunding(w.proof.Sexp(), w.book, now); !errors.Is(err, ErrUnknownDenomination) || missed != 1 {
		t.Fatalf("an unknown denomination: %v (fetched %d times)", err, missed)
	}
	stranger := testutil.Key("stranger")
	sp, _ := spki.NewPublicKey(stranger.Public())
	tag, _ := Tag(w.d)
	id := w.d.ID()
	cert, _ := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(sp), Subject: spki.HashPrincipal(spki.KeyHash(id)), Tag: tag,
		Validity: spki.Validity{NotBefore: w.d.NotBefore, NotAfter: w.d.NotAfter}}, stranger)
	if err := w.set.Add(w.d, cert); !errors.Is(err, ErrFormat) {
		t.Fatalf("a denomination certified by an untrusted key: %v", err)
	}
	if _, err := w.set.VerifyBlindFunding(spki.L(coupons.BlindFundingHead), w.book, now); !errors.Is(err, ErrFormat) {
		t.Fatalf("a malformed proof: %v", err)
	}
	if _, _, err := NewDenomination(rand.Reader, 1, "EUR", t0, t0, 2048); err == nil {
		t.Fatal("a denomination with an empty period")
	}
}

// BenchmarkGateColdBlindCertificate is a gate's first check of an
// anonymous book's funding (parse the proof, find the denomination, the
// RSA-PSS verification), as a multiple of one Ed25519 verification
// measured in the same run.
func BenchmarkGateColdBlindCertificate(b *testing.B) {
	w := newSetWorld(b, nil)
	now := t0.Add(time.Hour)
	proof := w.proof.Sexp()
	base := testutil.Ed25519VerifyNs()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.set.VerifyBlindFunding(proof, w.book, now); err != nil {
			b.Fatal(err)
		}
	}
	testutil.ReportEd25519Multiple(b, base)
}

// BenchmarkGateWarmBlindCertificate is the same check of a book whose
// proof the gate verified before (the signature cache).
func BenchmarkGateWarmBlindCertificate(b *testing.B) {
	w := newSetWorld(b, mapCache{})
	now := t0.Add(time.Hour)
	proof := w.proof.Sexp()
	if _, err := w.set.VerifyBlindFunding(proof, w.book, now); err != nil {
		b.Fatal(err)
	}
	base := testutil.Ed25519VerifyNs()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.set.VerifyBlindFunding(proof, w.book, now); err != nil {
			b.Fatal(err)
		}
	}
	testutil.ReportEd25519Multiple(b, base)
}
