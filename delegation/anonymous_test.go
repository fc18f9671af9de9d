package delegation

import (
	"errors"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// anonymousOwner is the fixture's owner as the holder of an anonymous
// book: a blind funding proof instead of the book certificate, and no
// user certificate (the gate checks the proof; here it only travels).
func anonymousOwner(f *fixture) *Holder {
	h := *f.owner
	h.Funding, h.User = nil, nil
	h.Blind = spki.L(coupons.BlindFundingHead, spki.L("denomination", make([]byte, 32)), spki.L("prefix", make([]byte, 32)), spki.L("signature", []byte("s")))
	return &h
}

// TestAnonymousBookGrant: the owner of an anonymous book grants lanes
// unchanged; the grant carries the blind proof (and no certificate),
// round-trips, is accepted by the device, whose opens carry the proof;
// a grant with a user certificate beside the proof is refused.
func TestAnonymousBookGrant(t *testing.T) {
	f := newFixture(t)
	owner := anonymousOwner(f)
	phoneKey := testKey("phone")
	phone, phoneEnc := device(t, "phone", phoneKey)
	g, err := owner.Issue(phone, 3, 4, GrantOptions{Cap: 11_000_000})
	if err != nil {
		t.Fatal(err)
	}
	x, err := spki.Parse(spki.Transport(g.Sexp()))
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseGrant(x)
	if err != nil || back.Blind == nil || back.Funding != nil || back.User != nil {
		t.Fatalf("the grant round-trip: %v %+v", err, back)
	}
	h, err := Accept(back, phoneKey, phoneEnc, t0)
	if err != nil {
		t.Fatal(err)
	}
	o, err := h.Open(3, "nonce-1")
	if err != nil || o.Blind == nil || o.Funding != nil || o.User != nil {
		t.Fatalf("the device's open: %v %+v", err, o)
	}
	back.User = f.owner.User
	if _, err := Accept(back, phoneKey, phoneEnc, t0); !errors.Is(err, ErrBadGrant) {
		t.Fatalf("a blind proof beside a user certificate: %v", err)
	}
}
