package store

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// Memory is an in-process store for tests and single-process demos. It
// loses everything when the process ends.
type Memory struct {
	mu       sync.Mutex
	lanes    map[[36]byte]*memLane // by pointer: an Advance writes in place, without allocating
	grants   map[[32]byte]int64
	proofs   map[[36]byte][][32]byte
	redeemed map[[36]byte]uint32
	dirty    map[[36]byte]coupons.LaneID
	queue    map[[36]byte]queued // the dirty lanes' places in the order
	refused  map[[36]byte]Refusal
	closed   bool
	id       string
}

// memLane is a lane of a memory store.
type memLane struct {
	rec   Record
	dirty bool // in Memory.dirty, so that an Advance looks up one map, not two
}

// NewMemory returns an empty memory store.
func NewMemory() *Memory {
	return &Memory{lanes: map[[36]byte]*memLane{}, grants: map[[32]byte]int64{}, proofs: map[[36]byte][][32]byte{},
		redeemed: map[[36]byte]uint32{}, dirty: map[[36]byte]coupons.LaneID{}, queue: map[[36]byte]queued{},
		refused: map[[36]byte]Refusal{}, id: newID()}
}

// ID implements Store: a memory store is its own spent state, forgotten
// with it.
func (m *Memory) ID(context.Context) (string, error) { return m.id, nil }

// SetProof implements Store.
func (m *Memory) SetProof(_ context.Context, id coupons.LaneID, proof [][32]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(proof) > MaxProof {
		return fmt.Errorf("store: proof of %d hashes", len(proof))
	}
	m.proofs[Key(id)] = append([][32]byte(nil), proof...)
	return nil
}

// Pending implements Store.
func (m *Memory) Pending(_ context.Context, now time.Time, limit int) ([]Pending, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	type due struct {
		k [36]byte
		q queued
	}
	var list []due
	cutoff := now.UnixNano()
	for k := range m.dirty {
		if m.redeemed[k] >= m.last(k) {
			m.undirty(k)
			continue
		}
		if q := m.queue[k]; q.due <= cutoff {
			list = append(list, due{k, q})
		}
	}
	slices.SortFunc(list, func(a, b due) int {
		if c := cmp.Compare(a.q.due, b.q.due); c != 0 {
			return c
		}
		return bytes.Compare(a.k[:], b.k[:])
	})
	var out []Pending
	for _, d := range list[:min(len(list), max(limit, 0))] {
		r := &m.lanes[d.k].rec
		out = append(out, Pending{ID: m.dirty[d.k], Index: r.State.Last, Value: r.State.LastValue, Redeemed: m.redeemed[d.k],
			Anchor: r.Meta.Anchor, Proof: m.proofs[d.k], Tries: d.q.tries})
	}
	return out, nil
}

// last is the position of lane k (0 when it is not stored).
func (m *Memory) last(k [36]byte) uint32 {
	if l := m.lanes[k]; l != nil {
		return l.rec.State.Last
	}
	return 0
}

func (m *Memory) undirty(k [36]byte) {
	if l := m.lanes[k]; l != nil {
		l.dirty = false
	}
	delete(m.dirty, k)
	delete(m.queue, k)
}

// Redeemed implements Store.
func (m *Memory) Redeemed(_ context.Context, id coupons.LaneID, index uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	k := Key(id)
	if index > m.redeemed[k] {
		m.redeemed[k] = index
	}
	delete(m.refused, k)
	if m.redeemed[k] >= m.last(k) {
		m.undirty(k)
	} else if _, ok := m.dirty[k]; ok {
		m.queue[k] = queued{due: time.Now().UnixNano()}
	}
	return nil
}

// Postpone implements Store.
func (m *Memory) Postpone(_ context.Context, id coupons.LaneID, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	k := Key(id)
	if q, ok := m.queue[k]; ok {
		m.queue[k] = queued{due: until.UnixNano(), tries: q.tries + 1}
	}
	return nil
}

// Refuse implements Store.
func (m *Memory) Refuse(_ context.Context, r Refusal) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	k := Key(r.ID)
	back, err := decodeRefusal(k[:], encodeRefusal(r)) // cut as the other stores cut
	if err != nil {
		return err
	}
	m.refused[k] = back
	m.undirty(k)
	return nil
}

// Refusals implements Store.
func (m *Memory) Refusals(_ context.Context, limit int) ([]Refusal, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	keys := make([][36]byte, 0, len(m.refused))
	for k := range m.refused {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [36]byte) int { return bytes.Compare(a[:], b[:]) })
	var out []Refusal
	for _, k := range keys[:min(len(keys), max(limit, 0))] {
		out = append(out, m.refused[k])
	}
	return out, nil
}

// Open implements Store.
func (m *Memory) Open(_ context.Context, id coupons.LaneID, first Record, proof ...[32]byte) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Record{}, ErrClosed
	}
	if len(proof) > MaxProof {
		return Record{}, fmt.Errorf("store: proof of %d hashes", len(proof))
	}
	k := Key(id)
	if _, ok := m.proofs[k]; !ok && len(proof) > 0 {
		m.proofs[k] = append([][32]byte(nil), proof...)
	}
	if l, ok := m.lanes[k]; ok {
		return l.rec, nil
	}
	m.lanes[k] = &memLane{rec: first}
	return first, nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, id coupons.LaneID) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Record{}, ErrClosed
	}
	l, ok := m.lanes[Key(id)]
	if !ok {
		return Record{}, ErrNotFound
	}
	return l.rec, nil
}

// Advance implements Store.
func (m *Memory) Advance(_ context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next Record, charge int64) error {
	return m.advance(id, prevLast, prevCredit, next, charge, false)
}

// Reopen implements Store.
func (m *Memory) Reopen(_ context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next Record) error {
	return m.advance(id, prevLast, prevCredit, next, 0, true)
}

func (m *Memory) advance(id coupons.LaneID, prevLast, prevCredit uint32, next Record, charge int64, reopen bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	k := Key(id)
	l, ok := m.lanes[k]
	if !ok {
		return ErrNotFound
	}
	cur := &l.rec
	if err := checkWriteRecord(&cur.Meta, &next.Meta, reopen); err != nil {
		return err
	}
	if cur.State.Last != prevLast || cur.Credit != prevCredit {
		return fmt.Errorf("%w: at %d (credit %d), expected %d (credit %d)", ErrConflict, cur.State.Last, cur.Credit, prevLast, prevCredit)
	}
	if len(next.Meta.Certs) > MaxCerts || len(next.Meta.Keys) > MaxKeys {
		return ErrTooManyPrincipals
	}
	if next.Meta.Cap > 0 && charge > 0 {
		total, err := coupons.ChargeCap(m.grants[next.Meta.Grant], next.Meta.Cap, charge)
		if err != nil {
			return err
		}
		m.grants[next.Meta.Grant] = total
	}
	*cur = next
	if !l.dirty && next.State.Last > m.redeemed[k] {
		m.dirty[k], l.dirty = id, true
		m.queue[k] = queued{due: time.Now().UnixNano()}
	}
	return nil
}

// MarkRevoked implements Store.
func (m *Memory) MarkRevoked(_ context.Context, id coupons.LaneID, certs [][32]byte, keys []spki.KeyHash) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	k := Key(id)
	l, ok := m.lanes[k]
	if !ok {
		return ErrNotFound
	}
	cur := &l.rec
	if len(certs) == 0 || !cur.Meta.SamePrincipals(certs, keys) {
		return fmt.Errorf("%w: the lane holds other principals", ErrConflict)
	}
	cur.Meta.Revoked = true
	return nil
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
