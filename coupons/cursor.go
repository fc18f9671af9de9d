package coupons

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
)

// A Cursor is the spender's side of one lane: it reveals w_1, w_2, …, w_L
// in order from the lane's seed while keeping O(log L) chain values and
// hashing at most log2 L times per coupon, in the worst case.
//
// # Traversal
//
// The cursor is a fractal pebbling in the manner of Jakobsson ("Fractal
// Hash Sequence Representation and Traversal", ISIT 2002, IACR ePrint
// 2002/001). Let L = 2^k and number the rounds r = 1…L; round r is the r-th
// call of Next. It reveals w_r and must leave w_{r+1} in memory, because
// request r is bound to w_{r+1}. A block (a, j), for a a multiple of 2^j,
// is the rounds a+1 … a+2^j.
//
//   - Invariant: when block (a, j) starts, the cursor holds w_{a+2^i} for
//     i = 0…j. The setup pass establishes it for block (0, k) by keeping
//     w_1, w_2, w_4, …, w_L.
//   - The first half of block (a, j) is block (a, j−1), whose invariant is
//     already met. Meanwhile a walker of level j copies w_{a+2^j} and
//     hashes down to index a+2^{j−1}+1, leaving a pebble at each
//     a+2^{j−1}+2^i, i = j−2…0: the invariant of the second half. That is
//     2^{j−1}−1 steps, done two per round in the second quarter of the
//     block, rounds a+2^{j−2}+1 … a+2^{j−1}; the last pebble, w_{a+2^{j−1}+1},
//     appears in round a+2^{j−1}, just before it is revealed.
//   - So the level-j walker works in round r exactly when bits j−1 and j−2
//     of r−1 are 0 and 1. Two adjacent levels can never both work, so at
//     most ⌈(k−1)/2⌉ of the levels 2…k work in a round, each at most two
//     steps, and a round costs at most 2⌈(k−1)/2⌉ ≤ k = log2 L calls of
//     [Step]. Revealing w_r and w_{r+1} costs nothing: both are pebbles.
//
// After round p the pebbles are exactly the indices q > p whose pebble is
// already made; at most one of them has any given number i of trailing zero
// bits (i = 0…k), so the cursor keeps at most k+1 pebbles and ⌊(k−1)/2⌋
// walkers, each 32 bytes plus its index. In fact pebbles and walkers
// together never outnumber the k+1 pebbles of the setup (checked at every
// position for every L ≤ 2^24; the tests check L ≤ 2^16), so a saved state is at most 27 + 36(k+1)
// bytes: 783 for L = 2^20, 1,143 for L = 2^30. Which indices are held is a
// function of (L, p) alone ([expectedLayout]), which is how
// [Cursor.UnmarshalBinary] checks a saved state. Over the whole lane the
// walkers cost (k/2 − 1)·L + 1 steps, after the L steps of the setup pass.
//
// # Crash safety
//
// [Cursor.Next] advances the cursor before returning the coupon. A caller
// must persist the state ([Cursor.MarshalBinary] or [Cursor.AppendBinary])
// after Next returns and before it reveals w_i: a crash in between then
// skips coupon i, but a restored cursor never hands out a coupon twice.
//
// # Secrets
//
// Every value the cursor holds is a coupon not yet spent. The state lives
// behind a pointer so that printing a Cursor with fmt shows no value, and
// copies of a Cursor share (and advance) one state instead of reusing its
// coupons. A Cursor is not safe for concurrent use. The zero Cursor is
// empty: use [NewCursor] or [Cursor.UnmarshalBinary].
type Cursor struct {
	st *cursorState
}

// A pebble is a chain value and its index; index 0 marks an empty slot (no
// pebble or walker is ever at index 0).
type pebble struct {
	pos uint32
	val Value
}

type cursorState struct {
	tag      LaneTag
	length   uint32
	k        uint32 // log2 length
	position uint32 // the last round done (coupon returned), 0…length

	// pebbles[i] is the pebble whose index has exactly i trailing zero
	// bits; there is at most one (see the Cursor documentation).
	pebbles [31]pebble
	// walkers[j] is the walker of level j, 3 ≤ j ≤ k, while it is between
	// rounds (a level-2 walker starts and ends within one round).
	walkers [31]pebble

	// Diagnostics, not saved: Step calls in the last Next, the most in
	// any Next, and in all Next calls since this state was made or loaded.
	lastSteps, maxSteps uint32
	totalSteps          uint64
}

// NewCursor runs the setup pass, length calls of [Step] from seed (w_L),
// and returns a cursor positioned before coupon 1 together with the lane's
// anchor w_0. length must be a power of two from 2 to 2^30.
func NewCursor(tag LaneTag, length uint32, seed Value) (*Cursor, Value, error) {
	if err := checkLength(length); err != nil {
		return nil, Value{}, err
	}
	st := &cursorState{tag: tag, length: length, k: uint32(bits.TrailingZeros32(length))}
	w := seed
	st.pebbles[st.k] = pebble{pos: length, val: w}
	for i := length; i > 0; i-- {
		w = Step(&st.tag, i-1, &w)
		if i-1 != 0 && (i-1)&(i-2) == 0 { // a power of two
			st.pebbles[bits.TrailingZeros32(i-1)] = pebble{pos: i - 1, val: w}
		}
	}
	return &Cursor{st: st}, w, nil
}

// Next reveals the next coupon: its index i (1-based), its value w_i, and
// w_{i+1}, the key that binds request i, with hasNext false (and next zero)
// when i is the lane's last coupon. After the last coupon it returns
// ErrLaneExhausted.
//
// Next advances the cursor before it returns: the caller must persist the
// cursor's state (MarshalBinary) after Next returns and before revealing
// w_i, so that a crash can skip coupon i but a restored cursor never
// returns it again.
//
// Next calls [Step] at most log2 L times and does not allocate.
func (c *Cursor) Next() (i uint32, w Value, next Value, hasNext bool, err error) {
	if c.st == nil {
		return 0, Value{}, Value{}, false, fmt.Errorf("%w: cursor not initialized", ErrBadState)
	}
	return c.st.next()
}

func (s *cursorState) next() (uint32, Value, Value, bool, error) {
	if s.position >= s.length {
		return 0, Value{}, Value{}, false, ErrLaneExhausted
	}
	r := s.position + 1
	out := &s.pebbles[bits.TrailingZeros32(r)]
	if out.pos != r {
		return 0, Value{}, Value{}, false, errMissingPebble
	}
	w := out.val
	*out = pebble{}

	// Levels j = 2…k whose walker works this round: bit j−2 of
	// active, that is bits (j−1, j−2) of r−1 equal to (0, 1).
	x := r - 1
	active := x &^ (x >> 1) & (1<<(s.k-1) - 1)
	var steps uint32
	for active != 0 {
		j := uint32(bits.TrailingZeros32(active)) + 2
		active &= active - 1
		half := uint32(1) << (j - 1)
		a := x &^ (half<<1 - 1)
		b := a + half // the walker stops at b+1
		wk := &s.walkers[j]
		if x-a == half>>1 { // first working round: start from w_{a+2^j}
			top := &s.pebbles[bits.TrailingZeros32(b+half)]
			if top.pos != b+half {
				return 0, Value{}, Value{}, false, errMissingPebble
			}
			*wk = *top
		}
		for n := 0; n < 2 && wk.pos > b+1; n++ {
			wk.val = Step(&s.tag, wk.pos-1, &wk.val)
			wk.pos--
			steps++
			if d := wk.pos - b; d&(d-1) == 0 {
				s.pebbles[bits.TrailingZeros32(d)] = *wk
			}
		}
		if wk.pos == b+1 {
			*wk = pebble{}
		}
	}
	s.position = r
	s.lastSteps = steps
	s.maxSteps = max(s.maxSteps, steps)
	s.totalSteps += uint64(steps)

	if r == s.length {
		return r, w, Value{}, false, nil
	}
	nx := &s.pebbles[bits.TrailingZeros32(r+1)]
	if nx.pos != r+1 {
		return 0, Value{}, Value{}, false, errMissingPebble
	}
	return r, w, nx.val, true, nil
}

// errMissingPebble reports a state that breaks the traversal's invariant;
// a state made by NewCursor or accepted by UnmarshalBinary never does.
var errMissingPebble = fmt.Errorf("%w: missing pebble", ErrBadState)

// Position returns the index of the last coupon Next returned, 0 before the
// first.
func (c *Cursor) Position() uint32 {
	if c.st == nil {
		return 0
	}
	return c.st.position
}

// Remaining returns how many coupons Next has yet to return.
func (c *Cursor) Remaining() uint32 {
	if c.st == nil {
		return 0
	}
	return c.st.length - c.st.position
}

// Length returns the lane's length L.
func (c *Cursor) Length() uint32 {
	if c.st == nil {
		return 0
	}
	return c.st.length
}

// Tag returns the lane's tag.
func (c *Cursor) Tag() LaneTag {
	if c.st == nil {
		return LaneTag{}
	}
	return c.st.tag
}

// The saved state, all integers big-endian:
//
//	version   1 byte   cursorVersion
//	tag      16 bytes  the lane's tag
//	length    4 bytes  L
//	position  4 bytes  p, the last coupon returned (0…L)
//	pebbles   1 byte   n, the number of pebbles
//	walkers   1 byte   m, the number of walkers
//	n × (index 4 bytes ‖ value 32 bytes)  pebbles, by increasing index
//	m × (index 4 bytes ‖ value 32 bytes)  walkers, by increasing level
//
// n, m and every index are functions of (L, p) and must match them.
const (
	cursorVersion   = 1
	cursorHeaderLen = 1 + 16 + 4 + 4 + 1 + 1
	pebbleLen       = 4 + 32
	// maxStateLen bounds any state: L = 2^30 has at most 31 pebbles and
	// 14 walkers.
	maxStateLen = cursorHeaderLen + (31+14)*pebbleLen
)

// A layout lists which indices hold pebbles and walkers after a round.
type layout struct {
	pebbles [31]uint32 // by increasing index
	walkers [31]uint32 // by increasing level
	levels  [31]uint8  // the level of each walker
	n, m    int
}

// expectedLayout returns the indices held after round p of a lane of
// length 2^k (p ≤ 2^k), following the schedule of the Cursor
// documentation.
//
// A pebble at index q with i trailing zero bits is made at setup if q is a
// power of two; otherwise, with b = q − 2^i, by the walker of level
// tz(b)+1 in round b − 2^{i−1} (i ≥ 1) or round b (i = 0). It is held after
// round p while made ≤ p < q. For i ≥ 1 that puts b, a multiple of
// 2^{i+1}, in (p − 2^i, p + 2^{i−1}], which holds at most one; for i = 0,
// b = p. The level-j walker of block a is between rounds after round p when
// 2^{j−2} < p − a < 2^{j−1}, having made 2(p − a − 2^{j−2}) steps.
func expectedLayout(k, p uint32) layout {
	var l layout
	length := uint64(1) << k
	for i := range k + 1 {
		var q uint64
		switch {
		case uint64(p) < 1<<i:
			q = 1 << i
		case i == 0:
			if p%2 == 0 && uint64(p) < length {
				q = uint64(p) + 1
			}
		default:
			lo := uint64(p) - 1<<i
			b := (lo>>(i+1) + 1) << (i + 1)
			if b <= uint64(p)+1<<(i-1) {
				q = b + 1<<i
			}
		}
		if q != 0 && q <= length {
			l.pebbles[l.n] = uint32(q)
			l.n++
		}
	}
	// The indices were found by trailing zeros; sort them (at most 31).
	for x := 1; x < l.n; x++ {
		for y := x; y > 0 && l.pebbles[y-1] > l.pebbles[y]; y-- {
			l.pebbles[y-1], l.pebbles[y] = l.pebbles[y], l.pebbles[y-1]
		}
	}
	if p == 0 {
		return l
	}
	for j := uint32(3); j <= k; j++ {
		quarter := uint32(1) << (j - 2)
		a := (p - 1) &^ (quarter<<2 - 1)
		if d := p - a; d > quarter && d < 2*quarter {
			l.walkers[l.m] = a + 4*quarter - 2*(d-quarter)
			l.levels[l.m] = uint8(j)
			l.m++
		}
	}
	return l
}

// StateSize returns the size of the state MarshalBinary would return now.
func (c *Cursor) StateSize() int {
	if c.st == nil {
		return 0
	}
	n, m := c.st.counts()
	return cursorHeaderLen + (n+m)*pebbleLen
}

func (s *cursorState) counts() (n, m int) {
	for i := range s.pebbles {
		if s.pebbles[i].pos != 0 {
			n++
		}
		if s.walkers[i].pos != 0 {
			m++
		}
	}
	return n, m
}

// MarshalBinary returns the cursor's state, which holds secrets: store it
// as carefully as the lane's seed.
func (c *Cursor) MarshalBinary() ([]byte, error) {
	return c.AppendBinary(nil)
}

// AppendBinary appends the cursor's state, as MarshalBinary returns it, to
// b. It does not allocate when b has room.
func (c *Cursor) AppendBinary(b []byte) ([]byte, error) {
	if c.st == nil {
		return b, fmt.Errorf("%w: cursor not initialized", ErrBadState)
	}
	s := c.st
	n, m := s.counts()
	b = slices.Grow(b, cursorHeaderLen+(n+m)*pebbleLen)
	b = append(b, cursorVersion)
	b = append(b, s.tag[:]...)
	b = binary.BigEndian.AppendUint32(b, s.length)
	b = binary.BigEndian.AppendUint32(b, s.position)
	b = append(b, byte(n), byte(m))
	// Pebbles by increasing index. The slots go by trailing zeros, nearly
	// the same order, so an insertion sort has little to do.
	var order [len(s.pebbles)]uint8
	sorted := 0
	for i := range s.pebbles {
		q := s.pebbles[i].pos
		if q == 0 {
			continue
		}
		x := sorted
		for ; x > 0 && s.pebbles[order[x-1]].pos > q; x-- {
			order[x] = order[x-1]
		}
		order[x] = uint8(i)
		sorted++
	}
	for _, i := range order[:sorted] {
		p := &s.pebbles[i]
		b = binary.BigEndian.AppendUint32(b, p.pos)
		b = append(b, p.val[:]...)
	}
	for j := range s.walkers {
		if w := &s.walkers[j]; w.pos != 0 {
			b = binary.BigEndian.AppendUint32(b, w.pos)
			b = append(b, w.val[:]...)
		}
	}
	return b, nil
}

// UnmarshalBinary replaces the cursor's state with a saved one after
// checking it entirely: version, length, position, sizes and the index of
// every pebble and walker. Chain values cannot be checked without the
// seed. A malformed state gives an error wrapping ErrBadState and leaves
// the cursor unchanged.
func (c *Cursor) UnmarshalBinary(b []byte) error {
	if len(b) < cursorHeaderLen {
		return fmt.Errorf("%w: truncated: %d bytes, header is %d", ErrBadState, len(b), cursorHeaderLen)
	}
	if len(b) > maxStateLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadState, len(b), maxStateLen)
	}
	if b[0] != cursorVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrBadState, b[0], cursorVersion)
	}
	var s cursorState
	copy(s.tag[:], b[1:17])
	s.length = binary.BigEndian.Uint32(b[17:21])
	s.position = binary.BigEndian.Uint32(b[21:25])
	n, m := int(b[25]), int(b[26])
	if s.length < 2 || s.length > 1<<30 || s.length&(s.length-1) != 0 {
		return fmt.Errorf("%w: lane length %d is not a power of two from 2 to 2^30", ErrBadState, s.length)
	}
	s.k = uint32(bits.TrailingZeros32(s.length))
	if s.position > s.length {
		return fmt.Errorf("%w: position %d beyond lane length %d", ErrBadState, s.position, s.length)
	}
	l := expectedLayout(s.k, s.position)
	if n != l.n || m != l.m {
		return fmt.Errorf("%w: %d pebbles and %d walkers at position %d of %d, want %d and %d",
			ErrBadState, n, m, s.position, s.length, l.n, l.m)
	}
	if want := cursorHeaderLen + (n+m)*pebbleLen; len(b) != want {
		if len(b) < want {
			return fmt.Errorf("%w: truncated: %d bytes, want %d", ErrBadState, len(b), want)
		}
		return fmt.Errorf("%w: %d trailing bytes", ErrBadState, len(b)-want)
	}
	rest := b[cursorHeaderLen:]
	for x := range n {
		q := binary.BigEndian.Uint32(rest)
		if q != l.pebbles[x] {
			return fmt.Errorf("%w: pebble %d at index %d, want %d", ErrBadState, x, q, l.pebbles[x])
		}
		p := &s.pebbles[bits.TrailingZeros32(q)]
		p.pos = q
		copy(p.val[:], rest[4:pebbleLen])
		rest = rest[pebbleLen:]
	}
	for x := range m {
		q := binary.BigEndian.Uint32(rest)
		if q != l.walkers[x] {
			return fmt.Errorf("%w: walker %d at index %d, want %d", ErrBadState, x, q, l.walkers[x])
		}
		w := &s.walkers[l.levels[x]]
		w.pos = q
		copy(w.val[:], rest[4:pebbleLen])
		rest = rest[pebbleLen:]
	}
	if c.st == nil {
		c.st = new(cursorState)
	}
	*c.st = s
	return nil
}
