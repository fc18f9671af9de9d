package coupons

import (
	"bytes"
	"errors"
	"math/bits"
	"testing"
)

// FuzzCursorState feeds UnmarshalBinary arbitrary bytes (whole lanes and
// portions): it never panics,
// rejects with ErrBadState, and keeps what it accepts byte for byte; a
// cursor it accepts then runs without panicking and its states stay
// loadable.
func FuzzCursorState(f *testing.F) {
	for _, k := range []uint32{1, 2, 3, 6} {
		c, _, err := NewCursor(LaneTag{byte(k)}, 1<<k, Value{byte(k)})
		if err != nil {
			f.Fatal(err)
		}
		for {
			b, err := c.MarshalBinary()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			if _, _, _, _, err := c.Next(); err != nil {
				break
			}
		}
	}
	for _, end := range []uint32{1, 3, 11, 45} {
		c, _, err := NewPortionCursor(LaneTag{byte(end)}, 64, end, Value{byte(end)})
		if err != nil {
			f.Fatal(err)
		}
		for {
			b, err := c.MarshalBinary()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			if _, _, _, _, err := c.Next(); err != nil {
				break
			}
		}
	}
	f.Add([]byte{portionVersion})
	for _, p := range []uint32{0, 5, 1 << 20, 1<<30 - 1, 1 << 30} {
		f.Add(syntheticState(30, p))
	}
	f.Add([]byte{})
	f.Add([]byte{cursorVersion})

	f.Fuzz(func(t *testing.T, b []byte) {
		c := new(Cursor)
		if err := c.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("error %v does not wrap ErrBadState", err)
			}
			if c.st != nil {
				t.Fatal("a rejected state was loaded")
			}
			return
		}
		out, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("MarshalBinary(UnmarshalBinary(x)) != x\n x = %x\nre = %x", b, out)
		}
		if c.StateSize() != len(b) {
			t.Fatalf("StateSize %d for %d bytes", c.StateSize(), len(b))
		}
		length, end, pos := c.Length(), c.End(), c.Position()
		for n := 0; n < 40; n++ {
			i, _, _, hasNext, err := c.Next()
			if pos == end {
				want := ErrLaneExhausted
				if end < length {
					want = ErrPortionUsedUp
				}
				if !errors.Is(err, want) {
					t.Fatalf("Next at the end: %v", err)
				}
				break
			}
			if err != nil {
				t.Fatalf("Next after coupon %d of %d: %v", pos, length, err)
			}
			if i != pos+1 || hasNext != (i < end) || c.st.lastSteps > c.st.k+1 || c.st.lastSteps > uint32(bits.Len32(end-1)) {
				t.Fatalf("Next after coupon %d of %d: coupon %d, hasNext %v, %d steps", pos, length, i, hasNext, c.st.lastSteps)
			}
			pos = i
			state, err := c.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if err := new(Cursor).UnmarshalBinary(state); err != nil {
				t.Fatalf("state after coupon %d does not load: %v", i, err)
			}
		}
	})
}
