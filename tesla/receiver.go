package tesla

import (
	"cmp"
	"crypto/subtle"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Receiver defaults, used when the corresponding ReceiverConfig field is 0.
const (
	// DefaultMaxBuffered is the default bound on buffered packets.
	DefaultMaxBuffered = 1024
	// DefaultMaxSteps is the default bound on how many intervals a
	// disclosed key may be ahead of the last authenticated one (about
	// 0.4 ms of hashing).
	DefaultMaxSteps = 4096
)

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	// Commitment is the sender's K_0. It must have been authenticated out
	// of band (for example by a signature): everything rests on it.
	Commitment Key
	// Schedule is the sender's schedule.
	Schedule Schedule
	// MaxSkew bounds how far the sender's clock may be ahead of the
	// receiver's: the upper bound on the sender's time that RFC 4082 §3.3
	// obtains by loose time synchronization and §3.5 relies on. Zero
	// means the clocks are known to agree; negative is invalid.
	MaxSkew time.Duration
	// MaxBuffered bounds the packets buffered until their key is
	// disclosed; 0 means DefaultMaxBuffered. With MaxMessageSize, it bounds
	// the receiver's memory.
	MaxBuffered int
	// MaxSteps bounds the hashing one disclosed key may cause: a key more
	// than MaxSteps intervals ahead of the last authenticated key is
	// refused with ErrTooManySteps. A receiver that misses every disclosure
	// for longer than that must be bootstrapped again. 0 means
	// DefaultMaxSteps.
	MaxSteps uint64
	// Now is the receiver's clock; nil means time.Now.
	Now func() time.Time
}

// Authenticated is a message whose MAC verified under its disclosed
// interval key.
type Authenticated struct {
	// Interval is the interval the sender authenticated Message for.
	Interval uint64
	// Message is the payload; the receiver keeps no reference to it.
	Message []byte
}

// Rejected is a buffered packet dropped when its key was disclosed.
type Rejected struct {
	// Interval is the interval the packet claimed.
	Interval uint64
	// Message is the unauthenticated payload, for logging or evidence only.
	Message []byte
	// Err says why; it matches ErrBadMAC.
	Err error
}

// Result lists the buffered packets a disclosed key settled, in increasing
// interval order and, within an interval, in order of arrival.
type Result struct {
	// Authenticated holds the messages whose MAC verified.
	Authenticated []Authenticated
	// Rejected holds the packets whose MAC did not.
	Rejected []Rejected
}

// Receiver checks TESLA packets from one sender (RFC 4082 §3.5). It is safe
// for concurrent use.
//
// TESLA authenticates the origin and interval of a message, not its
// uniqueness: a packet received twice while safe is reported twice.
// Anyone can fill the buffer with packets whose MAC will fail; the buffer
// is bounded, and such packets are reported as Rejected when their key
// arrives.
type Receiver struct {
	sched       Schedule
	maxSkew     time.Duration
	maxBuffered int
	maxSteps    uint64
	now         func() time.Time

	mu        sync.Mutex
	lastIndex uint64 // index of the newest authenticated key
	lastKey   Key
	pending   []pending
	scratch   []pending
	mac       *macer
}

type pending struct {
	interval uint64
	mac      [MACSize]byte
	msg      []byte
	ok       bool
}

// NewReceiver returns a receiver that trusts c.Commitment.
func NewReceiver(c ReceiverConfig) (*Receiver, error) {
	if err := c.Schedule.Validate(); err != nil {
		return nil, err
	}
	if c.MaxSkew < 0 {
		return nil, fmt.Errorf("tesla: negative MaxSkew %v: %w", c.MaxSkew, ErrInvalidConfig)
	}
	if c.MaxBuffered < 0 {
		return nil, fmt.Errorf("tesla: negative MaxBuffered %d: %w", c.MaxBuffered, ErrInvalidConfig)
	}
	r := &Receiver{
		sched:       c.Schedule,
		maxSkew:     c.MaxSkew,
		maxBuffered: cmp.Or(c.MaxBuffered, DefaultMaxBuffered),
		maxSteps:    cmp.Or(c.MaxSteps, DefaultMaxSteps),
		now:         c.Now,
		lastKey:     c.Commitment,
		mac:         newMACer(),
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r, nil
}

// Known returns the newest authenticated key and its index; initially the
// commitment and 0. Disclosed keys are public.
func (r *Receiver) Known() (uint64, Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastIndex, r.lastKey
}

// Buffered returns the number of packets waiting for their key.
func (r *Receiver) Buffered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Receive processes packet p, which arrived now.
//
// First the key p discloses: if it is newer than the newest authenticated
// key, it is checked against that key with VerifyKey (ErrBadKey,
// ErrTooManySteps), becomes the newest, and settles every buffered packet
// of an interval up to its index: the Result lists them. A key equal in
// index to the newest must be equal to it (ErrBadKey); an older one is
// ignored.
//
// Then p itself is buffered, if it passes the checks of RFC 4082 §3.5: its
// interval key is not known yet (ErrKeyAlreadyDisclosed); its interval is
// one the sender can have reached by now + MaxSkew (ErrFromFuture); the
// sender cannot have disclosed its key yet, that is
// IntervalAt(now + MaxSkew) < p.Interval + Delay (ErrUnsafe); there is room
// (ErrBufferFull). A message over MaxMessageSize is refused with
// ErrMessageTooLarge before anything else.
//
// The Result is valid even when the error is not nil: a packet refused for
// itself may still have disclosed a valid key. p.Message is copied.
func (r *Receiver) Receive(p Packet) (Result, error) {
	if len(p.Message) > MaxMessageSize {
		return Result{}, fmt.Errorf("tesla: message of %d bytes, limit %d: %w", len(p.Message), MaxMessageSize, ErrMessageTooLarge)
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()

	var res Result
	switch {
	case p.DisclosedIndex > r.lastIndex:
		if err := VerifyKey(r.lastKey, r.lastIndex, p.DisclosedKey, p.DisclosedIndex, r.maxSteps); err != nil {
			return res, fmt.Errorf("tesla: key %d disclosed in interval %d, newest known %d: %w", p.DisclosedIndex, p.Interval, r.lastIndex, err)
		}
		r.lastIndex, r.lastKey = p.DisclosedIndex, p.DisclosedKey
		res = r.release()
	case p.DisclosedIndex == r.lastIndex:
		if subtle.ConstantTimeCompare(p.DisclosedKey[:], r.lastKey[:]) != 1 {
			return res, fmt.Errorf("tesla: key %d disclosed in interval %d differs from the known one: %w", p.DisclosedIndex, p.Interval, ErrBadKey)
		}
	}

	if p.Interval <= r.lastIndex {
		return res, fmt.Errorf("tesla: packet of interval %d, keys known up to %d: %w", p.Interval, r.lastIndex, ErrKeyAlreadyDisclosed)
	}
	// The latest interval the sender can be in.
	latest, err := r.sched.IntervalAt(now.Add(r.maxSkew))
	if err != nil {
		return res, fmt.Errorf("tesla: packet of interval %d before the sender's start: %w", p.Interval, ErrFromFuture)
	}
	if p.Interval > latest {
		return res, fmt.Errorf("tesla: packet of interval %d, sender at most in %d: %w", p.Interval, latest, ErrFromFuture)
	}
	if latest-p.Interval >= r.sched.Delay {
		return res, fmt.Errorf("tesla: packet of interval %d, sender may be in %d, delay %d: %w", p.Interval, latest, r.sched.Delay, ErrUnsafe)
	}
	if len(r.pending) >= r.maxBuffered {
		return res, fmt.Errorf("tesla: %d packets buffered: %w", len(r.pending), ErrBufferFull)
	}
	r.pending = append(r.pending, pending{
		interval: p.Interval,
		mac:      p.MAC,
		msg:      append([]byte{}, p.Message...),
	})
	return res, nil
}

// release settles the buffered packets whose interval is at most
// r.lastIndex. Their keys are walked down from r.lastKey once, so the cost
// is at most the number of steps the new key advanced plus one MAC per
// packet. r.mu is held.
func (r *Receiver) release() Result {
	rel := r.scratch[:0]
	kept := r.pending[:0]
	for _, e := range r.pending {
		if e.interval <= r.lastIndex {
			rel = append(rel, e)
		} else {
			kept = append(kept, e)
		}
	}
	clear(r.pending[len(kept):])
	r.pending = kept
	if len(rel) == 0 {
		r.scratch = rel
		return Result{}
	}
	slices.SortStableFunc(rel, func(a, b pending) int { return cmp.Compare(a.interval, b.interval) })

	k, idx := r.lastKey, r.lastIndex
	for i := len(rel) - 1; i >= 0; i-- {
		e := &rel[i]
		k = fN(k, idx-e.interval)
		idx = e.interval
		e.ok = r.mac.verify(k, e.msg, e.mac)
	}

	var res Result
	for _, e := range rel {
		if e.ok {
			res.Authenticated = append(res.Authenticated, Authenticated{Interval: e.interval, Message: e.msg})
		} else {
			res.Rejected = append(res.Rejected, Rejected{
				Interval: e.interval,
				Message:  e.msg,
				Err:      fmt.Errorf("tesla: packet of interval %d: %w", e.interval, ErrBadMAC),
			})
		}
	}
	clear(rel)
	r.scratch = rel[:0]
	return res
}
