package coupons

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
)

// A Cursor is the spender's side of one lane: it reveals w_1, w_2, …, w_L
// in order from the lane's seed while keeping O(log L) chain values and
// hashing at most log2 L times per coupon, in the worst case. A cursor on a
// granted portion reveals w_1 … w_c from w_c alone: see [NewPortionCursor].
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
	tag  LaneTag
	lane uint32 // L, the lane's length
	end  uint32 // c, the last coupon this cursor may reveal (L for a whole lane)

	// The current segment, coupons offset+1 … offset+length, length =
	// 2^k, run by the fractal traversal with indices relative to offset.
	offset   uint32
	length   uint32
	k        uint32 // log2 length
	position uint32 // the last round done in the segment, 0…length

	// pebbles[i] is the pebble whose index has exactly i trailing zero
	// bits; there is at most one (see the Cursor documentation).
	pebbles [31]pebble
	// walkers[j] is the walker of level j, 3 ≤ j ≤ k, while it is between
	// rounds (a level-2 walker starts and ends within one round).
	walkers [31]pebble

	// A portion only: the next segment's setup, indices relative to its
	// start offset+length. prep[i] is its pebble at 2^i; prepW the walker
	// that makes them, one step per round (pos 0: none).
	prep  [31]pebble
	prepW pebble
	// tops[0…ntops) are the top values of the segments after the next one,
	// the nearest last.
	tops  [31]Value
	ntops uint32

	// Diagnostics, not saved: Step calls in the last Next, the most in
	// any Next, and in all Next calls since this state was made or loaded.
	lastSteps, maxSteps uint32
	totalSteps          uint64
}

// NewCursor runs the setup pass, length calls of [Step] from seed (w_L),
// and returns a cursor positioned before coupon 1 together with the lane's
// anchor w_0. length must be a power of two from 2 to 2^30.
func NewCursor(tag LaneTag, length uint32, seed Value) (*Cursor, Value, error) {
	return NewPortionCursor(tag, length, length, seed)
}

// NewPortionCursor returns a cursor over the portion 1…end of a lane of
// length L = length, from top = w_end, together with the lane's anchor
// w_0: the setup pass is end calls of [Step]. The cursor reveals w_1 …
// w_end and then fails with [ErrPortionUsedUp]; coupon end comes without a
// next value (hasNext false), as w_{end+1} is not known. end must be in
// 1…length; with end = length it is [NewCursor].
//
// # Portions
//
// The portion (0, c] is split by the binary expansion of c into segments
// of decreasing powers of two, 2^{k_0} + 2^{k_1} + … = c; the fractal
// traversal runs on the current segment with an index offset. The setup
// pass keeps the first segment's pebbles and the top value of every later
// segment. While a segment of length 2^k runs, a preparer walks the next
// segment (2^{k'} < 2^k values) from its top down, one step per round,
// leaving the pebbles its traversal starts with, so switching segments
// costs nothing. A coupon costs at most k + 1 ≤ ⌈log2 c⌉ ≤ log2 L calls of
// [Step]; the state is at most the current segment's k+1 values, the next
// one's k'+2 and one top per later segment: under 3·log2 c + 3 values.
func NewPortionCursor(tag LaneTag, length, end uint32, top Value) (*Cursor, Value, error) {
	if err := checkLength(length); err != nil {
		return nil, Value{}, err
	}
	if end < 1 || end > length {
		return nil, Value{}, fmt.Errorf("%w: portion end %d of a lane of %d", ErrBadPortion, end, length)
	}
	st := &cursorState{tag: tag, lane: length, end: end}
	st.k = uint32(bits.Len32(end)) - 1
	st.length = 1 << st.k
	w := top
	boundary := end // the next segment end whose top is kept, above the first segment
	for q := end; ; q-- {
		if q == boundary && q > st.length {
			st.tops[st.ntops] = w
			st.ntops++
			boundary = q & (q - 1)
		}
		if q != 0 && q <= st.length && q&(q-1) == 0 {
			st.pebbles[bits.TrailingZeros32(q)] = pebble{pos: q, val: w}
		}
		if q == 0 {
			break
		}
		w = Step(&st.tag, q-1, &w)
	}
	st.startPrep()
	return &Cursor{st: st}, w, nil
}

// startPrep starts the preparer of the segment after the current one,
// from the nearest kept top, if there is such a segment.
func (s *cursorState) startPrep() {
	start := s.offset + s.length
	if start >= s.end || s.ntops == 0 {
		return
	}
	k := uint32(bits.Len32(s.end-start)) - 1
	s.ntops--
	top := s.tops[s.ntops]
	s.tops[s.ntops] = Value{}
	s.prep[k] = pebble{pos: 1 << k, val: top}
	if k > 0 {
		s.prepW = pebble{pos: 1 << k, val: top}
	}
}

// nextSegment moves to the segment after the current one, whose pebbles
// the preparer has made.
func (s *cursorState) nextSegment() {
	s.offset += s.length
	s.k = uint32(bits.Len32(s.end-s.offset)) - 1
	s.length, s.position = 1<<s.k, 0
	s.pebbles, s.prep = s.prep, [31]pebble{}
	s.walkers, s.prepW = [31]pebble{}, pebble{}
	s.startPrep()
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
		if s.end < s.lane {
			return 0, Value{}, Value{}, false, ErrPortionUsedUp
		}
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
	var active uint32
	if s.k >= 2 {
		active = x &^ (x >> 1) & (1<<(s.k-1) - 1)
	}
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
			wk.val = Step(&s.tag, s.offset+wk.pos-1, &wk.val)
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
	// A portion: one step of the next segment's setup.
	if pw := &s.prepW; pw.pos > 1 {
		pw.val = Step(&s.tag, s.offset+s.length+pw.pos-1, &pw.val)
		pw.pos--
		steps++
		if pw.pos&(pw.pos-1) == 0 {
			s.prep[bits.TrailingZeros32(pw.pos)] = *pw
		}
		if pw.pos == 1 {
			*pw = pebble{}
		}
	}
	s.position = r
	s.lastSteps = steps
	s.maxSteps = max(s.maxSteps, steps)
	s.totalSteps += uint64(steps)

	abs := s.offset + r
	if abs == s.end {
		return abs, w, Value{}, false, nil
	}
	if r == s.length {
		// The segment is done: the next one starts with the pebbles the
		// preparer made, w_{abs+1} first.
		if s.prep[0].pos != 1 {
			return 0, Value{}, Value{}, false, errMissingPebble
		}
		nx := s.prep[0].val
		s.nextSegment()
		return abs, w, nx, true, nil
	}
	nx := &s.pebbles[bits.TrailingZeros32(r+1)]
	if nx.pos != r+1 {
		return 0, Value{}, Value{}, false, errMissingPebble
	}
	return abs, w, nx.val, true, nil
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
	return c.st.offset + c.st.position
}

// Remaining returns how many coupons Next has yet to return.
func (c *Cursor) Remaining() uint32 {
	if c.st == nil {
		return 0
	}
	return c.st.end - c.st.offset - c.st.position
}

// Length returns the lane's length L.
func (c *Cursor) Length() uint32 {
	if c.st == nil {
		return 0
	}
	return c.st.lane
}

// End returns the last coupon the cursor may reveal: the portion's end c,
// or L for a whole lane.
func (c *Cursor) End() uint32 {
	if c.st == nil {
		return 0
	}
	return c.st.end
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
//
// A portion (end c < L) is saved as version 2:
//
//	version   1 byte   portionVersion
//	tag      16 bytes  the lane's tag
//	length    4 bytes  L
//	end       4 bytes  c, 1 ≤ c < L
//	position  4 bytes  p, the last coupon returned (0…c)
//	values    1 byte   n
//	n × (index 4 bytes ‖ value 32 bytes)
//
// with absolute chain indices, in this order: the current segment's
// pebbles by increasing index, its walkers by increasing level, the next
// segment's pebbles by increasing index, the preparer's walker when it is
// not on one of them, the later segments' tops by increasing index. n and
// every index are functions of (c, p) ([newPortionLayout]) and must match.
const (
	cursorVersion   = 1
	cursorHeaderLen = 1 + 16 + 4 + 4 + 1 + 1
	pebbleLen       = 4 + 32
	// maxStateLen bounds any state: L = 2^30 has at most 31 pebbles and
	// 14 walkers; a portion at most 31 + 14 + 31 + 1 + 31 values.
	maxStateLen = portionHeaderLen + maxPortionValues*pebbleLen

	portionVersion   = 2
	portionHeaderLen = 1 + 16 + 4 + 4 + 4 + 1
	maxPortionValues = 31 + 14 + 31 + 1 + 31
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
	if c.st.end < c.st.lane {
		l := newPortionLayout(c.st.end, c.st.offset+c.st.position)
		return portionHeaderLen + l.n*pebbleLen
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
	if s.end < s.lane {
		return s.appendPortion(b), nil
	}
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
	if len(b) > 0 && b[0] == portionVersion {
		s, err := unmarshalPortion(b)
		if err != nil {
			return err
		}
		if c.st == nil {
			c.st = new(cursorState)
		}
		*c.st = *s
		return nil
	}
	if len(b) < cursorHeaderLen {
		return fmt.Errorf("%w: truncated: %d bytes, header is %d", ErrBadState, len(b), cursorHeaderLen)
	}
	if len(b) > cursorHeaderLen+(31+14)*pebbleLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadState, len(b), cursorHeaderLen+(31+14)*pebbleLen)
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
	s.lane, s.end = s.length, s.length
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

// A portionLayout lists what a portion's cursor holds after coupon p: the
// current segment (offset, k) at round rel with its fractal layout, the
// next segment's preparer and the later segments' tops.
type portionLayout struct {
	offset, k, rel uint32
	frac           layout
	next, k2       uint32     // the next segment's start (0: none) and log2 length
	prep           [31]uint32 // its pebbles, relative to next, increasing
	np             int
	prepW          uint32     // the preparer's walker, relative to next (0: none)
	tops           [31]uint32 // absolute, increasing
	nt             int
	n              int // values saved
}

// segmentAt returns the segment of the portion (0, end] holding coupon
// p+1, or the last segment when p = end.
func segmentAt(end, p uint32) (offset, k uint32) {
	if p >= end {
		k = uint32(bits.TrailingZeros32(end))
		return end - 1<<k, k
	}
	for {
		k = uint32(bits.Len32(end-offset)) - 1
		if offset+1<<k > p {
			return offset, k
		}
		offset += 1 << k
	}
}

// newPortionLayout returns the layout after coupon p of the portion
// (0, end] (end ≥ 1, p ≤ end), following NewPortionCursor.
func newPortionLayout(end, p uint32) portionLayout {
	var l portionLayout
	l.offset, l.k = segmentAt(end, p)
	l.rel = p - l.offset
	l.frac = expectedLayout(l.k, l.rel)
	l.n = l.frac.n + l.frac.m
	if p >= end || l.offset+1<<l.k >= end {
		return l
	}
	l.next = l.offset + 1<<l.k
	l.k2 = uint32(bits.Len32(end-l.next)) - 1
	wpos := uint32(1)<<l.k2 - min(l.rel, 1<<l.k2-1)
	for i := range l.k2 + 1 {
		if 1<<i >= wpos {
			l.prep[l.np] = 1 << i
			l.np++
		}
	}
	l.n += l.np
	if wpos > 1 {
		l.prepW = wpos
		if wpos&(wpos-1) != 0 {
			l.n++
		}
	}
	for b := l.next + 1<<l.k2; b < end; {
		b += 1 << (bits.Len32(end-b) - 1)
		l.tops[l.nt] = b
		l.nt++
	}
	l.n += l.nt
	return l
}

// appendPortion appends a portion's state (version 2).
func (s *cursorState) appendPortion(b []byte) []byte {
	p := s.offset + s.position
	l := newPortionLayout(s.end, p)
	b = slices.Grow(b, portionHeaderLen+l.n*pebbleLen)
	b = append(b, portionVersion)
	b = append(b, s.tag[:]...)
	b = binary.BigEndian.AppendUint32(b, s.lane)
	b = binary.BigEndian.AppendUint32(b, s.end)
	b = binary.BigEndian.AppendUint32(b, p)
	b = append(b, byte(l.n))
	put := func(q uint32, v *Value) {
		b = binary.BigEndian.AppendUint32(b, q)
		b = append(b, v[:]...)
	}
	for _, q := range l.frac.pebbles[:l.frac.n] {
		put(s.offset+q, &s.pebbles[bits.TrailingZeros32(q)].val)
	}
	for x := range l.frac.m {
		put(s.offset+l.frac.walkers[x], &s.walkers[l.frac.levels[x]].val)
	}
	for _, q := range l.prep[:l.np] {
		put(l.next+q, &s.prep[bits.TrailingZeros32(q)].val)
	}
	if l.prepW > 1 && l.prepW&(l.prepW-1) != 0 {
		put(l.next+l.prepW, &s.prepW.val)
	}
	for x, q := range l.tops[:l.nt] {
		put(q, &s.tops[l.nt-1-x])
	}
	return b
}

// unmarshalPortion checks and loads a version 2 state.
func unmarshalPortion(b []byte) (*cursorState, error) {
	if len(b) < portionHeaderLen {
		return nil, fmt.Errorf("%w: truncated: %d bytes, header is %d", ErrBadState, len(b), portionHeaderLen)
	}
	if len(b) > maxStateLen {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadState, len(b), maxStateLen)
	}
	s := new(cursorState)
	copy(s.tag[:], b[1:17])
	s.lane = binary.BigEndian.Uint32(b[17:21])
	s.end = binary.BigEndian.Uint32(b[21:25])
	p := binary.BigEndian.Uint32(b[25:29])
	n := int(b[29])
	if s.lane < 2 || s.lane > 1<<30 || s.lane&(s.lane-1) != 0 {
		return nil, fmt.Errorf("%w: lane length %d is not a power of two from 2 to 2^30", ErrBadState, s.lane)
	}
	if s.end < 1 || s.end >= s.lane {
		return nil, fmt.Errorf("%w: portion end %d of a lane of %d (a whole lane is version %d)", ErrBadState, s.end, s.lane, cursorVersion)
	}
	if p > s.end {
		return nil, fmt.Errorf("%w: position %d beyond the portion's end %d", ErrBadState, p, s.end)
	}
	l := newPortionLayout(s.end, p)
	if n != l.n {
		return nil, fmt.Errorf("%w: %d values after coupon %d of portion %d, want %d", ErrBadState, n, p, s.end, l.n)
	}
	if want := portionHeaderLen + n*pebbleLen; len(b) != want {
		if len(b) < want {
			return nil, fmt.Errorf("%w: truncated: %d bytes, want %d", ErrBadState, len(b), want)
		}
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadState, len(b)-want)
	}
	rest := b[portionHeaderLen:]
	var bad error
	take := func(want uint32, dst *Value) {
		q := binary.BigEndian.Uint32(rest)
		if bad == nil && q != want {
			bad = fmt.Errorf("%w: a value at index %d, want %d", ErrBadState, q, want)
		}
		copy(dst[:], rest[4:pebbleLen])
		rest = rest[pebbleLen:]
	}
	s.offset, s.k, s.length, s.position = l.offset, l.k, 1<<l.k, l.rel
	for _, q := range l.frac.pebbles[:l.frac.n] {
		pb := &s.pebbles[bits.TrailingZeros32(q)]
		pb.pos = q
		take(l.offset+q, &pb.val)
	}
	for x := range l.frac.m {
		w := &s.walkers[l.frac.levels[x]]
		w.pos = l.frac.walkers[x]
		take(l.offset+w.pos, &w.val)
	}
	for _, q := range l.prep[:l.np] {
		pb := &s.prep[bits.TrailingZeros32(q)]
		pb.pos = q
		take(l.next+q, &pb.val)
	}
	if l.prepW > 1 {
		s.prepW.pos = l.prepW
		if l.prepW&(l.prepW-1) != 0 {
			take(l.next+l.prepW, &s.prepW.val)
		} else {
			s.prepW.val = s.prep[bits.TrailingZeros32(l.prepW)].val
		}
	}
	s.ntops = uint32(l.nt)
	for x, q := range l.tops[:l.nt] {
		take(q, &s.tops[l.nt-1-x])
	}
	if bad != nil {
		return nil, bad
	}
	return s, nil
}

// NewCursorAt returns the cursor of the portion 1…end (end = length: the
// whole lane, top its seed) of a lane of length L = length from top =
// w_end, positioned after coupon position (0…end): its next coupon is
// position+1. It walks once from end down to position+1 and holds exactly
// the state a cursor made by NewPortionCursor holds after position calls
// of Next. It is how an owner takes back a lane delegated up to position:
// its next payment is coupon position+1.
func NewCursorAt(tag LaneTag, length, end uint32, top Value, position uint32) (*Cursor, error) {
	if err := checkLength(length); err != nil {
		return nil, err
	}
	if end < 1 || end > length || position > end {
		return nil, fmt.Errorf("%w: position %d of a portion of %d of a lane of %d", ErrBadPortion, position, end, length)
	}
	// The state is built as its saved form, then loaded: one code path
	// places the values, and the layout is checked on the way.
	var b []byte
	var l layout
	var pl portionLayout
	var idx []uint32
	if end == length {
		k := uint32(bits.TrailingZeros32(length))
		l = expectedLayout(k, position)
		idx = append(append(idx, l.pebbles[:l.n]...), l.walkers[:l.m]...)
		b = append(b, cursorVersion)
		b = append(b, tag[:]...)
		b = binary.BigEndian.AppendUint32(b, length)
		b = binary.BigEndian.AppendUint32(b, position)
		b = append(b, byte(l.n), byte(l.m))
	} else {
		pl = newPortionLayout(end, position)
		for _, q := range pl.frac.pebbles[:pl.frac.n] {
			idx = append(idx, pl.offset+q)
		}
		for _, q := range pl.frac.walkers[:pl.frac.m] {
			idx = append(idx, pl.offset+q)
		}
		for _, q := range pl.prep[:pl.np] {
			idx = append(idx, pl.next+q)
		}
		if pl.prepW > 1 && pl.prepW&(pl.prepW-1) != 0 {
			idx = append(idx, pl.next+pl.prepW)
		}
		idx = append(idx, pl.tops[:pl.nt]...)
		b = append(b, portionVersion)
		b = append(b, tag[:]...)
		b = binary.BigEndian.AppendUint32(b, length)
		b = binary.BigEndian.AppendUint32(b, end)
		b = binary.BigEndian.AppendUint32(b, position)
		b = append(b, byte(len(idx)))
	}
	// One walk down from w_end visits every index, highest first.
	order := make([]int, len(idx))
	for x := range order {
		order[x] = x
	}
	slices.SortFunc(order, func(x, y int) int { return int(idx[y]) - int(idx[x]) })
	vals := make([]Value, len(idx))
	w, q := top, end
	for _, x := range order {
		w = Walk(&tag, q, w, idx[x])
		q = idx[x]
		vals[x] = w
	}
	for x, i := range idx {
		b = binary.BigEndian.AppendUint32(b, i)
		b = append(b, vals[x][:]...)
	}
	c := new(Cursor)
	if err := c.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	clear(b)
	clear(vals)
	return c, nil
}
