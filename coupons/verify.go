package coupons

import (
	"crypto/subtle"
	"fmt"

	"github.com/ecoupons/ecoupons/tesla"
)

// LaneState is what a vendor keeps per lane between payments: the last
// accepted coupon and the binding of the request it paid for, which the
// next payment lets the vendor check.
type LaneState struct {
	Last       uint32   // index of the last accepted coupon (0: none yet)
	LastValue  Value    // w_Last (the anchor when Last is 0)
	PrevDigest [32]byte // request digest of the last paid request
	PrevMAC    [16]byte // its binding tag m
	HasPrev    bool     // a binding awaits its check
}

// Theft is the evidence that a coupon was spent by someone who did not know
// the next chain value: the request paid with coupon Index carried a
// binding tag that the now-revealed value w_{Index+1} does not produce.
type Theft struct {
	Index  uint32
	Digest [32]byte
	MAC    [16]byte
	Next   Value // w_{Index+1}, the key the binding should have used
}

// VerifyPayment checks payment p, made for the request whose digest is
// digest, against the lane state st and, when it verifies, advances st:
// the coupon must extend the chain (see VerifyNext), and the value it
// reveals opens the binding of the previous request. A binding mismatch
// does not refuse this payment (it comes from whoever knows the chain,
// the legitimate holder) but is returned as theft evidence about the
// previous one. It returns the number of coupons paid (p.Index − Last).
// It does not allocate.
func VerifyPayment(tag *LaneTag, length uint32, st *LaneState, p *Payment, digest *[32]byte, maxJump uint32) (paid uint32, theft *Theft, err error) {
	return VerifyPaymentUpTo(tag, length, length, st, p, digest, maxJump)
}

// VerifyPaymentUpTo is VerifyPayment for a spender that holds the lane only
// up to coupon end (a granted portion, 1 ≤ end ≤ length): coupon end may
// come without a binding, as it has no next value the spender knows; every
// other coupon below length must carry one. With end = length it is
// VerifyPayment. A gate must take end from the spender (it cannot know it
// otherwise) and allow it only for that spender's payments: an unbound
// coupon leaves no theft evidence.
func VerifyPaymentUpTo(tag *LaneTag, length, end uint32, st *LaneState, p *Payment, digest *[32]byte, maxJump uint32) (paid uint32, theft *Theft, err error) {
	i, last := p.Index, st.Last
	switch {
	case i <= last:
		return 0, nil, ErrReplay
	case i > length:
		return 0, nil, ErrBeyondLane
	case i-last > maxJump:
		return 0, nil, ErrJumpTooLarge
	case i < length && i != end && !p.HasMAC:
		// Every coupon but a lane's (or a portion's) last binds its
		// request: without the tag, a thief's spending would leave no
		// evidence.
		return 0, nil, fmt.Errorf("%w: coupon %d carries no request binding (m)", ErrBadCoupon, i)
	}
	w := p.Value
	for k := i; k > last+1; k-- {
		w = Step(tag, k-1, &w)
	}
	next := w // w_{last+1}
	w = Step(tag, last, &w)
	if subtle.ConstantTimeCompare(w[:], st.LastValue[:]) != 1 {
		return 0, nil, ErrBadCoupon
	}
	if st.HasPrev && !tesla.VerifyBinding(tesla.Key(next), st.PrevDigest, st.PrevMAC) {
		theft = &Theft{Index: last, Digest: st.PrevDigest, MAC: st.PrevMAC, Next: next}
	}
	st.Last, st.LastValue = i, p.Value
	st.PrevDigest, st.PrevMAC, st.HasPrev = *digest, p.MAC, p.HasMAC
	return i - last, theft, nil
}

// Pay builds the payment for coupon i (value w) of a lane, binding the
// request whose digest is digest to next = w_{i+1}; next is nil for the
// lane's last coupon, which carries no binding.
func Pay(lane LaneID, i uint32, w Value, next *Value, digest *[32]byte) Payment {
	p := Payment{Lane: lane, Index: i, Value: w}
	if next != nil {
		p.MAC = tesla.BindRequest(tesla.Key(*next), *digest)
		p.HasMAC = true
	}
	return p
}
