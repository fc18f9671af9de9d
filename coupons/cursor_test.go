package coupons

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// naiveChain returns the whole lane, w_0 … w_L, computed from the seed.
func naiveChain(tag *LaneTag, length uint32, seed Value) []Value {
	w := make([]Value, length+1)
	w[length] = seed
	for i := length; i > 0; i-- {
		w[i-1] = Step(tag, i-1, &w[i])
	}
	return w
}

func randomLane(rng *rand.Rand) (LaneTag, Value) {
	var tag LaneTag
	var seed Value
	for i := range tag {
		tag[i] = byte(rng.Uint32())
	}
	for i := range seed {
		seed[i] = byte(rng.Uint32())
	}
	return tag, seed
}

// syntheticState encodes the state of a lane of length 2^k after round p,
// with the right layout but made-up chain values: enough to exercise the
// schedule of lanes too long to set up in a test.
func syntheticState(k, p uint32) []byte {
	l := expectedLayout(k, p)
	b := []byte{cursorVersion}
	b = append(b, make([]byte, 16)...)
	b = binary.BigEndian.AppendUint32(b, 1<<k)
	b = binary.BigEndian.AppendUint32(b, p)
	b = append(b, byte(l.n), byte(l.m))
	for _, q := range append(l.pebbles[:l.n:l.n], l.walkers[:l.m]...) {
		b = binary.BigEndian.AppendUint32(b, q)
		v := Value{0: byte(q), 1: byte(q >> 8), 2: byte(q >> 16), 31: 0xee}
		b = append(b, v[:]...)
	}
	return b
}

// totalWalkerSteps is the number of Step calls a whole lane of length 2^k
// costs after setup: 2^{k−j} blocks of each level j ≥ 2, each walker
// making 2^{j−1} − 1 steps.
func totalWalkerSteps(k uint32) uint64 {
	var n uint64
	for j := uint32(2); j <= k; j++ {
		n += uint64(1)<<(k-j)*(uint64(1)<<(j-1)) - uint64(1)<<(k-j)
	}
	return n
}

// checkHeld checks that every pebble and walker the cursor holds is at the
// index the schedule says and has that index's chain value.
func checkHeld(t *testing.T, c *Cursor, chain []Value) {
	t.Helper()
	s := c.st
	l := expectedLayout(s.k, s.position)
	n, m := s.counts()
	if n != l.n || m != l.m {
		t.Fatalf("position %d: %d pebbles and %d walkers, want %d and %d", s.position, n, m, l.n, l.m)
	}
	for i, p := range s.pebbles {
		if p.pos == 0 {
			continue
		}
		if int(p.pos) >= len(chain) || p.val != chain[p.pos] {
			t.Fatalf("position %d: pebble slot %d at %d holds a wrong value", s.position, i, p.pos)
		}
	}
	for j, w := range s.walkers {
		if w.pos == 0 {
			continue
		}
		if int(w.pos) >= len(chain) || w.val != chain[w.pos] {
			t.Fatalf("position %d: walker %d at %d holds a wrong value", s.position, j, w.pos)
		}
	}
}

func TestCursorMatchesNaiveChain(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	for k := uint32(1); k <= 10; k++ {
		length := uint32(1) << k
		for range 3 {
			tag, seed := randomLane(rng)
			chain := naiveChain(&tag, length, seed)
			c, anchor, err := NewCursor(tag, length, seed)
			if err != nil {
				t.Fatal(err)
			}
			if anchor != chain[0] {
				t.Fatalf("L=%d: wrong anchor", length)
			}
			if c.Position() != 0 || c.Remaining() != length || c.Length() != length || c.Tag() != tag {
				t.Fatalf("L=%d: fresh cursor at %d with %d remaining", length, c.Position(), c.Remaining())
			}
			checkHeld(t, c, chain)
			for want := uint32(1); want <= length; want++ {
				i, w, next, hasNext, err := c.Next()
				if err != nil {
					t.Fatalf("L=%d, coupon %d: %v", length, want, err)
				}
				if i != want || w != chain[i] {
					t.Fatalf("L=%d: got coupon %d, want %d, or a wrong value", length, i, want)
				}
				if hasNext != (i < length) {
					t.Fatalf("L=%d, coupon %d: hasNext = %v", length, i, hasNext)
				}
				if hasNext && next != chain[i+1] || !hasNext && next != (Value{}) {
					t.Fatalf("L=%d, coupon %d: wrong next value", length, i)
				}
				if c.Position() != i || c.Remaining() != length-i {
					t.Fatalf("L=%d: after coupon %d at %d with %d remaining", length, i, c.Position(), c.Remaining())
				}
				if c.st.lastSteps > k {
					t.Fatalf("L=%d, coupon %d: %d steps > log2 L", length, i, c.st.lastSteps)
				}
				checkHeld(t, c, chain)
			}
			if got, want := c.st.totalSteps, totalWalkerSteps(k); got != want {
				t.Fatalf("L=%d: %d steps in all, want %d", length, got, want)
			}
			for range 2 {
				if i, _, _, _, err := c.Next(); !errors.Is(err, ErrLaneExhausted) || i != 0 {
					t.Fatalf("L=%d: after the last coupon got %d, %v", length, i, err)
				}
			}
			if c.Position() != length || c.Remaining() != 0 {
				t.Fatalf("L=%d: exhausted cursor at %d", length, c.Position())
			}
		}
	}
}

func TestCursorSaveRestore(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{2}))
	for _, k := range []uint32{1, 2, 3, 5, 8, 10} {
		length := uint32(1) << k
		tag, seed := randomLane(rng)
		for _, every := range []uint32{1, 2, 3, 7} {
			ref, anchor, err := NewCursor(tag, length, seed)
			if err != nil {
				t.Fatal(err)
			}
			c, anchor2, err := NewCursor(tag, length, seed)
			if err != nil {
				t.Fatal(err)
			}
			if anchor != anchor2 {
				t.Fatal("two setups gave different anchors")
			}
			for n := uint32(1); ; n++ {
				i, w, next, hasNext, err := ref.Next()
				i2, w2, next2, hasNext2, err2 := c.Next()
				if i != i2 || w != w2 || next != next2 || hasNext != hasNext2 || !errors.Is(err2, err) {
					t.Fatalf("L=%d, every %d: restored cursor diverged at coupon %d", length, every, i)
				}
				if err != nil {
					if !errors.Is(err, ErrLaneExhausted) || n != length+1 {
						t.Fatalf("L=%d: stopped after %d coupons: %v", length, n-1, err)
					}
					break
				}
				if n%every != 0 {
					continue
				}
				saved, err := c.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				if len(saved) != c.StateSize() {
					t.Fatalf("StateSize %d, MarshalBinary %d bytes", c.StateSize(), len(saved))
				}
				c = new(Cursor)
				if err := c.UnmarshalBinary(saved); err != nil {
					t.Fatalf("L=%d, after coupon %d: %v", length, i, err)
				}
				again, err := c.MarshalBinary()
				if err != nil || !bytes.Equal(again, saved) {
					t.Fatalf("L=%d, after coupon %d: state changed by a round trip", length, i)
				}
				if c.Position() != i || c.Remaining() != length-i || c.Tag() != tag {
					t.Fatalf("L=%d: restored at %d, want %d", length, c.Position(), i)
				}
			}
		}
	}
}

// TestCursorLongLane spends a lane of 2^20 coupons as a vendor would see
// them and checks the worst case of the traversal.
func TestCursorLongLane(t *testing.T) {
	if testing.Short() {
		t.Skip("2^20 coupons")
	}
	const k, length = 20, 1 << 20
	tag, seed := randomLane(rand.New(rand.NewChaCha8([32]byte{3})))
	c, anchor, err := NewCursor(tag, length, seed)
	if err != nil {
		t.Fatal(err)
	}
	last, lastW := uint32(0), anchor
	var pending Value // w_{i+1} as returned with coupon i
	maxState := c.StateSize()
	for {
		i, w, next, hasNext, err := c.Next()
		if errors.Is(err, ErrLaneExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyNext(&tag, length, last, &lastW, i, &w, 1); err != nil {
			t.Fatalf("coupon %d: %v", i, err)
		}
		if i > 1 && w != pending {
			t.Fatalf("coupon %d is not the next value returned with coupon %d", i, i-1)
		}
		if hasNext != (i < length) {
			t.Fatalf("coupon %d: hasNext = %v", i, hasNext)
		}
		last, lastW, pending = i, w, next
		maxState = max(maxState, c.StateSize())
	}
	if last != length || lastW != seed {
		t.Fatalf("stopped at coupon %d, or the last coupon is not the seed", last)
	}
	st := c.st
	mean := float64(st.totalSteps) / length
	t.Logf("L=2^%d: max %d, mean %.3f Step calls per coupon; state at most %d bytes", k, st.maxSteps, mean, maxState)
	if st.maxSteps > k {
		t.Errorf("%d Step calls in one Next, more than log2 L = %d", st.maxSteps, k)
	}
	if st.totalSteps != totalWalkerSteps(k) {
		t.Errorf("%d Step calls in all, want %d", st.totalSteps, totalWalkerSteps(k))
	}
	if maxState > 2048 {
		t.Errorf("state of %d bytes, more than 2048", maxState)
	}
	// The worst round has all of the levels 2, 4, …, 20 working: one step
	// for level 2 and two for each other.
	if st.maxSteps != k-1 {
		t.Errorf("max %d Step calls per coupon, the schedule's worst case is %d", st.maxSteps, k-1)
	}
}

// TestCursorScheduleLongLanes runs the schedule of lanes up to 2^30 long
// from synthetic states around their busiest rounds: the chain values are
// made up, but the Step calls per Next and the state's layout are those of
// a real lane.
func TestCursorScheduleLongLanes(t *testing.T) {
	for k := uint32(1); k <= 30; k++ {
		length := uint32(1) << k
		// Round r has every level j ≡ k (mod 2), 2 ≤ j ≤ k, working when
		// bits (j−1, j−2) of r−1 are (0, 1).
		var busiest uint32
		for j := k; j >= 2; j -= 2 {
			busiest |= 1 << (j - 2)
		}
		// Levels k, k−2, … ≥ 3 make two steps each and level 2, when k is
		// even, one: k−1 in all.
		wantMax := k - 1
		starts := []uint32{0, busiest, length/2 - 50, length - 100}
		var maxSteps uint32
		for _, start := range starts {
			start = min(start-min(start, 40), length)
			c := new(Cursor)
			if err := c.UnmarshalBinary(syntheticState(k, start)); err != nil {
				t.Fatalf("L=2^%d, position %d: %v", k, start, err)
			}
			for range 100 {
				i, _, _, _, err := c.Next()
				if errors.Is(err, ErrLaneExhausted) {
					break
				}
				if err != nil {
					t.Fatalf("L=2^%d: %v", k, err)
				}
				if c.st.lastSteps > k {
					t.Fatalf("L=2^%d, coupon %d: %d Step calls", k, i, c.st.lastSteps)
				}
				maxSteps = max(maxSteps, c.st.lastSteps)
				saved, err := c.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				if err := new(Cursor).UnmarshalBinary(saved); err != nil {
					t.Fatalf("L=2^%d, after coupon %d the layout is not the expected one: %v", k, i, err)
				}
			}
		}
		if maxSteps != wantMax {
			t.Errorf("L=2^%d: busiest round made %d Step calls, want %d", k, maxSteps, wantMax)
		}
	}
}

func TestExpectedLayoutBounds(t *testing.T) {
	check := func(k, p uint32) (n, m int) {
		l := expectedLayout(k, p)
		if l.n > int(k)+1 || l.m > int(k-1)/2 {
			t.Fatalf("L=2^%d, position %d: %d pebbles and %d walkers", k, p, l.n, l.m)
		}
		prev := p
		for _, q := range l.pebbles[:l.n] {
			if q <= prev || q > 1<<k {
				t.Fatalf("L=2^%d, position %d: pebbles %v", k, p, l.pebbles[:l.n])
			}
			prev = q
		}
		if p < 1<<k && (l.n == 0 || l.pebbles[0] != p+1) {
			t.Fatalf("L=2^%d, position %d: no pebble for the next coupon", k, p)
		}
		if size := cursorHeaderLen + (l.n+l.m)*pebbleLen; size > maxStateLen {
			t.Fatalf("L=2^%d, position %d: %d bytes > maxStateLen", k, p, size)
		}
		return l.n, l.m
	}
	for k := uint32(1); k <= 16; k++ {
		for p := uint32(0); p <= 1<<k; p++ {
			// Stronger than the bounds above, and what the Cursor
			// documentation claims: never more entries than at setup.
			if n, m := check(k, p); n+m > int(k)+1 {
				t.Fatalf("L=2^%d, position %d: %d pebbles and %d walkers", k, p, n, m)
			}
		}
	}
	// L = 2^30: the most walkers are alive after round p when bits
	// (j−1, j−2) of p−1 are (0, 1) for j = 29, 27, …, 3 and bit 0 is 0.
	var p uint32 = 1
	for j := uint32(3); j <= 29; j += 2 {
		p += 1 << (j - 2)
	}
	if _, m := check(30, p); m != 14 {
		t.Errorf("L=2^30, position %d: %d walkers, want 14", p, m)
	}
	if n, _ := check(30, 0); n != 31 {
		t.Errorf("L=2^30, position 0: %d pebbles, want 31", n)
	}
	rng := rand.New(rand.NewChaCha8([32]byte{4}))
	for range 100000 {
		check(30, rng.Uint32N(1<<30+1))
	}
}

func TestCursorUnmarshalRejects(t *testing.T) {
	tag, seed := randomLane(rand.New(rand.NewChaCha8([32]byte{5})))
	c, _, err := NewCursor(tag, 64, seed)
	if err != nil {
		t.Fatal(err)
	}
	for range 21 { // position 21 has walkers of levels 4 and 6
		if _, _, _, _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
	}
	good, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if good[26] == 0 {
		t.Fatal("test state has no walker")
	}
	reject := func(name string, b []byte) {
		t.Helper()
		d := new(Cursor)
		if err := d.UnmarshalBinary(good); err != nil {
			t.Fatal(err)
		}
		err := d.UnmarshalBinary(b)
		if !errors.Is(err, ErrBadState) {
			t.Errorf("%s: got %v, want ErrBadState", name, err)
		}
		if d.Position() != 21 || d.Remaining() != 43 {
			t.Errorf("%s: a rejected state changed the cursor", name)
		}
	}
	edit := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	for n := range len(good) {
		reject(fmt.Sprintf("truncated to %d bytes", n), good[:n])
	}
	reject("trailing byte", append(bytes.Clone(good), 0))
	reject("too long", make([]byte, maxStateLen+1))
	for _, v := range []byte{0, 2, 0xff} {
		reject(fmt.Sprintf("version %d", v), edit(func(b []byte) { b[0] = v }))
	}
	for _, l := range []uint32{0, 1, 3, 48, 65, 1 << 31, 0xffffffff} {
		reject(fmt.Sprintf("length %d", l), edit(func(b []byte) { binary.BigEndian.PutUint32(b[17:], l) }))
	}
	for _, p := range []uint32{65, 1 << 31} {
		reject(fmt.Sprintf("position %d", p), edit(func(b []byte) { binary.BigEndian.PutUint32(b[21:], p) }))
	}
	// A position with the same number of pebbles and walkers but other
	// indices.
	reject("position 22", edit(func(b []byte) { binary.BigEndian.PutUint32(b[21:], 22) }))
	reject("length 128", edit(func(b []byte) { binary.BigEndian.PutUint32(b[17:], 128) }))
	reject("pebble count", edit(func(b []byte) { b[25]++ }))
	reject("walker count", edit(func(b []byte) { b[26]-- }))
	entries := int(good[25]) + int(good[26])
	for e := range entries {
		at := cursorHeaderLen + e*pebbleLen
		for _, d := range []uint32{1, 0xffffffff, 1 << 8, 1 << 31} {
			reject(fmt.Sprintf("entry %d index %+d", e, int32(d)), edit(func(b []byte) {
				binary.BigEndian.PutUint32(b[at:], binary.BigEndian.Uint32(b[at:])+d)
			}))
		}
	}
	reject("pebbles swapped", edit(func(b []byte) {
		x, y := b[cursorHeaderLen:][:pebbleLen], b[cursorHeaderLen+pebbleLen:][:pebbleLen]
		var tmp [pebbleLen]byte
		copy(tmp[:], x)
		copy(x, y)
		copy(y, tmp[:])
	}))
	// Values are not checkable: a changed value is accepted as is.
	d := new(Cursor)
	changed := edit(func(b []byte) { b[len(b)-1] ^= 1 })
	if err := d.UnmarshalBinary(changed); err != nil {
		t.Fatal(err)
	}
	if again, _ := d.MarshalBinary(); !bytes.Equal(again, changed) {
		t.Error("state not kept as given")
	}
}

func TestNewCursorRejectsLength(t *testing.T) {
	for _, l := range []uint32{0, 1, 3, 6, 1<<30 + 1, 1 << 31} {
		if _, _, err := NewCursor(LaneTag{}, l, Value{}); !errors.Is(err, ErrBadBook) {
			t.Errorf("length %d: got %v, want ErrBadBook", l, err)
		}
	}
}

func TestCursorZeroValue(t *testing.T) {
	var c Cursor
	if _, _, _, _, err := c.Next(); !errors.Is(err, ErrBadState) {
		t.Errorf("Next: got %v, want ErrBadState", err)
	}
	if _, err := c.MarshalBinary(); !errors.Is(err, ErrBadState) {
		t.Errorf("MarshalBinary: got %v, want ErrBadState", err)
	}
	if c.Position() != 0 || c.Remaining() != 0 || c.Length() != 0 || c.StateSize() != 0 {
		t.Error("zero cursor is not empty")
	}
}

// TestCursorPrintsNoSecret prints a cursor every way fmt allows and looks
// for any chain value it holds.
func TestCursorPrintsNoSecret(t *testing.T) {
	tag, seed := randomLane(rand.New(rand.NewChaCha8([32]byte{6})))
	c, _, err := NewCursor(tag, 16, seed)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, _, err := c.Next(); err != nil {
		t.Fatal(err)
	}
	var printed strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%d", "%q"} {
		fmt.Fprintf(&printed, verb, c)
		fmt.Fprintf(&printed, verb, *c)
		fmt.Fprintf(&printed, verb, struct{ C Cursor }{*c})
	}
	out := printed.String()
	var secrets []Value
	for _, p := range c.st.pebbles {
		if p.pos != 0 {
			secrets = append(secrets, p.val)
		}
	}
	if len(secrets) == 0 {
		t.Fatal("no pebbles")
	}
	for _, v := range secrets {
		for _, form := range []string{hex.EncodeToString(v[:4]), strings.ToUpper(hex.EncodeToString(v[:4])), fmt.Sprint(v[:4]), fmt.Sprintf("%d, %d, %d", v[0], v[1], v[2])} {
			if strings.Contains(out, form) {
				t.Fatalf("printing a cursor shows a chain value (%q)", form)
			}
		}
	}
}

func TestCursorAppendBinaryDoesNotAllocate(t *testing.T) {
	tag, seed := randomLane(rand.New(rand.NewChaCha8([32]byte{7})))
	c, _, err := NewCursor(tag, 1<<10, seed)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, maxStateLen)
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, _, _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AppendBinary(buf[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Next and AppendBinary: %v allocations", allocs)
	}
}
