package tesla

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Sender authenticates messages with the key of the current interval and
// discloses keys Delay intervals late (RFC 4082 §3.4). It is safe for
// concurrent use.
type Sender struct {
	chain *Chain
	sched Schedule
	now   func() time.Time

	mu  sync.Mutex
	mac *macer
}

// NewSender returns a sender for chain on schedule s. now is its clock;
// nil means time.Now. The chain's commitment K_0 must reach receivers
// authentically (for example signed) before they can use the packets.
func NewSender(chain *Chain, s Schedule, now func() time.Time) (*Sender, error) {
	if chain == nil {
		return nil, errors.New("tesla: nil chain")
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Sender{chain: chain, sched: s, now: now, mac: newMACer()}, nil
}

// Final returns the chain's last key K_n and n once the schedule lets it
// be disclosed at now: from the start of interval n+d. Its disclosure lets
// receivers check the packets of the chain's last d intervals, for which
// the chain itself discloses no key.
func (s *Sender) Final(now time.Time) (uint64, Key, bool) {
	n := s.chain.Len()
	if now.Before(s.sched.Start(n + s.sched.Delay)) {
		return 0, Key{}, false
	}
	k, err := s.chain.Key(n)
	return n, k, err == nil
}

// Schedule returns the sender's schedule.
func (s *Sender) Schedule() Schedule { return s.sched }

// Commitment returns the chain's commitment K_0.
func (s *Sender) Commitment() Key { return s.chain.Commitment() }

// Authenticate builds the packet for msg in the current interval i: its
// MAC is HMAC-SHA256(F'(K_i), msg)[:16] and it discloses K_{i-d}, or the
// commitment K_0 with index 0 while i ≤ d (nothing to disclose yet, and K_0
// is public). It fails with ErrBeforeStart or ErrCommitmentInterval before
// interval 1, ErrChainExhausted after interval Len() of the chain, and
// ErrMessageTooLarge. The packet's Message is msg itself, not a copy.
func (s *Sender) Authenticate(msg []byte) (Packet, error) {
	if len(msg) > MaxMessageSize {
		return Packet{}, fmt.Errorf("tesla: message of %d bytes, limit %d: %w", len(msg), MaxMessageSize, ErrMessageTooLarge)
	}
	i, err := s.sched.IntervalAt(s.now())
	if err != nil {
		return Packet{}, err
	}
	if i == 0 {
		return Packet{}, ErrCommitmentInterval
	}
	if i > s.chain.Len() {
		return Packet{}, fmt.Errorf("tesla: interval %d past the chain's last key %d: %w", i, s.chain.Len(), ErrChainExhausted)
	}
	k, err := s.chain.Key(i)
	if err != nil {
		return Packet{}, err
	}
	p := Packet{Interval: i, Message: msg}
	if i > s.sched.Delay {
		p.DisclosedIndex = i - s.sched.Delay
		if p.DisclosedKey, err = s.chain.Key(p.DisclosedIndex); err != nil {
			return Packet{}, err
		}
	} else {
		p.DisclosedKey = s.chain.Commitment()
	}
	s.mu.Lock()
	p.MAC = s.mac.mac(k, msg)
	s.mu.Unlock()
	return p, nil
}
