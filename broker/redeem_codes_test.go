package broker

import "testing"

// TestRedeemRefusalCodes: every refused redemption item carries a reason
// code, and RedeemPermanent says which refusals no resubmission can cure
// (the gate stops sending those lanes) and which may pass later.
func TestRedeemRefusalCodes(t *testing.T) {
	f := newFixture(t)
	f.b.MaxRedeemSteps = 8
	bk := f.newBook(t, 4, 16, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	unknown := f.newBook(t, 4, 16, milli) // never registered
	vk := pub(t, f.vendor).Hash()
	if res, err := f.b.Redeem(ctx, vk, []Redemption{bk.coupon(1, 2, true)}); err != nil || res[0].Err != nil || res[0].Code != "" {
		t.Fatalf("a payable item: %+v %v", res, err)
	}
	badCoupon := bk.coupon(1, 4, false)
	badCoupon.Value[0] ^= 1
	outOfRange := bk.coupon(0, 1, true)
	outOfRange.Lane.Lane = 4
	badIndex := bk.coupon(0, 1, true)
	badIndex.Index = 17
	forged := bk.coupon(2, 1, true)
	forged.Proof[0][0] ^= 1
	items := []Redemption{unknown.coupon(0, 1, true), outOfRange, badIndex, badCoupon, forged, bk.coupon(3, 1, false), bk.coupon(0, 9, true)}
	want := []string{RedeemUnknownBook, RedeemLaneOutOfRange, RedeemBadIndex, RedeemBadCoupon, RedeemBadProof, RedeemBadProof, RedeemMoreOften}
	res, err := f.b.Redeem(ctx, vk, items)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err == nil || r.Code != want[i] {
			t.Errorf("item %d: code %q (%v), want %q", i, r.Code, r.Err, want[i])
		}
		if RedeemPermanent(r.Code) != (want[i] != RedeemMoreOften) {
			t.Errorf("item %d: %q permanent %v", i, r.Code, RedeemPermanent(r.Code))
		}
	}
	if _, err := f.b.RegisterVendor(ctx, "other.example", pub(t, testKey("other")), "EUR"); err != nil {
		t.Fatal(err)
	}
	res, _ = f.b.Redeem(ctx, pub(t, testKey("other")).Hash(), []Redemption{bk.coupon(2, 1, true)})
	if res[0].Code != RedeemNotYourBook || !RedeemPermanent(res[0].Code) {
		t.Errorf("another vendor's book: %q", res[0].Code)
	}
	if RedeemPermanent("") || RedeemPermanent(RedeemRefused) || !RedeemPermanent(RedeemBookClosed) {
		t.Error("an unknown code, or none, must not be final; book_closed must")
	}
}
