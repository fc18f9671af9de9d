package coupons

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
)

// checkPortionHeld checks every value a portion cursor's saved state holds
// against the chain: the indices come from the state itself, which
// UnmarshalBinary has checked against the layout.
func checkPortionHeld(t *testing.T, state []byte, chain []Value) {
	t.Helper()
	var hdr, n int
	if state[0] == cursorVersion {
		hdr, n = cursorHeaderLen, int(state[cursorHeaderLen-2])+int(state[cursorHeaderLen-1])
	} else {
		hdr, n = portionHeaderLen, int(state[portionHeaderLen-1])
	}
	rest := state[hdr:]
	for x := range n {
		q := binary.BigEndian.Uint32(rest)
		var v Value
		copy(v[:], rest[4:pebbleLen])
		if int(q) >= len(chain) || chain[q] != v {
			t.Fatalf("saved value %d at index %d is not the chain's", x, q)
		}
		rest = rest[pebbleLen:]
	}
}

// portionEnds are the awkward portion lengths the tests walk, for a lane of
// length 2^11.
var portionEnds = []uint32{1, 2, 3, 5, 7, 1000, 1<<10 - 1, 1<<10 + 1, 1<<11 - 1, 1 << 11}

// TestPortionCursorWalksWholePortions spends whole portions of awkward
// lengths and checks every coupon and its next value against the chain,
// the hashes of every coupon (at most ⌈log2 c⌉ ≤ log2 L), the state's size,
// that every saved state loads, holds the chain's values and equals the
// state NewCursorAt builds directly, and that the cursor stops at c.
func TestPortionCursorWalksWholePortions(t *testing.T) {
	const k, length = 11, 1 << 11
	rng := rand.New(rand.NewChaCha8([32]byte{7}))
	tag, seed := randomLane(rng)
	chain := naiveChain(&tag, length, seed)
	for _, end := range portionEnds {
		c, anchor, err := NewPortionCursor(tag, length, end, chain[end])
		if err != nil {
			t.Fatal(err)
		}
		if anchor != chain[0] {
			t.Fatalf("c=%d: setup gave a wrong anchor", end)
		}
		if c.End() != end || c.Length() != length || c.Remaining() != end {
			t.Fatalf("c=%d: End %d, Length %d, Remaining %d", end, c.End(), c.Length(), c.Remaining())
		}
		bound := uint32(bits.Len32(end - 1)) // ⌈log2 c⌉
		maxValues := 3*bits.Len32(end) + 3
		for p := uint32(0); ; p++ {
			state, err := c.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if len(state) != c.StateSize() {
				t.Fatalf("c=%d, p=%d: StateSize %d, state %d bytes", end, p, c.StateSize(), len(state))
			}
			if len(state) > portionHeaderLen+maxValues*pebbleLen {
				t.Fatalf("c=%d, p=%d: state of %d bytes", end, p, len(state))
			}
			checkPortionHeld(t, state, chain)
			back := new(Cursor)
			if err := back.UnmarshalBinary(state); err != nil {
				t.Fatalf("c=%d, p=%d: %v", end, p, err)
			}
			if again, _ := back.MarshalBinary(); !bytes.Equal(again, state) {
				t.Fatalf("c=%d, p=%d: a round trip changed the state", end, p)
			}
			if end <= 1100 || p%97 == 0 || p == end {
				at, err := NewCursorAt(tag, length, end, chain[end], p)
				if err != nil {
					t.Fatalf("c=%d: NewCursorAt(%d): %v", end, p, err)
				}
				if direct, _ := at.MarshalBinary(); !bytes.Equal(direct, state) {
					t.Fatalf("c=%d: NewCursorAt(%d) differs from %d calls of Next", end, p, p)
				}
			}
			i, w, next, hasNext, err := c.Next()
			if p == end {
				want := ErrPortionUsedUp
				if end == length {
					want = ErrLaneExhausted
				}
				if !errors.Is(err, want) || i != 0 || w != (Value{}) {
					t.Fatalf("c=%d: past the end: coupon %d, %v", end, i, err)
				}
				break
			}
			if err != nil {
				t.Fatalf("c=%d, coupon %d: %v", end, p+1, err)
			}
			if i != p+1 || w != chain[i] {
				t.Fatalf("c=%d: coupon %d (want %d) or its value is wrong", end, i, p+1)
			}
			if hasNext != (i < end) || (hasNext && next != chain[i+1]) || (!hasNext && next != Value{}) {
				t.Fatalf("c=%d, coupon %d: hasNext %v or next value wrong", end, i, hasNext)
			}
			if c.st.lastSteps > bound || c.st.lastSteps > k {
				t.Fatalf("c=%d, coupon %d: %d hashes, bound %d", end, i, c.st.lastSteps, bound)
			}
		}
	}
}

// TestPortionCursorRestoreNeverRepeats: a portion's cursor restored from any
// saved state continues exactly where it stopped and never returns a
// coupon twice (crash safety), including across segment switches.
func TestPortionCursorRestoreNeverRepeats(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{8}))
	tag, seed := randomLane(rng)
	chain := naiveChain(&tag, 64, seed)
	for _, end := range []uint32{13, 31, 63} {
		c, _, err := NewPortionCursor(tag, 64, end, chain[end])
		if err != nil {
			t.Fatal(err)
		}
		seen := map[uint32]bool{}
		for {
			i, _, _, _, err := c.Next()
			if errors.Is(err, ErrPortionUsedUp) {
				break
			}
			if err != nil || seen[i] {
				t.Fatalf("c=%d: coupon %d again or error %v", end, i, err)
			}
			seen[i] = true
			state, _ := c.MarshalBinary()
			c = new(Cursor)
			if err := c.UnmarshalBinary(state); err != nil {
				t.Fatal(err)
			}
		}
		if len(seen) != int(end) {
			t.Fatalf("c=%d: %d coupons", end, len(seen))
		}
	}
}

// TestCappedDelegateCannotComputePastPortion: a cursor made from w_c
// reveals nothing past c, and the best a delegate can forge for coupon
// c+1 fails VerifyPayment at a gate holding its last coupon.
func TestCappedDelegateCannotComputePastPortion(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{9}))
	tag, seed := randomLane(rng)
	const length, end = 64, 10
	chain := naiveChain(&tag, length, seed)
	c, _, err := NewPortionCursor(tag, length, end, chain[end])
	if err != nil {
		t.Fatal(err)
	}
	var last Value
	for range end {
		_, w, _, _, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		last = w
	}
	if _, _, _, _, err := c.Next(); !errors.Is(err, ErrPortionUsedUp) {
		t.Fatalf("coupon c+1: %v", err)
	}
	// The gate has accepted coupon c. Candidates for w_{c+1} the delegate
	// could make from what it holds: its own values, hashed or not.
	st := LaneState{Last: end, LastValue: chain[end]}
	forged := []Value{last, Step(&tag, end, &last), Step(&tag, end+1, &last), {}}
	for _, f := range forged {
		p := Payment{Index: end + 1, Value: f, HasMAC: true}
		var d [32]byte
		if _, _, err := VerifyPayment(&tag, length, &st, &p, &d, 100); !errors.Is(err, ErrBadCoupon) {
			t.Fatalf("forged coupon c+1: %v", err)
		}
	}
	// The real one (the owner's) passes.
	p := Payment{Index: end + 1, Value: chain[end+1], HasMAC: true}
	var d [32]byte
	if paid, _, err := VerifyPayment(&tag, length, &st, &p, &d, 100); err != nil || paid != 1 {
		t.Fatalf("the owner's coupon c+1: %d, %v", paid, err)
	}
}

// TestOwnerReclaimsUnspentPortion: the delegate spent j < c coupons of its
// portion; the owner moves its own cursor to c (NewCursorAt) and pays
// coupon c+1, which the gate verifies from its state (j, w_j): it pays
// c+1−j coupons, the delegate's unspent ones included.
func TestOwnerReclaimsUnspentPortion(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{10}))
	tag, seed := randomLane(rng)
	const length, end, spent = 256, 100, 37
	delegate, anchor, err := NewPortionCursor(tag, length, end, Walk(&tag, length, seed, end))
	if err != nil {
		t.Fatal(err)
	}
	gate := LaneState{LastValue: anchor}
	var d [32]byte
	for range spent {
		i, w, next, hasNext, err := delegate.Next()
		if err != nil || !hasNext {
			t.Fatal(err)
		}
		p := Pay(LaneID{}, i, w, &next, &d)
		if _, _, err := VerifyPayment(&tag, length, &gate, &p, &d, 1); err != nil {
			t.Fatal(err)
		}
	}
	owner, err := NewCursorAt(tag, length, length, seed, end)
	if err != nil {
		t.Fatal(err)
	}
	i, w, next, hasNext, err := owner.Next()
	if err != nil || i != end+1 || !hasNext {
		t.Fatalf("owner's first coupon: %d, %v", i, err)
	}
	p := Pay(LaneID{}, i, w, &next, &d)
	paid, theft, err := VerifyPayment(&tag, length, &gate, &p, &d, length)
	if err != nil || theft != nil {
		t.Fatalf("owner's coupon c+1 at the gate: %v (theft %v)", err, theft)
	}
	if paid != end+1-spent {
		t.Fatalf("paid %d coupons, want %d", paid, end+1-spent)
	}
	// The delegate's next coupon is now a replay.
	i, w, next, _, _ = delegate.Next()
	p = Pay(LaneID{}, i, w, &next, &d)
	if _, _, err := VerifyPayment(&tag, length, &gate, &p, &d, length); !errors.Is(err, ErrReplay) {
		t.Fatalf("the delegate after the reclaim: %v", err)
	}
}

// TestPortionLastCouponIsUnbound: the last coupon of a portion has no
// next value, so its payment carries no m; VerifyPayment (which knows only
// L) refuses it below L, VerifyPaymentUpTo with the portion's end takes it
// there and nowhere else (docs/PROTOCOL.md §10).
func TestPortionLastCouponIsUnbound(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{11}))
	tag, seed := randomLane(rng)
	const length, end = 16, 3
	c, anchor, err := NewPortionCursor(tag, length, end, Walk(&tag, length, seed, end))
	if err != nil {
		t.Fatal(err)
	}
	gate := LaneState{LastValue: anchor}
	var d [32]byte
	var p Payment
	for range end {
		i, w, next, hasNext, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		var np *Value
		if hasNext {
			np = &next
		}
		p = Pay(LaneID{}, i, w, np, &d)
		if i < end {
			if _, _, err := VerifyPayment(&tag, length, &gate, &p, &d, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if p.HasMAC || strings.Contains(p.Header(), "m=") {
		t.Fatal("the portion's last coupon carries a binding")
	}
	if _, _, err := VerifyPayment(&tag, length, &gate, &p, &d, 1); !errors.Is(err, ErrBadCoupon) {
		t.Fatalf("VerifyPayment on an unbound coupon below L: %v", err)
	}
	// A gate that knows the spender's end takes it, and only at the end.
	early := gate
	early.Last, early.LastValue = 0, anchor
	if _, _, err := VerifyPaymentUpTo(&tag, length, end, &early, &Payment{Index: 1, Value: Walk(&tag, length, seed, 1)}, &d, 1); !errors.Is(err, ErrBadCoupon) {
		t.Fatalf("an unbound coupon below the portion's end: %v", err)
	}
	if paid, _, err := VerifyPaymentUpTo(&tag, length, end, &gate, &p, &d, 1); err != nil || paid != 1 {
		t.Fatalf("VerifyPaymentUpTo on the portion's last coupon: %d, %v", paid, err)
	}
}

func TestPortionCursorRejects(t *testing.T) {
	var tag LaneTag
	for _, c := range []struct{ length, end uint32 }{{16, 0}, {16, 17}, {15, 3}} {
		if _, _, err := NewPortionCursor(tag, c.length, c.end, Value{}); err == nil {
			t.Errorf("L=%d, c=%d accepted", c.length, c.end)
		}
	}
	if _, err := NewCursorAt(tag, 16, 5, Value{}, 6); !errors.Is(err, ErrBadPortion) {
		t.Errorf("position past the end: %v", err)
	}
	c, _, err := NewPortionCursor(tag, 64, 45, Value{1})
	if err != nil {
		t.Fatal(err)
	}
	for range 9 {
		c.Next()
	}
	good, _ := c.MarshalBinary()
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	bad := map[string][]byte{
		"truncated":     good[:len(good)-1],
		"trailing":      append(append([]byte(nil), good...), 0),
		"header only":   good[:portionHeaderLen-1],
		"whole lane v2": mut(func(b []byte) []byte { binary.BigEndian.PutUint32(b[21:], 64); return b }),
		"end zero":      mut(func(b []byte) []byte { binary.BigEndian.PutUint32(b[21:], 0); return b }),
		"past the end":  mut(func(b []byte) []byte { binary.BigEndian.PutUint32(b[25:], 46); return b }),
		"other length":  mut(func(b []byte) []byte { binary.BigEndian.PutUint32(b[17:], 48); return b }),
		"count":         mut(func(b []byte) []byte { b[29]--; return b }),
		"index":         mut(func(b []byte) []byte { b[portionHeaderLen+3]++; return b }),
		"last index":    mut(func(b []byte) []byte { b[len(b)-33]++; return b }),
		"other end":     mut(func(b []byte) []byte { binary.BigEndian.PutUint32(b[21:], 44); return b }),
	}
	for name, b := range bad {
		d := new(Cursor)
		if err := d.UnmarshalBinary(b); !errors.Is(err, ErrBadState) || d.st != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestGoldenPortionCursor documents the saved state of the portion 1…11 of
// lane 1 of the test book (L = 16, chain.txt) before its first coupon and
// after its 8th (in its second segment).
func TestGoldenPortionCursor(t *testing.T) {
	w := newWorld(t)
	tag := w.book.Book.LaneTag(1)
	top := Walk(&tag, 16, w.secrets.Seed(1), 11)
	c, _, err := NewPortionCursor(tag, 16, 11, top)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("# Portion 1…11 of lane 1 of the test book (chain.txt), saved cursor states (version 2):\n")
	b.WriteString("# 02 ‖ tag ‖ be32(L) ‖ be32(c) ‖ be32(p) ‖ n ‖ n × (be32(index) ‖ w_index)\n")
	for p := uint32(0); p <= 11; p++ {
		if p == 0 || p == 8 || p == 11 {
			s, err := c.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "p = %d\n", p)
			for x := 0; x < len(s); {
				n := min(len(s)-x, 36)
				if x == 0 {
					n = portionHeaderLen
				}
				fmt.Fprintf(&b, "  %x\n", s[x:x+n])
				x += n
			}
		}
		if p < 11 {
			c.Next()
		}
	}
	checkGolden(t, "portion-cursor.txt", []byte(b.String()))
}

func TestPortionCursorAppendBinaryDoesNotAllocate(t *testing.T) {
	tag, seed := randomLane(rand.New(rand.NewChaCha8([32]byte{12})))
	c, _, err := NewPortionCursor(tag, 1<<10, 1<<8+1<<6+5, seed) // switches segments at 256 and 320
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, maxStateLen)
	allocs := testing.AllocsPerRun(320, func() {
		if _, _, _, _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AppendBinary(buf[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Next and AppendBinary on a portion: %v allocations", allocs)
	}
}
