package store

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// Leased makes a store's reservations durable instead of each of its
// positions. An Advance that asks for a reservation (next.Lease above
// next.State.Last) writes the record through to the inner store with that
// Lease, durably; later Advances of the lane up to the reservation, which
// change nothing but the position (same credit and meta, no cap), are
// then compare-and-set against the lane's record in memory and return at
// once, without I/O. A flusher writes the lanes changed in memory every
// FlushEvery, keeping their reservations on disk, and releases the lanes
// unused for Idle (it writes them with Lease 0). Close releases every
// lane it holds.
//
// After a crash, the inner store holds for such a lane a record that may
// be behind what was accepted, with Lease above its position: every coupon
// up to Lease may have been accepted and served, and the gate refuses them
// all (Record.Lease). Coupons are lost to the client, never accepted twice.
//
// Leased is for a store that one process owns (Bolt). It is wrong for a
// store that processes share (Redis): another process's writes to a lane
// this one holds are neither seen nor allowed for.
type Leased struct {
	inner   Store
	batch   batchAdvancer // inner's, if it writes many records at once
	opt     LeaseOptions
	seed    maphash.Seed
	stripes []leaseStripe

	closed    atomic.Bool
	now       atomic.Int64 // unix nanoseconds, updated by the flusher (idle times)
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	flushes, flushWrites, durable, fast, released, flushErrors atomic.Uint64
}

var _ Store = (*Leased)(nil)

// LeaseOptions tune a Leased store.
type LeaseOptions struct {
	// FlushEvery is how often the lanes changed in memory are written to
	// the inner store. Default 1s. It bounds how old a position the inner
	// store's Pending sees.
	FlushEvery time.Duration
	// Idle is how long a held lane may go unused before its reservation
	// is released (written with Lease 0 and dropped from memory). Default
	// 30s.
	Idle time.Duration
}

// LeaseStats are a Leased store's counters (since it was made) and
// gauges.
type LeaseStats struct {
	// Held is the number of lanes whose reservation this store holds.
	Held int
	// Dirty is how many of them are ahead of the inner store in memory.
	Dirty int
	// Flushes counts the flusher's rounds that wrote something.
	Flushes uint64
	// FlushWrites counts the records written by flushes and releases.
	FlushWrites uint64
	// DurableWrites counts the Advances written through to the inner
	// store (a new reservation, a credit or meta change, a charge, a
	// lane not held).
	DurableWrites uint64
	// FastAccepts counts the Advances accepted from memory within a
	// reservation.
	FastAccepts uint64
	// Released counts the lanes released (idle, Reopen, MarkRevoked).
	Released uint64
	// FlushErrors counts the failed writes of flushes and releases (the
	// lane stays held and is retried).
	FlushErrors uint64
}

// leaseStripes is the number of lock stripes of a Leased store.
const leaseStripes = 4096

// flushBatch is the most records a flush writes at once (while holding
// their stripes' locks).
const flushBatch = 512

// flushWorkers is the concurrency of a flush on an inner store that has
// no batch write.
const flushWorkers = 16

// leaseStripe is a lock and the held lanes whose keys hash to it.
type leaseStripe struct {
	mu    sync.Mutex
	lanes map[[36]byte]*heldLane
	_     [48]byte // a cache line each
}

// heldLane is a lane whose reservation the store holds.
type heldLane struct {
	rec        Record // the exact current record (its Lease unused)
	diskLast   uint32 // the position and credit of the record on disk,
	diskCredit uint32 // for the inner compare-and-set
	res        uint32 // the reservation on disk: the written record's Lease
	// floor is a crash leftover (a Lease above the position) found on disk
	// when the lane was taken: coupons up to it are refused by the gate,
	// so Get reports it and every write keeps it while the position is
	// below it.
	floor uint32
	dirty bool  // rec is ahead of the disk
	used  int64 // when last used (Leased.now)
}

// activeFloor is the lane's crash floor if its position is still below
// it, else 0.
func (h *heldLane) activeFloor() uint32 {
	if h.floor > h.rec.State.Last {
		return h.floor
	}
	return 0
}

// batchWrite is one Advance (no charge) of a batch.
type batchWrite struct {
	id                   coupons.LaneID
	prevLast, prevCredit uint32
	next                 Record
}

// batchAdvancer is a store that writes many Advances at once, sharing
// their durability cost (Bolt).
type batchAdvancer interface {
	advanceBatch(ws []batchWrite) []error
}

// LeaseOptionsWithDefaults returns opt with its zero fields set to the
// defaults NewLeased uses (FlushEvery 1s, Idle 30s).
func LeaseOptionsWithDefaults(opt LeaseOptions) LeaseOptions {
	if opt.FlushEvery <= 0 {
		opt.FlushEvery = time.Second
	}
	if opt.Idle <= 0 {
		opt.Idle = 30 * time.Second
	}
	return opt
}

// Options returns the store's options, defaults filled in.
func (l *Leased) Options() LeaseOptions { return l.opt }

// NewLeased wraps inner, a store that this process alone writes, and
// starts its flusher. Close stops it, releases every lane and closes
// inner.
func NewLeased(inner Store, opt LeaseOptions) *Leased {
	opt = LeaseOptionsWithDefaults(opt)
	l := &Leased{inner: inner, opt: opt, seed: maphash.MakeSeed(), stripes: make([]leaseStripe, leaseStripes),
		stop: make(chan struct{}), done: make(chan struct{})}
	l.batch, _ = inner.(batchAdvancer)
	for i := range l.stripes {
		l.stripes[i].lanes = map[[36]byte]*heldLane{}
	}
	l.now.Store(time.Now().UnixNano())
	go l.flusher()
	return l
}

// HoldsLeases reports that this store keeps spending leases: a gate may
// ask it for reservations (Record.Lease) beyond the lane's position.
func (l *Leased) HoldsLeases() bool { return true }

// Inner returns the wrapped store (for its own statistics; writing to it
// behind the Leased store's back is wrong).
func (l *Leased) Inner() Store { return l.inner }

func (l *Leased) stripe(k *[36]byte) *leaseStripe {
	return &l.stripes[maphash.Bytes(l.seed, k[:])%leaseStripes]
}

// leaseFor is the Lease to write with next: the reservation asked for
// (at least the position; only the position for a capped lane, whose
// cap is charged per payment), raised to the lane's crash floor when the
// position is below it.
func leaseFor(next *Record, floor uint32) uint32 {
	lease := next.State.Last
	if next.Meta.Cap == 0 && next.Lease > lease {
		lease = next.Lease
	}
	if floor > next.State.Last && floor > lease {
		lease = floor
	}
	return lease
}

// diskFloor reads a lane that is not held from the inner store and
// returns its crash floor (0 if none). Callers hold the lane's stripe.
func (l *Leased) diskFloor(ctx context.Context, id coupons.LaneID) (uint32, error) {
	cur, err := l.inner.Get(ctx, id)
	if err != nil {
		return 0, err
	}
	if cur.Lease > cur.State.Last {
		return cur.Lease, nil
	}
	return 0, nil
}

// Advance implements Store: within a reservation the store holds, from
// memory; else durably, through the inner store, taking the reservation
// next.Lease asks for (see Leased and Record.Lease).
func (l *Leased) Advance(ctx context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next Record, charge int64) error {
	k := Key(id)
	st := l.stripe(&k)
	st.mu.Lock()
	defer st.mu.Unlock()
	if l.closed.Load() {
		return ErrClosed
	}
	h := st.lanes[k]
	if h == nil {
		floor, err := l.diskFloor(ctx, id)
		if err != nil {
			return err
		}
		w := next
		w.Lease = leaseFor(&next, floor)
		if err := l.inner.Advance(ctx, id, prevLast, prevCredit, w, charge); err != nil {
			return err
		}
		l.durable.Add(1)
		next.Lease = 0
		st.lanes[k] = &heldLane{rec: next, diskLast: next.State.Last, diskCredit: next.Credit, res: w.Lease,
			floor: floor, used: l.now.Load()}
		return nil
	}
	h.used = l.now.Load()
	// The inner stores' rules, against the exact record.
	if err := checkWriteRecord(&h.rec.Meta, &next.Meta, false); err != nil {
		return err
	}
	if h.rec.State.Last != prevLast || h.rec.Credit != prevCredit {
		return fmt.Errorf("%w: at %d (credit %d), expected %d (credit %d)", ErrConflict, h.rec.State.Last, h.rec.Credit, prevLast, prevCredit)
	}
	// charge counts only against a cap (Store.Advance): an uncapped lane
	// ignores it.
	if next.State.Last <= h.res && next.Credit == h.rec.Credit && next.Meta.Cap == 0 &&
		next.Meta.Equal(&h.rec.Meta) {
		next.Lease = 0
		h.rec, h.dirty = next, true
		l.fast.Add(1)
		return nil
	}
	w := next
	w.Lease = leaseFor(&next, h.activeFloor())
	if err := l.inner.Advance(ctx, id, h.diskLast, h.diskCredit, w, charge); err != nil {
		if errorsIsConflictOrGone(err) {
			// The inner store changed behind this one's back (it is
			// shared, against the rules): forget the lane, so that the
			// next Get reads what is there.
			delete(st.lanes, k)
		}
		return err
	}
	l.durable.Add(1)
	next.Lease = 0
	h.rec, h.diskLast, h.diskCredit, h.res, h.dirty = next, next.State.Last, next.Credit, w.Lease, false
	return nil
}

// errorsIsConflictOrGone reports whether the inner store refused a held
// lane's write because its record is not what this store wrote.
func errorsIsConflictOrGone(err error) bool {
	return errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound)
}

// Get implements Store. A held lane's record comes from memory, exact,
// with Lease 0 (this store holds the reservation: nothing to refuse)
// unless the lane still has a crash floor; another lane's comes from the
// inner store as it is (a Lease above its position is a crash leftover).
func (l *Leased) Get(ctx context.Context, id coupons.LaneID) (Record, error) {
	k := Key(id)
	st := l.stripe(&k)
	st.mu.Lock()
	defer st.mu.Unlock()
	if l.closed.Load() {
		return Record{}, ErrClosed
	}
	if h := st.lanes[k]; h != nil {
		h.used = l.now.Load()
		r := h.rec
		r.Lease = h.activeFloor()
		return r, nil
	}
	return l.inner.Get(ctx, id)
}

// Open implements Store. It takes no reservation (first.Lease is
// ignored): the lane's first Advance does.
func (l *Leased) Open(ctx context.Context, id coupons.LaneID, first Record, proof ...[32]byte) (Record, error) {
	k := Key(id)
	st := l.stripe(&k)
	st.mu.Lock()
	defer st.mu.Unlock()
	if l.closed.Load() {
		return Record{}, ErrClosed
	}
	if h := st.lanes[k]; h != nil {
		h.used = l.now.Load()
		r := h.rec
		r.Lease = h.activeFloor()
		return r, nil
	}
	first.Lease = 0
	return l.inner.Open(ctx, id, first, proof...)
}

// Reopen implements Store: a held lane is first written exactly and
// released, then the inner store reopens it. It takes no reservation
// (next.Lease is replaced by the lane's crash floor, if any).
func (l *Leased) Reopen(ctx context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next Record) error {
	k := Key(id)
	st := l.stripe(&k)
	st.mu.Lock()
	defer st.mu.Unlock()
	if l.closed.Load() {
		return ErrClosed
	}
	var floor uint32
	if h := st.lanes[k]; h != nil {
		floor = h.activeFloor()
		if err := l.release(ctx, st, k, h); err != nil {
			return err
		}
	} else {
		var err error
		if floor, err = l.diskFloor(ctx, id); err != nil {
			return err
		}
	}
	next.Lease = 0
	if floor > next.State.Last {
		next.Lease = floor
	}
	return l.inner.Reopen(ctx, id, prevLast, prevCredit, next)
}

// MarkRevoked implements Store: a held lane is first written exactly and
// released, then the inner store marks it.
func (l *Leased) MarkRevoked(ctx context.Context, id coupons.LaneID, certs [][32]byte, keys []spki.KeyHash) error {
	k := Key(id)
	st := l.stripe(&k)
	st.mu.Lock()
	defer st.mu.Unlock()
	if l.closed.Load() {
		return ErrClosed
	}
	if h := st.lanes[k]; h != nil {
		if err := l.release(ctx, st, k, h); err != nil {
			return err
		}
	}
	return l.inner.MarkRevoked(ctx, id, certs, keys)
}

// releaseWrite is the record that releases a held lane: its exact record
// with Lease 0 (or its crash floor), and whether it must be written (the
// disk is not that already).
func releaseWrite(h *heldLane) (Record, bool) {
	w := h.rec
	w.Lease = h.activeFloor()
	return w, h.dirty || h.res != w.Lease
}

// release writes a held lane's exact record without its reservation and
// drops it. The caller holds st.
func (l *Leased) release(ctx context.Context, st *leaseStripe, k [36]byte, h *heldLane) error {
	if w, write := releaseWrite(h); write {
		if err := l.inner.Advance(ctx, laneOfKey(k[:]), h.diskLast, h.diskCredit, w, 0); err != nil {
			l.flushErrors.Add(1)
			if errorsIsConflictOrGone(err) {
				delete(st.lanes, k)
			}
			return err
		}
		l.flushWrites.Add(1)
	}
	delete(st.lanes, k)
	l.released.Add(1)
	return nil
}

// flusher writes the changed lanes every FlushEvery and releases the idle
// ones, until Close.
func (l *Leased) flusher() {
	defer close(l.done)
	t := time.NewTicker(l.opt.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case now := <-t.C:
			l.now.Store(now.UnixNano())
			l.flush(false)
		}
	}
}

// flushItem is a held lane being written by a flush.
type flushItem struct {
	st      *leaseStripe
	k       [36]byte
	h       *heldLane
	release bool
}

// flush writes every changed held lane's exact record, keeping its
// reservation, and releases the lanes idle for longer than Idle (every
// lane when all is set), a batch of up to flushBatch records at a time,
// holding their stripes' locks (taken in increasing order; a payment
// holds one) so that no payment races the write. It returns the first
// error.
func (l *Leased) flush(all bool) error {
	now := l.now.Load()
	var (
		items    []flushItem
		ws       []batchWrite
		locked   []*leaseStripe
		firstErr error
		wrote    bool
	)
	run := func() {
		if len(ws) > 0 {
			wrote = true
			for i, err := range l.writeBatch(ws) {
				it := items[i]
				if err != nil {
					l.flushErrors.Add(1)
					if firstErr == nil {
						firstErr = err
					}
					if errorsIsConflictOrGone(err) {
						delete(it.st.lanes, it.k)
					}
					continue
				}
				l.flushWrites.Add(1)
				w := &ws[i].next
				it.h.diskLast, it.h.diskCredit, it.h.res, it.h.dirty = w.State.Last, w.Credit, w.Lease, false
				if it.release {
					delete(it.st.lanes, it.k)
					l.released.Add(1)
				}
			}
		}
		for _, st := range locked {
			st.mu.Unlock()
		}
		items, ws, locked = items[:0], ws[:0], locked[:0]
	}
	for i := range l.stripes {
		st := &l.stripes[i]
		st.mu.Lock()
		n := len(items)
		for k, h := range st.lanes {
			idle := all || now-h.used > int64(l.opt.Idle)
			if !idle && !h.dirty {
				continue
			}
			w := h.rec
			w.Lease = h.res
			if idle {
				var write bool
				if w, write = releaseWrite(h); !write {
					delete(st.lanes, k)
					l.released.Add(1)
					continue
				}
			}
			items = append(items, flushItem{st: st, k: k, h: h, release: idle})
			ws = append(ws, batchWrite{id: laneOfKey(k[:]), prevLast: h.diskLast, prevCredit: h.diskCredit, next: w})
		}
		if len(items) == n {
			st.mu.Unlock()
			continue
		}
		locked = append(locked, st)
		if len(items) >= flushBatch {
			run()
		}
	}
	run()
	if wrote {
		l.flushes.Add(1)
	}
	return firstErr
}

// writeBatch writes ws through the inner store: at once if it can, else
// from a few goroutines, so that a group-committing store shares its
// syncs among them.
func (l *Leased) writeBatch(ws []batchWrite) []error {
	if l.batch != nil {
		return l.batch.advanceBatch(ws)
	}
	errs := make([]error, len(ws))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(flushWorkers, len(ws)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ws) {
					return
				}
				w := &ws[i]
				errs[i] = l.inner.Advance(context.Background(), w.id, w.prevLast, w.prevCredit, w.next, 0)
			}
		}()
	}
	wg.Wait()
	return errs
}

// Close implements Store: it stops the flusher, writes every held lane's
// exact record without its reservation, then closes the inner store.
// After a clean Close, no lane this store held has a Lease above its
// position, except a crash floor it was not paid past; a lane it never
// held is as it found it (a crash floor left on disk stays until a
// payment passes it: coupons up to it may have been accepted before the
// crash). Later calls return the first one's result.
func (l *Leased) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		close(l.stop)
		<-l.done
		err := l.flush(true)
		if cerr := l.inner.Close(); err == nil {
			err = cerr
		}
		l.closeErr = err
	})
	return l.closeErr
}

// Stats returns the store's counters; it visits every stripe.
func (l *Leased) Stats() LeaseStats {
	s := LeaseStats{Flushes: l.flushes.Load(), FlushWrites: l.flushWrites.Load(), DurableWrites: l.durable.Load(),
		FastAccepts: l.fast.Load(), Released: l.released.Load(), FlushErrors: l.flushErrors.Load()}
	for i := range l.stripes {
		st := &l.stripes[i]
		st.mu.Lock()
		s.Held += len(st.lanes)
		for _, h := range st.lanes {
			if h.dirty {
				s.Dirty++
			}
		}
		st.mu.Unlock()
	}
	return s
}

// ID implements Store: the inner store's.
func (l *Leased) ID(ctx context.Context) (string, error) { return l.inner.ID(ctx) }

// SetProof implements Store.
func (l *Leased) SetProof(ctx context.Context, id coupons.LaneID, proof [][32]byte) error {
	return l.inner.SetProof(ctx, id, proof)
}

// Pending implements Store: the inner store's pending lanes, after the
// exact positions held in memory were written there.
func (l *Leased) Pending(ctx context.Context, now time.Time, limit int) ([]Pending, error) {
	// Write the exact positions held in memory first, so that redemption
	// claims every coupon accepted so far (a failed write is counted in
	// FlushErrors and retried by the flusher; the outbox is then a flush
	// behind, which the next run catches up).
	if !l.closed.Load() {
		l.flush(false)
	}
	return l.inner.Pending(ctx, now, limit)
}

// Redeemed implements Store.
func (l *Leased) Redeemed(ctx context.Context, id coupons.LaneID, index uint32) error {
	return l.inner.Redeemed(ctx, id, index)
}

// Postpone implements Store.
func (l *Leased) Postpone(ctx context.Context, id coupons.LaneID, until time.Time) error {
	return l.inner.Postpone(ctx, id, until)
}

// Refuse implements Store.
func (l *Leased) Refuse(ctx context.Context, r Refusal) error { return l.inner.Refuse(ctx, r) }

// Refusals implements Store.
func (l *Leased) Refusals(ctx context.Context, limit int) ([]Refusal, error) {
	return l.inner.Refusals(ctx, limit)
}
