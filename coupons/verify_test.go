package coupons

import (
	"errors"
	"testing"
)

// payer simulates a client spending lane s of the test world's book.
type payer struct {
	lane  LaneID
	chain []Value
}

func (w *world) payer(s uint32) *payer {
	b := w.book.Book
	return &payer{lane: LaneID{Book: b.ID(), Lane: s}, chain: refChain(b.LaneTag(s), b.Length, w.secrets.Seed(s))}
}

func (p *payer) pay(i uint32, path string) (Payment, [32]byte) {
	d := (&Request{Method: "GET", Host: "news.example", Path: path, Lane: p.lane, Index: i, Nonce: "n"}).Digest()
	var next *Value
	if int(i)+1 < len(p.chain) {
		next = &p.chain[i+1]
	}
	return Pay(p.lane, i, p.chain[i], next, &d), d
}

func TestVerifyPaymentSequence(t *testing.T) {
	w := newWorld(t)
	b := w.book.Book
	tag := b.LaneTag(0)
	pp := w.payer(0)
	st := LaneState{LastValue: w.anchors[0]}
	total := uint32(0)
	for _, i := range []uint32{1, 2, 3, 7, 8, 12, 16} {
		p, d := pp.pay(i, "/premium/a")
		// The payment travels in its header.
		var q Payment
		if err := ParsePayment(p.Header(), &q); err != nil {
			t.Fatal(err)
		}
		paid, theft, err := VerifyPayment(&tag, b.Length, &st, &q, &d, 4)
		if err != nil || theft != nil {
			t.Fatalf("coupon %d: %v, theft %v", i, err, theft)
		}
		total += paid
	}
	if total != 16 || st.Last != 16 || st.HasPrev {
		t.Errorf("paid %d, state %+v", total, st)
	}
	p, d := pp.pay(16, "/premium/a")
	if _, _, err := VerifyPayment(&tag, b.Length, &st, &p, &d, 4); !errors.Is(err, ErrReplay) {
		t.Errorf("replay after the end: %v", err)
	}
}

func TestVerifyPaymentDetectsTheft(t *testing.T) {
	w := newWorld(t)
	b := w.book.Book
	tag := b.LaneTag(0)
	pp := w.payer(0)
	st := LaneState{LastValue: w.anchors[0]}
	p1, d1 := pp.pay(1, "/premium/a")
	if _, _, err := VerifyPayment(&tag, b.Length, &st, &p1, &d1, 4); err != nil {
		t.Fatal(err)
	}
	// A thief who saw coupon 2 in flight uses it for another request; it
	// cannot compute the binding, which needs w_3.
	p2, _ := pp.pay(2, "/premium/a")
	stolen := p2
	stolen.MAC = [16]byte{1, 2, 3}
	dThief := (&Request{Method: "GET", Host: "news.example", Path: "/premium/secret", Lane: pp.lane, Index: 2, Nonce: "n"}).Digest()
	if _, theft, err := VerifyPayment(&tag, b.Length, &st, &stolen, &dThief, 4); err != nil || theft != nil {
		t.Fatalf("the stolen coupon itself verifies (the chain is right): %v %v", err, theft)
	}
	// The owner's own request with coupon 2 arrives late: a replay.
	d2 := (&Request{Method: "GET", Host: "news.example", Path: "/premium/a", Lane: pp.lane, Index: 2, Nonce: "n"}).Digest()
	if _, _, err := VerifyPayment(&tag, b.Length, &st, &p2, &d2, 4); !errors.Is(err, ErrReplay) {
		t.Fatalf("late original: %v", err)
	}
	// The owner goes on with coupon 3, revealing w_3: the theft shows.
	p3, d3 := pp.pay(3, "/premium/a")
	paid, theft, err := VerifyPayment(&tag, b.Length, &st, &p3, &d3, 4)
	if err != nil || paid != 1 {
		t.Fatalf("coupon 3: %v", err)
	}
	if theft == nil || theft.Index != 2 || theft.Digest != dThief || theft.Next != pp.chain[3] {
		t.Fatalf("theft not reported: %+v", theft)
	}
	// Jumping over indices still checks the binding (w_4 is computed on the way).
	p6, d6 := pp.pay(6, "/premium/b")
	if _, theft, err := VerifyPayment(&tag, b.Length, &st, &p6, &d6, 4); err != nil || theft != nil {
		t.Fatalf("jump: %v %v", err, theft)
	}
	// A request bound to another digest than the one the vendor computed is
	// a theft too (the binding covers path, method, host, nonce).
	p7, _ := pp.pay(7, "/premium/c")
	dOther := (&Request{Method: "GET", Host: "news.example", Path: "/premium/d", Lane: pp.lane, Index: 7, Nonce: "n"}).Digest()
	VerifyPayment(&tag, b.Length, &st, &p7, &dOther, 4)
	p8, d8 := pp.pay(8, "/premium/c")
	if _, theft, _ := VerifyPayment(&tag, b.Length, &st, &p8, &d8, 4); theft == nil || theft.Index != 7 {
		t.Fatalf("digest mismatch not reported")
	}
	// A wrong value is refused and leaves the state alone.
	before := st
	bad, d9 := pp.pay(9, "/premium/c")
	bad.Value[0] ^= 1
	if _, _, err := VerifyPayment(&tag, b.Length, &st, &bad, &d9, 4); !errors.Is(err, ErrBadCoupon) || st != before {
		t.Fatalf("bad value: %v", err)
	}
}

// TestVerifyPaymentNeedsBinding: a coupon other than the lane's last
// without its request binding (m) is refused, and the state is unchanged:
// a thief cannot escape detection by leaving the tag out.
func TestVerifyPaymentNeedsBinding(t *testing.T) {
	w := newWorld(t)
	b := w.book.Book
	tag := b.LaneTag(0)
	pp := w.payer(0)
	st := LaneState{LastValue: w.anchors[0]}
	p, d := pp.pay(1, "/premium/a")
	p.HasMAC, p.MAC = false, [16]byte{}
	if _, _, err := VerifyPayment(&tag, b.Length, &st, &p, &d, 4); !errors.Is(err, ErrBadCoupon) || st.Last != 0 {
		t.Fatalf("coupon 1 without m: %v, state at %d", err, st.Last)
	}
	// The last coupon has no next value to bind with: it needs no m.
	st = LaneState{Last: b.Length - 1, LastValue: pp.chain[b.Length-1]}
	last, dl := pp.pay(b.Length, "/premium/a")
	if last.HasMAC {
		t.Fatal("the last coupon carries a binding")
	}
	if _, _, err := VerifyPayment(&tag, b.Length, &st, &last, &dl, 4); err != nil {
		t.Fatalf("the last coupon: %v", err)
	}
}
