package coupons

import (
	"errors"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/spki"
)

// stubBlind is a BlindFunding that takes one proof (by its canonical
// bytes) and refuses every other.
type stubBlind struct {
	want []byte
	hash [32]byte
}

func (s stubBlind) VerifyBlindFunding(p spki.List, _ *Book, _ time.Time) ([32]byte, error) {
	if string(spki.Canonical(p)) != string(s.want) {
		return [32]byte{}, ErrBookNotFunded
	}
	return s.hash, nil
}

func blindProofSexp() spki.List {
	return spki.L(BlindFundingHead, spki.L("denomination", make([]byte, 32)), spki.L("prefix", make([]byte, 32)), spki.L("signature", []byte("sig")))
}

// anonymousOpen is an open of lane 0 of the world's book by its owner
// with a blind funding proof in place of the book certificate and no
// user certificate.
func anonymousOpen(t testing.TB, w *world) *Open {
	o := w.open(t, w.alice, 0)
	o.Funding, o.User, o.Blind = nil, nil, blindProofSexp()
	if err := o.SignOpen(w.alice, "nonce-1"); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestBlindFundingSlot: an anonymous book's open carries its blind proof
// in the funding slot (it round-trips), is checked by the policy's
// BlindFunding (whose hash becomes the lane's revocable principal, the
// lane marked anonymous and naming no account), and is refused without
// one, with a proof it refuses, or beside a user or book certificate.
func TestBlindFundingSlot(t *testing.T) {
	w := newWorld(t)
	o := roundTrip(t, anonymousOpen(t, w))
	if o.Blind == nil || o.Funding != nil || string(spki.Canonical(o.Blind)) != string(spki.Canonical(blindProofSexp())) {
		t.Fatalf("the blind proof did not round-trip: %v", o.Blind)
	}
	pol := *w.policy
	if _, err := VerifyOpen(o, &pol); !errors.Is(err, ErrBookNotFunded) {
		t.Fatalf("a gate with no denominations: %v", err)
	}
	pol.Blind = stubBlind{want: spki.Canonical(blindProofSexp()), hash: [32]byte{0xaa}}
	lane, err := VerifyOpen(o, &pol)
	if err != nil {
		t.Fatal(err)
	}
	if !lane.Anonymous || lane.Account != "" || len(lane.Certs) != 1 || lane.Certs[0] != [32]byte{0xaa} {
		t.Fatalf("the opened lane: %+v", lane)
	}
	other := anonymousOpen(t, w)
	other.Blind = spki.L(BlindFundingHead, spki.L("denomination", make([]byte, 32)))
	if _, err := VerifyOpen(other, &pol); !errors.Is(err, ErrBookNotFunded) {
		t.Fatalf("a proof the policy refuses: %v", err)
	}
	withUser := anonymousOpen(t, w)
	withUser.User = w.user
	if _, err := VerifyOpen(roundTrip(t, withUser), &pol); !errors.Is(err, ErrBadOpen) {
		t.Fatalf("a blind proof beside a user certificate: %v", err)
	}
	both := anonymousOpen(t, w)
	both.Funding = w.funding
	if _, err := VerifyOpen(both, &pol); !errors.Is(err, ErrBadOpen) {
		t.Fatalf("a blind proof beside a book certificate: %v", err)
	}
}
