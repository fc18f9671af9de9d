package broker

import (
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
)

// TestBatchStuffingPaysOnlyWhatIsOwed: a vendor stuffs one batch (larger
// than the broker's statement chunks) with lanes of many books, the same
// lanes again (the same coupon, a lower one, a higher one), coupons past
// their book's face value, a lane past its book's lanes, a forged coupon
// and a lane of a book the broker never registered. The broker pays
// exactly what each valid lane is owed (its highest coupon over what it
// redeemed before, once), from that lane's own book, and nothing else;
// the batch sent again pays nothing; lanes redeemed to their end empty
// their escrow exactly and a coupon beyond is refused.
func TestBatchStuffingPaysOnlyWhatIsOwed(t *testing.T) {
	onBoth(t, testBatchStuffingPaysOnlyWhatIsOwed)
}

func testBatchStuffingPaysOnlyWhatIsOwed(t *testing.T) {
	f := newFixture(t)
	f.b.FeeBasisPoints = 250
	const (
		nBooks = 5
		lanes  = 300
		length = 8
		unit   = milli / 10
	)
	vk := pub(t, f.vendor).Hash()
	vacct := "vendor:news.example:EUR"
	books := make([]*book, nBooks)
	for i := range books {
		books[i] = f.newBook(t, lanes, length, unit)
		if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), books[i].sb); err != nil {
			t.Fatal(err)
		}
	}
	unknown := f.newBook(t, lanes, length, unit) // never registered
	proofs := make([][][][32]byte, nBooks)
	for i, bk := range books {
		proofs[i] = coupons.MerkleProofs(bk.anchors)
	}
	coupon := func(b int, s, i uint32, first bool) Redemption {
		r := books[b].coupon(s, i, false)
		if first {
			a := books[b].anchors[s]
			r.Anchor, r.Proof = &a, proofs[b][s]
		}
		return r
	}
	// Lanes 0…9 of book 0 were redeemed up to coupon 3 before.
	var pre []Redemption
	for s := uint32(0); s < 10; s++ {
		pre = append(pre, coupon(0, s, 3, true))
	}
	if res, err := f.b.Redeem(ctx, vk, pre); err != nil || res[0].Coupons != 3 {
		t.Fatal(err, res)
	}

	// The model: a lane's highest redeemed coupon; what each item pays.
	type key struct {
		b int
		s uint32
	}
	high := map[key]uint32{}
	for s := uint32(0); s < 10; s++ {
		high[key{0, s}] = 3
	}
	var batch []Redemption
	var wantCoupons []uint32
	var wantCode []string
	paidBook := make([]int64, nBooks)
	var paid, fees int64
	valid := func(b int, s, i uint32, first bool) {
		batch = append(batch, coupon(b, s, i, first))
		k := key{b, s}
		n := uint32(0)
		if i > high[k] {
			n = i - high[k]
			high[k] = i
		}
		wantCoupons, wantCode = append(wantCoupons, n), append(wantCode, "")
		amount := int64(n) * unit
		paidBook[b] += amount
		paid += amount
		fees += amount * 250 / 10000
	}
	refused := func(r Redemption, code string) {
		batch = append(batch, r)
		wantCoupons, wantCode = append(wantCoupons, 0), append(wantCode, code)
	}
	for s := uint32(0); s < lanes; s++ {
		for b := 0; b < nBooks; b++ {
			i := (uint32(b)*7+s)%(length-1) + 1 // 1…7
			_, seen := high[key{b, s}]
			valid(b, s, i, !seen)
			switch s % 10 {
			case 0: // the same coupon again
				valid(b, s, i, false)
			case 1: // a lower one
				valid(b, s, 1, false)
			case 2: // a higher one, later in the batch
				valid(b, s, length, false)
			case 3: // past the book's face value
				refused(coupon(b, s, length+1, false), RedeemBadIndex)
			case 4: // a forged coupon
				r := coupon(b, s, length, false)
				r.Value[0] ^= 1
				refused(r, RedeemBadCoupon)
			}
		}
	}
	// A lane past the book's lanes, the first coupon of a lane of an
	// unregistered book.
	out := books[1].coupon(0, 1, true)
	out.Lane.Lane = lanes
	refused(out, RedeemLaneOutOfRange)
	refused(unknown.coupon(0, 1, true), RedeemUnknownBook)
	refused(unknown.coupon(7, 5, true), RedeemUnknownBook)
	if len(batch) <= chunk || len(batch) > maxBatch {
		t.Fatalf("batch of %d: want more than a chunk (%d)", len(batch), chunk)
	}

	escrow := func() []int64 {
		out := make([]int64, nBooks)
		for b, bk := range books {
			out[b] = f.balance(t, escrowAccount(bk.sb.Book.ID()))
		}
		return out
	}
	escrowBefore, vendorBefore, feesBefore := escrow(), f.balance(t, vacct), f.balance(t, feesAccount("EUR"))
	check := func(round string, res []RedeemResult, pay bool) {
		t.Helper()
		if len(res) != len(batch) {
			t.Fatalf("%s: %d results for %d items", round, len(res), len(batch))
		}
		bad := 0
		for i, r := range res {
			want := wantCoupons[i]
			if !pay {
				want = 0
			}
			if r.Coupons != want || r.Code != wantCode[i] || (r.Code == "") != (r.Err == nil) || r.Lane != batch[i].Lane {
				if bad++; bad < 5 {
					t.Errorf("%s: item %d (lane %d, coupon %d): paid %d coupons, code %q (%v); want %d, %q",
						round, i, batch[i].Lane.Lane, batch[i].Index, r.Coupons, r.Code, r.Err, want, wantCode[i])
				}
			}
			if r.Amount+r.Fee != int64(r.Coupons)*unit {
				t.Errorf("%s: item %d: amount %d + fee %d for %d coupons", round, i, r.Amount, r.Fee, r.Coupons)
			}
		}
		after := escrow()
		for b := range books {
			if got := escrowBefore[b] - after[b]; got != paidBook[b] {
				t.Errorf("%s: book %d paid %d from its escrow, owed %d", round, b, got, paidBook[b])
			}
		}
		if got := f.balance(t, vacct) - vendorBefore; got != paid-fees {
			t.Errorf("%s: vendor paid %d, owed %d", round, got, paid-fees)
		}
		if got := f.balance(t, feesAccount("EUR")) - feesBefore; got != fees {
			t.Errorf("%s: fees %d, want %d", round, got, fees)
		}
		if err := f.b.DB.CheckInvariants(ctx); err != nil {
			t.Errorf("%s: %v", round, err)
		}
	}
	res, err := f.b.Redeem(ctx, vk, batch)
	if err != nil {
		t.Fatal(err)
	}
	check("batch", res, true)
	if _, err := f.b.DB.Account(ctx, escrowAccount(unknown.sb.Book.ID())); err == nil {
		t.Error("the unregistered book has an escrow")
	}
	// The same batch again pays nothing more.
	if res, err = f.b.Redeem(ctx, vk, batch); err != nil {
		t.Fatal(err)
	}
	check("the batch again", res, false)

	// Every lane to its last coupon, in one batch (lane 299 of each book
	// twice): the escrows hold exactly nothing more; a coupon past the
	// end is refused.
	var last []Redemption
	for b := range books {
		for s := uint32(0); s < lanes; s++ {
			last = append(last, coupon(b, s, length, false))
		}
		last = append(last, coupon(b, lanes-1, length, false))
	}
	if res, err = f.b.Redeem(ctx, vk, last); err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("last coupons: item %d: %v", i, r.Err)
		}
	}
	for b, e := range escrow() {
		if e != 0 {
			t.Errorf("book %d: %d left in escrow after every coupon was redeemed", b, e)
		}
	}
	if got, want := f.balance(t, vacct)+f.balance(t, feesAccount("EUR"))-vendorBefore-feesBefore, int64(nBooks*lanes*length)*unit-10*3*unit; got != want {
		t.Errorf("vendor and fees got %d in all, the books' face value less the earlier redemption is %d", got, want)
	}
	if res, err = f.b.Redeem(ctx, vk, []Redemption{coupon(0, 0, length+1, false)}); err != nil || res[0].Code != RedeemBadIndex {
		t.Errorf("a coupon past the end: %v %+v", err, res)
	}
}
