package store

import (
	"context"
	"fmt"
	"sync"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// Memory is an in-process store for tests and single-process demos. It
// loses everything when the process ends.
type Memory struct {
	mu       sync.Mutex
	lanes    map[[36]byte]Record
	grants   map[[32]byte]int64
	proofs   map[[36]byte][][32]byte
	redeemed map[[36]byte]uint32
	dirty    map[[36]byte]coupons.LaneID
	closed   bool
	id       string
}

// NewMemory returns an empty memory store.
func NewMemory() *Memory {
	return &Memory{lanes: map[[36]byte]Record{}, grants: map[[32]byte]int64{}, proofs: map[[36]byte][][32]byte{},
		redeemed: map[[36]byte]uint32{}, dirty: map[[36]byte]coupons.LaneID{}, id: newID()}
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
func (m *Memory) Pending(_ context.Context, limit int) ([]Pending, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	var out []Pending
	for k, id := range m.dirty {
		if len(out) >= limit {
			break
		}
		r := m.lanes[k]
		if m.redeemed[k] >= r.State.Last {
			delete(m.dirty, k)
			continue
		}
		out = append(out, Pending{ID: id, Index: r.State.Last, Value: r.State.LastValue, Redeemed: m.redeemed[k], Anchor: r.Meta.Anchor, Proof: m.proofs[k]})
	}
	return out, nil
}

// Redeemed implements Store.
func (m *Memory) Redeemed(_ context.Context, id coupons.LaneID, index uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := Key(id)
	if index > m.redeemed[k] {
		m.redeemed[k] = index
	}
	if m.redeemed[k] >= m.lanes[k].State.Last {
		delete(m.dirty, k)
	}
	return nil
}

// Open implements Store.
func (m *Memory) Open(_ context.Context, id coupons.LaneID, first Record) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Record{}, ErrClosed
	}
	k := Key(id)
	if r, ok := m.lanes[k]; ok {
		return r, nil
	}
	r := first
	m.lanes[k] = r
	return r, nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, id coupons.LaneID) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Record{}, ErrClosed
	}
	r, ok := m.lanes[Key(id)]
	if !ok {
		return Record{}, ErrNotFound
	}
	return r, nil
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
	cur, ok := m.lanes[k]
	if !ok {
		return ErrNotFound
	}
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
	m.lanes[k] = next
	if next.State.Last > m.redeemed[k] {
		m.dirty[k] = id
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
	cur, ok := m.lanes[k]
	if !ok {
		return ErrNotFound
	}
	if len(certs) == 0 || !cur.Meta.SamePrincipals(certs, keys) {
		return fmt.Errorf("%w: the lane holds other principals", ErrConflict)
	}
	cur.Meta.Revoked = true
	m.lanes[k] = cur
	return nil
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
