package delegation

import (
	"errors"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
)

// The fixture's book: 20 lanes of L = 8 coupons of 0.001 EUR (1_000_000
// nanos).
const unit = 1_000_000

// ownerValue is w_i of lane s, from the owner's seed.
func (f *fixture) ownerValue(s, i uint32) coupons.Value {
	seed, _ := f.owner.Seed(s)
	tag := f.owner.Book.Book.LaneTag(s)
	return coupons.Walk(&tag, f.owner.Book.Book.Length, seed, i)
}

// TestCappedGrantHandsPortions: a cap of 21 coupons over lanes 0–9 fills
// lanes 0 and 1 (8 each) and 5 coupons of lane 2; lanes 3–9 are not
// granted, and the certificate names lanes 0–2 only. The phone holds w_5
// of lane 2, spends exactly 5 coupons there and opens it at the vendor.
func TestCappedGrantHandsPortions(t *testing.T) {
	f := newFixture(t)
	phoneKey := testKey("phone")
	phone, phoneEnc := device(t, "phone", phoneKey)
	g, err := f.owner.Issue(phone, 0, 9, GrantOptions{Cap: 21 * unit})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Lanes) != 3 || g.Lanes[0].End != 8 || g.Lanes[1].End != 8 || g.Lanes[2].End != 5 {
		t.Fatalf("portions: %+v", g.Lanes)
	}
	var capNanos int64
	b := f.owner.Book.Book
	if err := coupons.SpendCovers(b.ID(), b.Vendor, 3, &capNanos)(g.Cert().Cert.Tag); err == nil {
		t.Error("the certificate covers lane 3, which got no coupon")
	}
	h, err := Accept(transport(t, g), phoneKey, phoneEnc, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := h.Seed(2); ok {
		t.Error("a capped delegate holds a seed")
	}
	end, w, ok := h.Portion(2)
	if !ok || end != 5 || w != f.ownerValue(2, 5) {
		t.Fatalf("lane 2: end %d, value ok %v", end, w == f.ownerValue(2, 5))
	}
	c, anchor, err := h.Cursor(2)
	if err != nil || anchor != f.ownerValue(2, 0) {
		t.Fatal(err)
	}
	for i := uint32(1); i <= 5; i++ {
		n, v, _, hasNext, err := c.Next()
		if err != nil || n != i || v != f.ownerValue(2, i) || hasNext != (i < 5) {
			t.Fatalf("coupon %d: %d, %v", i, n, err)
		}
	}
	if _, _, _, _, err := c.Next(); !errors.Is(err, coupons.ErrPortionUsedUp) {
		t.Fatalf("coupon 6: %v", err)
	}
	lane, err := f.vendorOpens(t, h, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lane.Cap != 21*unit {
		t.Errorf("the vendor sees cap %d", lane.Cap)
	}
	if _, err := h.Open(3, "nonce"); !errors.Is(err, coupons.ErrNotAuthorized) {
		t.Errorf("lane 3: %v", err)
	}
	if _, err := f.owner.Issue(phone, 0, 9, GrantOptions{Cap: unit - 1}); !errors.Is(err, ErrCapBelowCoupon) {
		t.Errorf("a cap below one coupon: %v", err)
	}
}

// TestUncappedGrants: without a cap, propagate hands whole portions (end
// L, so the delegate can sub-grant portions), and a plain grant seeds.
func TestUncappedGrants(t *testing.T) {
	f := newFixture(t)
	phoneKey := testKey("phone")
	phone, phoneEnc := device(t, "phone", phoneKey)
	for _, prop := range []bool{true, false} {
		g, err := f.owner.Issue(phone, 4, 5, GrantOptions{Propagate: prop})
		if err != nil {
			t.Fatal(err)
		}
		for _, sl := range g.Lanes {
			if want := map[bool]uint32{true: 8, false: 0}[prop]; sl.End != want {
				t.Fatalf("propagate %v: lane %d end %d", prop, sl.Lane, sl.End)
			}
		}
		h, err := Accept(transport(t, g), phoneKey, phoneEnc, t0)
		if err != nil {
			t.Fatal(err)
		}
		if seed, ok := h.Seed(5); !ok || seed != f.ownerValue(5, 8) {
			t.Errorf("propagate %v: the whole lane's seed", prop)
		}
	}
}

// TestSubGrantCannotExceedParentPortion: a phone holding 5 coupons of lane
// 2 sub-grants it: the tablet gets at most those 5 (the inherited cap, or
// less under its own); a forged sub-grant labelling the phone's w_5 as a
// longer portion does not walk to the anchor, and a larger cap or an
// ungranted lane is wider than the parent.
func TestSubGrantCannotExceedParentPortion(t *testing.T) {
	f := newFixture(t)
	phoneKey, tabletKey := testKey("phone"), testKey("tablet")
	phone, phoneEnc := device(t, "phone", phoneKey)
	tablet, tabletEnc := device(t, "tablet", tabletKey)
	g, err := f.owner.Issue(phone, 0, 9, GrantOptions{Cap: 21 * unit, Propagate: true})
	if err != nil {
		t.Fatal(err)
	}
	ph, err := Accept(g, phoneKey, phoneEnc, t0)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := ph.Issue(tablet, 2, 2, GrantOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Lanes[0].End != 5 {
		t.Fatalf("inherited: end %d", sub.Lanes[0].End)
	}
	th, err := Accept(transport(t, sub), tabletKey, tabletEnc, t0)
	if err != nil {
		t.Fatal(err)
	}
	if end, w, _ := th.Portion(2); end != 5 || w != f.ownerValue(2, 5) {
		t.Fatalf("the tablet holds end %d", end)
	}
	// A smaller cap over lanes 1–2: 10 coupons fill lane 1 (8) and 2 of
	// lane 2.
	sub, err = ph.Issue(tablet, 1, 2, GrantOptions{Cap: 10 * unit})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Lanes[0].End != 8 || sub.Lanes[1].End != 2 {
		t.Fatalf("capped sub-grant: %+v", sub.Lanes)
	}
	if _, err := Accept(transport(t, sub), tabletKey, tabletEnc, t0); err != nil {
		t.Fatal(err)
	}
	// The phone relabels its w_5 as the end of 8 coupons: it seals it
	// properly for end 8, but it does not walk to the anchor in 8 steps.
	forged, err := ph.Issue(tablet, 2, 2, GrantOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := hpkeKey(tablet)
	_, w5, _ := ph.Portion(2)
	forged.Lanes[0].End = 8
	forged.Lanes[0].Sealed = sealPortionForTest(t, pk, f.owner.Book.Book.ID(), 2, 8, w5)
	if _, err := Accept(transport(t, forged), tabletKey, tabletEnc, t0); !errors.Is(err, ErrSeedMismatch) {
		t.Errorf("w_5 labelled as w_8: %v", err)
	}
	if _, err := ph.Issue(tablet, 2, 2, GrantOptions{Cap: 22 * unit}); !errors.Is(err, ErrGrantWider) {
		t.Errorf("a larger cap: %v", err)
	}
	if _, err := ph.Issue(tablet, 3, 3, GrantOptions{}); !errors.Is(err, ErrGrantWider) {
		t.Errorf("a lane the phone was not granted: %v", err)
	}
}

// TestPortionValueForAnotherEndRefused: a sealed portion value relabelled
// with another end, or presented as a seed, does not unseal (the HPKE info
// binds the end and the kind).
func TestPortionValueForAnotherEndRefused(t *testing.T) {
	f := newFixture(t)
	phoneKey := testKey("phone")
	phone, phoneEnc := device(t, "phone", phoneKey)
	g, err := f.owner.Issue(phone, 0, 9, GrantOptions{Cap: 21 * unit})
	if err != nil {
		t.Fatal(err)
	}
	for _, end := range []uint32{4, 6, 8} {
		bad := *g
		bad.Lanes = append([]SealedLane(nil), g.Lanes...)
		bad.Lanes[2].End = end
		if _, err := Accept(transport(t, &bad), phoneKey, phoneEnc, t0); !errors.Is(err, ErrSeal) {
			t.Errorf("w_5 relabelled as end %d: %v", end, err)
		}
	}
	// An uncapped propagate grant's whole portion (w_8, the seed) replayed
	// as a seed in an uncapped grant.
	whole, err := f.owner.Issue(phone, 4, 4, GrantOptions{Propagate: true})
	if err != nil {
		t.Fatal(err)
	}
	seeds, err := f.owner.Issue(phone, 4, 4, GrantOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seeds.Lanes = append([]SealedLane(nil), seeds.Lanes...)
	seeds.Lanes[0].Sealed = whole.Lanes[0].Sealed
	if _, err := Accept(transport(t, seeds), phoneKey, phoneEnc, t0); !errors.Is(err, ErrSeal) {
		t.Errorf("a portion value replayed as a seed: %v", err)
	}
	// And a seed replayed as a whole portion.
	whole.Lanes = append([]SealedLane(nil), whole.Lanes...)
	s2, _ := f.owner.Issue(phone, 4, 4, GrantOptions{})
	whole.Lanes[0].Sealed = s2.Lanes[0].Sealed
	if _, err := Accept(transport(t, whole), phoneKey, phoneEnc, t0); !errors.Is(err, ErrSeal) {
		t.Errorf("a seed replayed as a portion value: %v", err)
	}
}

// TestPortionSealedForAnotherLaneRefused: portion values swapped between
// lanes (same end) do not unseal.
func TestPortionSealedForAnotherLaneRefused(t *testing.T) {
	f := newFixture(t)
	phoneKey := testKey("phone")
	phone, phoneEnc := device(t, "phone", phoneKey)
	g, err := f.owner.Issue(phone, 0, 9, GrantOptions{Cap: 21 * unit})
	if err != nil {
		t.Fatal(err)
	}
	bad := *g
	bad.Lanes = append([]SealedLane(nil), g.Lanes...)
	bad.Lanes[0].Sealed, bad.Lanes[1].Sealed = g.Lanes[1].Sealed, g.Lanes[0].Sealed
	if _, err := Accept(transport(t, &bad), phoneKey, phoneEnc, t0); !errors.Is(err, ErrSeal) {
		t.Errorf("swapped portions: %v", err)
	}
	// The right value of lane 1 sealed properly as lane 0's: it unseals
	// but does not walk to lane 0's anchor.
	pk, _ := hpkeKey(phone)
	bad.Lanes[0].Sealed = sealPortionForTest(t, pk, f.owner.Book.Book.ID(), 0, 8, f.ownerValue(1, 8))
	bad.Lanes[1].Sealed = g.Lanes[1].Sealed
	if _, err := Accept(transport(t, &bad), phoneKey, phoneEnc, t0); !errors.Is(err, ErrSeedMismatch) {
		t.Errorf("lane 1's value as lane 0's: %v", err)
	}
}

// TestCappedGrantCarryingMoreRefused: a capped grant whose portions sum
// past the cap, or that carries a seed, is refused by the delegate: what
// it holds must be within the cap.
func TestCappedGrantCarryingMoreRefused(t *testing.T) {
	f := newFixture(t)
	phoneKey := testKey("phone")
	phone, phoneEnc := device(t, "phone", phoneKey)
	g, err := f.owner.Issue(phone, 0, 9, GrantOptions{Cap: 21 * unit})
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := hpkeKey(phone)
	id := f.owner.Book.Book.ID()
	more := *g
	more.Lanes = append([]SealedLane(nil), g.Lanes...)
	more.Lanes[2].End = 8
	more.Lanes[2].Sealed = sealPortionForTest(t, pk, id, 2, 8, f.ownerValue(2, 8))
	if _, err := Accept(transport(t, &more), phoneKey, phoneEnc, t0); !errors.Is(err, ErrPortionsExceedCap) {
		t.Errorf("24 coupons under a cap of 21: %v", err)
	}
	seeded := *g
	seeded.Lanes = append([]SealedLane(nil), g.Lanes...)
	seeded.Lanes[0].End = 0
	seeded.Lanes[0].Sealed = sealForTest(t, pk, id, 0, f.ownerValue(0, 8))
	if _, err := Accept(transport(t, &seeded), phoneKey, phoneEnc, t0); !errors.Is(err, ErrBadGrant) {
		t.Errorf("a seed under a cap: %v", err)
	}
	// Ends outside 1…L.
	for _, end := range []uint32{0, 9} {
		bad := *g
		bad.Lanes = append([]SealedLane(nil), g.Lanes...)
		bad.Lanes[2].End = end
		if _, err := Accept(&bad, phoneKey, phoneEnc, t0); err == nil {
			t.Errorf("end %d accepted", end)
		}
	}
}
