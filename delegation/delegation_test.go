package delegation

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/softhsm"
	"github.com/ecoupons/ecoupons/spki"
	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
	_ "go.step.sm/crypto/kms/pkcs11"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func testKey(label string) ed25519.PrivateKey { return testutil.Key(label) }

func testEnc(t testing.TB, label string) *ecdh.PrivateKey {
	seed := sha256.Sum256([]byte("ecoupons test encryption key " + label))
	k, err := ecdh.X25519().NewPrivateKey(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(t testing.TB, s crypto.Signer) *spki.PublicKey {
	t.Helper()
	k, err := spki.NewPublicKey(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type fixture struct {
	broker, alice ed25519.PrivateKey
	owner         *Holder
	policy        *coupons.OpenPolicy
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{broker: testKey("broker"), alice: testKey("alice")}
	sec := &coupons.Secrets{Master: sha256.Sum256([]byte("master")), Salt: sha256.Sum256([]byte("salt"))}
	b, anchors, err := coupons.CreateWithSecrets(coupons.Params{Vendor: "news.example", Broker: pub(t, f.broker).Hash(),
		Owner: pub(t, f.alice).Hash(), Lanes: 20, Length: 8, Currency: "EUR", Unit: 1_000_000, NotAfter: t0.Add(30 * 24 * time.Hour)}, sec, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Sign(f.alice)
	if err != nil {
		t.Fatal(err)
	}
	user, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(pub(t, f.broker)), Subject: spki.HashPrincipal(pub(t, f.alice).Hash()),
		Tag: coupons.UserTag("acct-alice", "EUR")}, f.broker)
	if err != nil {
		t.Fatal(err)
	}
	if f.owner, err = NewOwner(sb, user, sec, anchors, f.alice); err != nil {
		t.Fatal(err)
	}
	if f.owner.Funding, err = coupons.SignFunding(sb.Book, f.broker, time.Time{}); err != nil {
		t.Fatal(err)
	}
	f.policy = &coupons.OpenPolicy{Vendor: "news.example", Brokers: []*spki.PublicKey{pub(t, f.broker)}, Now: t0}
	return f
}

func device(t testing.TB, name string, signer crypto.Signer) (*Device, *ecdh.PrivateKey) {
	t.Helper()
	enc := testEnc(t, name)
	d, err := NewDevice(name, signer, enc.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	// The identity travels as text and is verified on arrival.
	x, err := spki.Parse(spki.Advanced(d.Sexp()))
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseDevice(x)
	if err != nil {
		t.Fatal(err)
	}
	return back, enc
}

// transport sends a grant through its transport form.
func transport(t testing.TB, g *Grant) *Grant {
	t.Helper()
	x, err := spki.Parse(spki.Transport(g.Sexp()))
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseGrant(x)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// vendorOpens checks that the vendor accepts holder h on lane s.
func (f *fixture) vendorOpens(t testing.TB, h *Holder, s uint32, pol *coupons.OpenPolicy) (*coupons.OpenedLane, error) {
	t.Helper()
	o, err := h.Open(s, "nonce")
	if err != nil {
		return nil, err
	}
	x, err := spki.Parse(spki.Transport(o.Sexp()))
	if err != nil {
		t.Fatal(err)
	}
	back, err := coupons.ParseOpen(x)
	if err != nil {
		t.Fatal(err)
	}
	if pol == nil {
		pol = f.policy
	}
	return coupons.VerifyOpen(back, pol)
}

func TestGrantAcceptOpenAndSpend(t *testing.T) {
	f := newFixture(t)
	phoneKey := testKey("phone")
	phone, phoneEnc := device(t, "phone", phoneKey)
	g, err := f.owner.Issue(phone, 0, 9, GrantOptions{Propagate: true, NotAfter: t0.Add(7 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	h, err := Accept(transport(t, g), phoneKey, phoneEnc, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Lanes()) != 10 {
		t.Fatalf("phone holds %d lanes", len(h.Lanes()))
	}
	for _, s := range []uint32{0, 9} {
		seed, _ := h.Seed(s)
		if want, _ := f.owner.Seed(s); seed != want {
			t.Fatalf("lane %d: unsealed seed differs", s)
		}
		if _, err := f.vendorOpens(t, h, s, nil); err != nil {
			t.Fatalf("vendor refuses the phone on lane %d: %v", s, err)
		}
	}
	if _, err := h.Open(10, "nonce"); !errors.Is(err, coupons.ErrNotAuthorized) {
		t.Errorf("phone opening a lane it does not hold: %v", err)
	}
}

func TestSubGrantsAndCaps(t *testing.T) {
	f := newFixture(t)
	phoneKey, tabletKey, watchKey := testKey("phone"), testKey("tablet"), testKey("watch")
	phone, phoneEnc := device(t, "phone", phoneKey)
	tablet, tabletEnc := device(t, "tablet", tabletKey)
	watch, _ := device(t, "watch", watchKey)

	// A cap of 50 coupons over lanes of 8: lanes 0–5 whole, 2 coupons of
	// lane 6, lanes 7–9 not granted.
	g, err := f.owner.Issue(phone, 0, 9, GrantOptions{Propagate: true, Cap: 50_000_000})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Lanes) != 7 || g.Lanes[5].End != 8 || g.Lanes[6].End != 2 {
		t.Fatalf("portions of a cap of 50: %d lanes", len(g.Lanes))
	}
	ph, err := Accept(g, phoneKey, phoneEnc, t0)
	if err != nil {
		t.Fatal(err)
	}
	// A sub-range, inheriting the cap: the phone's own portions.
	sub, err := ph.Issue(tablet, 2, 3, GrantOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sub.Lanes) != 2 || sub.Lanes[0].End != 8 || sub.Lanes[1].End != 8 {
		t.Fatalf("sub-grant portions: %+v", sub.Lanes)
	}
	th, err := Accept(transport(t, sub), tabletKey, tabletEnc, t0)
	if err != nil {
		t.Fatal(err)
	}
	lane, err := f.vendorOpens(t, th, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lane.Cap != 50_000_000 || len(lane.Certs) != 4 {
		t.Errorf("tablet lane: cap %d, %d certificates", lane.Cap, len(lane.Certs))
	}
	// Wider than the parent: lanes (7 got no coupon), or cap.
	if _, err := ph.Issue(watch, 7, 7, GrantOptions{}); !errors.Is(err, ErrGrantWider) {
		t.Errorf("sub-grant of a lane the cap did not reach: %v", err)
	}
	if _, err := ph.Issue(watch, 8, 12, GrantOptions{}); !errors.Is(err, ErrGrantWider) {
		t.Errorf("sub-grant beyond the parent's lanes: %v", err)
	}
	if _, err := ph.Issue(watch, 2, 3, GrantOptions{Cap: 60_000_000}); !errors.Is(err, ErrGrantWider) {
		t.Errorf("sub-grant with a larger cap: %v", err)
	}
	// The tablet's grant has no propagate.
	if _, err := th.Issue(watch, 2, 2, GrantOptions{}); !errors.Is(err, ErrNoPropagate) {
		t.Errorf("sub-grant without propagate: %v", err)
	}
	// Lanes outside the book.
	if _, err := f.owner.Issue(watch, 19, 20, GrantOptions{}); !errors.Is(err, ErrGrantWider) {
		t.Errorf("grant beyond the book: %v", err)
	}
}

func TestAcceptRefusals(t *testing.T) {
	f := newFixture(t)
	phoneKey := testKey("phone")
	phone, phoneEnc := device(t, "phone", phoneKey)
	g, err := f.owner.Issue(phone, 4, 6, GrantOptions{NotAfter: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// Someone else's device cannot accept it.
	if _, err := Accept(g, testKey("mallory"), testEnc(t, "mallory"), t0); !errors.Is(err, ErrNotForMe) {
		t.Errorf("wrong device: %v", err)
	}
	// The right signing key with the wrong encryption key cannot unseal.
	if _, err := Accept(g, phoneKey, testEnc(t, "mallory"), t0); !errors.Is(err, ErrSeal) {
		t.Errorf("wrong encryption key: %v", err)
	}
	// Sealed seeds swapped between lanes do not open (the HPKE info binds
	// the lane).
	swapped := *g
	swapped.Lanes = append([]SealedLane(nil), g.Lanes...)
	swapped.Lanes[0].Sealed, swapped.Lanes[1].Sealed = g.Lanes[1].Sealed, g.Lanes[0].Sealed
	if _, err := Accept(&swapped, phoneKey, phoneEnc, t0); !errors.Is(err, ErrSeal) {
		t.Errorf("swapped seeds: %v", err)
	}
	// A tampered ciphertext does not open.
	tampered := *g
	tampered.Lanes = append([]SealedLane(nil), g.Lanes...)
	tampered.Lanes[0].Sealed = append([]byte(nil), g.Lanes[0].Sealed...)
	tampered.Lanes[0].Sealed[40] ^= 1
	if _, err := Accept(&tampered, phoneKey, phoneEnc, t0); !errors.Is(err, ErrSeal) {
		t.Errorf("tampered seed: %v", err)
	}
	// An anchor that is not the book's.
	forged := *g
	forged.Lanes = append([]SealedLane(nil), g.Lanes...)
	forged.Lanes[0].Anchor[0] ^= 1
	if _, err := Accept(&forged, phoneKey, phoneEnc, t0); !errors.Is(err, coupons.ErrBadProof) {
		t.Errorf("forged anchor: %v", err)
	}
	// A lane outside the certificate's range, sealed properly by a holder
	// who lies about the range: the chain does not cover it.
	outside := *g
	outside.Lanes = append(append([]SealedLane(nil), g.Lanes...), func() SealedLane {
		g2, _ := f.owner.Issue(phone, 10, 10, GrantOptions{})
		return g2.Lanes[0]
	}())
	if _, err := Accept(&outside, phoneKey, phoneEnc, t0); !errors.Is(err, coupons.ErrNotAuthorized) {
		t.Errorf("lane outside the grant: %v", err)
	}
	// An expired grant.
	if _, err := Accept(g, phoneKey, phoneEnc, t0.Add(2*time.Hour)); !errors.Is(err, spki.ErrExpired) {
		t.Errorf("expired grant: %v", err)
	}
	// Mismatched seed: the owner seals lane 5's seed as lane 4's... a seed
	// that opens but does not walk to the anchor.
	bad := *g
	bad.Lanes = append([]SealedLane(nil), g.Lanes...)
	pk, _ := hpkeKey(phone)
	wrongSeed, _ := f.owner.Seed(5)
	bad.Lanes[0].Sealed = sealForTest(t, pk, f.owner.Book.Book.ID(), 4, wrongSeed)
	if _, err := Accept(&bad, phoneKey, phoneEnc, t0); !errors.Is(err, ErrSeedMismatch) {
		t.Errorf("wrong seed: %v", err)
	}
}

func TestDeviceIdentity(t *testing.T) {
	d, _ := device(t, "phone", testKey("phone"))
	if d.Fingerprint() != pub(t, testKey("phone")).Hash() || d.Name != "phone" {
		t.Error("device fields")
	}
	// Swapping the encryption key breaks the signature.
	other := *d
	other.Encryption = testEnc(t, "mallory").PublicKey()
	x, _ := spki.Parse(spki.Canonical(spki.L("sequence", other.body(), d.Signature.Sexp())))
	if _, err := ParseDevice(x); !errors.Is(err, ErrBadDevice) {
		t.Errorf("swapped encryption key: %v", err)
	}
	for _, bad := range []string{"(sequence)", "(sequence (ecoupons-device) x)", "(x)"} {
		x, _ := spki.Parse([]byte(bad))
		if _, err := ParseDevice(x); !errors.Is(err, ErrBadDevice) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// TestSmartCardDelegate grants lanes to a key on a SoftHSM2 token (a smart
// card stand-in): the card holder accepts the grant with its file-held
// encryption key and opens lanes by signing on the token.
func TestSmartCardDelegate(t *testing.T) {
	uri := softhsm.Token(t, "delegation")
	km, err := kms.New(context.Background(), apiv1.Options{Type: apiv1.PKCS11, URI: uri})
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	resp, err := km.CreateKey(&apiv1.CreateKeyRequest{Name: "pkcs11:id=7002;object=card", SignatureAlgorithm: apiv1.ECDSAWithSHA256})
	if err != nil {
		t.Fatal(err)
	}
	card, err := km.CreateSigner(&resp.CreateSignerRequest)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	dev, enc := device(t, "card", card)
	if dev.Signing.Algorithm() != spki.AlgECDSAP256 {
		t.Fatalf("card key is %s", dev.Signing.Algorithm())
	}
	g, err := f.owner.Issue(dev, 10, 19, GrantOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := Accept(transport(t, g), card, enc, t0)
	if err != nil {
		t.Fatal(err)
	}
	lane, err := f.vendorOpens(t, h, 15, nil)
	if err != nil {
		t.Fatalf("vendor refuses the card: %v", err)
	}
	if lane.Spender != dev.Fingerprint() {
		t.Error("spender is not the card")
	}
}

// A delegate cannot be handed lanes of a book its broker never funded:
// the owner cannot issue such a grant, and a device refuses one whose
// book certificate is missing or is not the broker's.
func TestGrantOfUnfundedBookRefused(t *testing.T) {
	f := newFixture(t)
	phoneKey := testKey("phone")
	phone, phoneEnc := device(t, "phone", phoneKey)
	unfunded := *f.owner
	unfunded.Funding = nil
	if _, err := unfunded.Issue(phone, 0, 1, GrantOptions{}); !errors.Is(err, coupons.ErrBookNotFunded) {
		t.Errorf("issuing from an unfunded book: %v", err)
	}
	if _, err := unfunded.Open(0, "nonce"); !errors.Is(err, coupons.ErrBookNotFunded) {
		t.Errorf("opening a lane of an unfunded book: %v", err)
	}
	g, err := f.owner.Issue(phone, 0, 1, GrantOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stripped := *g
	stripped.Funding = nil
	if _, err := Accept(transport(t, &stripped), phoneKey, phoneEnc, t0); !errors.Is(err, coupons.ErrBookNotFunded) {
		t.Errorf("grant without a book certificate: %v", err)
	}
	selfMade := *g
	c := *g.Funding.Cert
	c.Issuer = spki.KeyPrincipal(pub(t, f.alice))
	if selfMade.Funding, err = spki.SignCert(&c, f.alice); err != nil {
		t.Fatal(err)
	}
	if _, err := Accept(transport(t, &selfMade), phoneKey, phoneEnc, t0); !errors.Is(err, coupons.ErrBookNotFunded) {
		t.Errorf("grant with the owner's own book certificate: %v", err)
	}
	// Without the (optional) user certificate the grant still works.
	noUser := *g
	noUser.User = nil
	h, err := Accept(transport(t, &noUser), phoneKey, phoneEnc, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.vendorOpens(t, h, 0, nil); err != nil {
		t.Errorf("open by a delegate without a user certificate: %v", err)
	}
}
