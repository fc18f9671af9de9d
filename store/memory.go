package store

import (
	"context"
	"fmt"
	"sync"

	"github.com/ecoupons/ecoupons/coupons"
)

// Memory is an in-process store for tests and single-process demos. It
// loses everything when the process ends.
type Memory struct {
	mu     sync.Mutex
	lanes  map[[36]byte]Record
	grants map[[32]byte]int64
	closed bool
}

// NewMemory returns an empty memory store.
func NewMemory() *Memory {
	return &Memory{lanes: map[[36]byte]Record{}, grants: map[[32]byte]int64{}}
}

// Open implements Store.
func (m *Memory) Open(_ context.Context, id coupons.LaneID, meta Meta) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Record{}, ErrClosed
	}
	k := Key(id)
	if r, ok := m.lanes[k]; ok {
		return r, nil
	}
	r := newRecord(meta)
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
func (m *Memory) Advance(_ context.Context, id coupons.LaneID, prevLast uint32, next Record, charge int64) error {
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
	if cur.State.Last != prevLast {
		return fmt.Errorf("%w: at %d, expected %d", ErrConflict, cur.State.Last, prevLast)
	}
	if next.Meta.Cap > 0 && charge > 0 {
		total, err := coupons.ChargeCap(m.grants[next.Meta.Grant], next.Meta.Cap, charge)
		if err != nil {
			return err
		}
		m.grants[next.Meta.Grant] = total
	}
	m.lanes[k] = next
	return nil
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
