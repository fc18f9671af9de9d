package coupons

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"

	"github.com/ecoupons/ecoupons/spki"
)

// A test world: a broker, a book owner (alice), her phone, a smart card
// (ECDSA P-256) and an outsider, all with deterministic keys.
var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func testKey(label string) ed25519.PrivateKey { return testutil.Key(label) }

func testP256(t testing.TB, label string) *ecdsa.PrivateKey { return testutil.KeyP256(t, label) }

func pub(t testing.TB, s crypto.Signer) *spki.PublicKey {
	t.Helper()
	k, err := spki.NewPublicKey(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type world struct {
	broker, alice, phone, mallory ed25519.PrivateKey
	card                          *ecdsa.PrivateKey
	book                          *SignedBook
	secrets                       *Secrets
	anchors                       []Value
	user                          *spki.SignedCert // broker → alice
	funding                       *spki.SignedCert // broker → the book
	policy                        *OpenPolicy
}

func testSecrets(label string) *Secrets {
	return &Secrets{Master: sha256.Sum256([]byte("ecoupons test master " + label)), Salt: sha256.Sum256([]byte("ecoupons test salt " + label))}
}

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{broker: testKey("broker"), alice: testKey("alice"), phone: testKey("phone"), mallory: testKey("mallory"), card: testP256(t, "card")}
	w.secrets = testSecrets("book")
	b, anchors, err := CreateWithSecrets(Params{
		Vendor: "news.example", Broker: pub(t, w.broker).Hash(), Owner: pub(t, w.alice).Hash(),
		Lanes: 4, Length: 16, Currency: "EUR", Unit: 1_000_000, NotAfter: t0.Add(30 * 24 * time.Hour),
	}, w.secrets, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.anchors = anchors
	if w.book, err = b.Sign(w.alice); err != nil {
		t.Fatal(err)
	}
	w.user = w.cert(t, w.broker, pub(t, w.alice), UserTag("acct-alice", "EUR"), false, spki.Validity{NotBefore: t0.Add(-24 * time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour)})
	if w.funding, err = SignFunding(w.book.Book, w.broker, t0.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	w.policy = &OpenPolicy{Vendor: "news.example", Brokers: []*spki.PublicKey{pub(t, w.broker)}, Now: t0,
		CheckNonce: func(n string) error {
			if n != "nonce-1" {
				return errors.New("unknown nonce")
			}
			return nil
		}}
	return w
}

func (w *world) cert(t testing.TB, issuer crypto.Signer, subject *spki.PublicKey, tag *spki.Tag, propagate bool, v spki.Validity) *spki.SignedCert {
	t.Helper()
	sc, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(pub(t, issuer)), Subject: spki.HashPrincipal(subject.Hash()),
		Propagate: propagate, Tag: tag, Validity: v}, issuer)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func (w *world) grant(t testing.TB, issuer crypto.Signer, subject crypto.Signer, lo, hi uint32, capNanos int64, propagate bool) *spki.SignedCert {
	t.Helper()
	tag, err := SpendTag(w.book.Book.ID(), "news.example", lo, hi, capNanos)
	if err != nil {
		t.Fatal(err)
	}
	return w.cert(t, issuer, pub(t, subject), tag, propagate, spki.Validity{NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(7 * 24 * time.Hour)})
}

func (w *world) open(t testing.TB, spender crypto.Signer, lane uint32, delegation ...*spki.SignedCert) *Open {
	t.Helper()
	proof, err := MerkleProof(w.anchors, lane)
	if err != nil {
		t.Fatal(err)
	}
	o := &Open{Book: w.book, Lane: lane, Anchor: w.anchors[lane], Proof: proof, Funding: w.funding, User: w.user, Delegation: delegation}
	if err := o.SignOpen(spender, "nonce-1"); err != nil {
		t.Fatal(err)
	}
	return o
}

// roundTrip sends o through its transport encoding, as a gate receives it.
func roundTrip(t testing.TB, o *Open) *Open {
	t.Helper()
	x, err := spki.Parse(spki.Transport(o.Sexp()))
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseOpen(x)
	if err != nil {
		t.Fatal(err)
	}
	return back
}
