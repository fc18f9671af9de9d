package delegation

import (
	"errors"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

func TestRevocationListRoundTripAndChecker(t *testing.T) {
	f := newFixture(t)
	phoneKey, cardKey := testKey("phone"), testKey("card")
	phone, phoneEnc := device(t, "phone", phoneKey)
	card, cardEnc := device(t, "card", cardKey)
	gp, _ := f.owner.Issue(phone, 0, 9, GrantOptions{})
	gc, _ := f.owner.Issue(card, 10, 19, GrantOptions{})
	ph, err := Accept(gp, phoneKey, phoneEnc, t0)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := Accept(gc, cardKey, cardEnc, t0)
	if err != nil {
		t.Fatal(err)
	}
	checker := NewChecker(pub(t, f.broker))
	pol := *f.policy
	pol.Revocations = checker
	if err := checker.Fresh(t0); !errors.Is(err, ErrStaleRevocations) {
		t.Errorf("no list yet: %v", err)
	}
	// Before revocation both devices open lanes.
	if _, err := f.vendorOpens(t, ph, 1, &pol); err != nil {
		t.Fatal(err)
	}
	// The owner revokes the phone's grant; the broker publishes list 1.
	list, err := SignRevocations(f.broker, 1, t0, t0.Add(time.Hour), [][32]byte{gp.Cert().Cert.Hash()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	x, err := spki.Parse(spki.Transport(list.Sexp()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checker.Update(x); err != nil {
		t.Fatal(err)
	}
	if err := checker.Fresh(t0.Add(30 * time.Minute)); err != nil {
		t.Errorf("fresh list reported stale: %v", err)
	}
	if err := checker.Fresh(t0.Add(2 * time.Hour)); !errors.Is(err, ErrStaleRevocations) {
		t.Errorf("stale list: %v", err)
	}
	if _, err := f.vendorOpens(t, ph, 2, &pol); !errors.Is(err, coupons.ErrRevoked) {
		t.Errorf("revoked phone opens a lane: %v", err)
	}
	if _, err := f.vendorOpens(t, ch, 12, &pol); err != nil {
		t.Errorf("card refused after the phone's revocation: %v", err)
	}
	// A lost device key revoked by key hash.
	list2, _ := SignRevocations(f.broker, 2, t0, t0.Add(time.Hour), nil, []spki.KeyHash{card.Fingerprint()})
	x2, _ := spki.Parse(spki.Canonical(list2.Sexp()))
	if _, err := checker.Update(x2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.vendorOpens(t, ch, 12, &pol); !errors.Is(err, coupons.ErrRevoked) {
		t.Errorf("revoked card key opens a lane: %v", err)
	}
	// Older lists are refused, and so is a different list with the same number.
	if _, err := checker.Update(x); !errors.Is(err, ErrRollback) {
		t.Errorf("rollback: %v", err)
	}
	other, _ := SignRevocations(f.broker, 2, t0, t0.Add(time.Hour), nil, nil)
	xo, _ := spki.Parse(spki.Canonical(other.Sexp()))
	if _, err := checker.Update(xo); !errors.Is(err, ErrBadRevocations) {
		t.Errorf("equivocating list: %v", err)
	}
	if _, err := checker.Update(x2); err != nil {
		t.Errorf("the same list again: %v", err)
	}
}

func TestParseRevocationsErrors(t *testing.T) {
	f := newFixture(t)
	brokerPub := pub(t, f.broker)
	list, _ := SignRevocations(f.broker, 7, t0, t0.Add(time.Hour), [][32]byte{{1}}, []spki.KeyHash{{2}})
	good := list.Sexp()
	if _, err := ParseRevocations(good, brokerPub); err != nil {
		t.Fatal(err)
	}
	// Signed by someone else.
	mallory, _ := SignRevocations(testKey("mallory"), 8, t0, t0.Add(time.Hour), nil, nil)
	if _, err := ParseRevocations(mallory.Sexp(), brokerPub); !errors.Is(err, ErrBadRevocations) {
		t.Errorf("foreign list: %v", err)
	}
	// Tampered content (an entry removed) breaks the signature.
	body := append(spki.List(nil), good[1].(spki.List)...)
	body[6] = spki.L("certs")
	if _, err := ParseRevocations(spki.L("sequence", body, good[2]), brokerPub); !errors.Is(err, ErrBadRevocations) || !errors.Is(err, spki.ErrHashMismatch) {
		t.Errorf("tampered list: %v", err)
	}
	mut := func(i int, v spki.Sexp) spki.Sexp {
		b := append(spki.List(nil), good[1].(spki.List)...)
		b[i] = v
		return spki.L("sequence", b, good[2])
	}
	for i, x := range []spki.Sexp{
		spki.L("sequence"),
		mut(1, spki.L("version", "2")),
		mut(3, spki.L("number", "-1")),
		mut(3, spki.L("number", "07")),
		mut(4, spki.L("issued", "yesterday")),
		mut(6, spki.L("certs", "short")),
		mut(7, spki.L("nope")),
	} {
		if _, err := ParseRevocations(x, brokerPub); !errors.Is(err, ErrBadRevocations) {
			t.Errorf("case %d: %v", i, err)
		}
	}
	if _, err := SignRevocations(f.broker, 1, t0, t0, nil, nil); !errors.Is(err, ErrBadRevocations) {
		t.Errorf("next-update not after issued: %v", err)
	}
}
