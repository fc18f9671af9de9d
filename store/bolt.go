package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketLanes    = []byte("lanes")
	bucketGrants   = []byte("grants")
	bucketProofs   = []byte("proofs")
	bucketRedeemed = []byte("redeemed")
	bucketDirty    = []byte("dirty")
)

// Bolt is the embedded durable store (go.etcd.io/bbolt). Writes are
// group-committed by one committer goroutine: while a transaction and its
// fsync are in flight, new writes queue; the committer then applies all
// of them in the next transaction. Each write returns only after its
// transaction is on disk. There is no artificial delay: a lone write costs
// one fsync, and under load each fsync carries every write that arrived
// during the previous one.
type Bolt struct {
	db   *bolt.DB
	ops  chan *boltOp
	quit chan struct{}
	done chan struct{}
	max  int
}

// boltOp is one queued write. fn must make no change when it returns an
// error, so that failing writes can share a transaction with others.
type boltOp struct {
	fn  func(*bolt.Tx) error
	err chan error
}

// fatal marks a write error from bolt itself, after which the transaction
// must not commit.
type fatal struct{ err error }

func (f fatal) Error() string { return f.err.Error() }

// BoltOptions tune the bolt store.
type BoltOptions struct {
	// BatchSize caps the writes per transaction. Default 1000.
	BatchSize int
	// NoSync skips fsync: only for benchmarks and tests; a crash loses
	// recent coupons and may accept them twice.
	NoSync bool
}

// OpenBolt opens (creating if needed) the store at path.
func OpenBolt(path string, opt BoltOptions) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoSync: opt.NoSync,
		// The freelist is rebuilt on open instead of written at every commit:
		// commits, one per group of payments, get cheaper.
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketLanes, bucketGrants, bucketProofs, bucketRedeemed, bucketDirty} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: initialising %s: %w", path, err)
	}
	s := &Bolt{db: db, ops: make(chan *boltOp, 4096), quit: make(chan struct{}), done: make(chan struct{}), max: 1000}
	if opt.BatchSize > 0 {
		s.max = opt.BatchSize
	}
	go s.commitLoop()
	return s, nil
}

// commitLoop applies queued writes in group transactions.
func (s *Bolt) commitLoop() {
	defer close(s.done)
	batch := make([]*boltOp, 0, s.max)
	for {
		select {
		case op := <-s.ops:
			batch = append(batch[:0], op)
		case <-s.quit:
			return
		}
	drain:
		for len(batch) < s.max {
			select {
			case op := <-s.ops:
				batch = append(batch, op)
			default:
				break drain
			}
		}
		errs := make([]error, len(batch))
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, op := range batch {
				errs[i] = op.fn(tx)
				var f fatal
				if errors.As(errs[i], &f) {
					return f.err // a failed write: abort the whole transaction
				}
			}
			return nil
		})
		for i, op := range batch {
			if err != nil {
				op.err <- err
			} else {
				op.err <- errs[i]
			}
		}
	}
}

// write queues fn and waits until its transaction is durable.
func (s *Bolt) write(fn func(*bolt.Tx) error) error {
	op := &boltOp{fn: fn, err: make(chan error, 1)}
	select {
	case s.ops <- op:
	case <-s.quit:
		return ErrClosed
	}
	select {
	case err := <-op.err:
		return err
	case <-s.done:
		// The committer stopped; it may still have answered.
		select {
		case err := <-op.err:
			return err
		default:
			return ErrClosed
		}
	}
}

func mapClosed(err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Open implements Store.
func (s *Bolt) Open(_ context.Context, id coupons.LaneID, meta Meta) (Record, error) {
	k := Key(id)
	var out Record
	err := s.write(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLanes)
		if v := b.Get(k[:]); v != nil {
			return out.UnmarshalBinary(v)
		}
		out = newRecord(meta)
		enc, err := out.MarshalBinary()
		if err != nil {
			return err
		}
		if err := b.Put(k[:], enc); err != nil {
			return fatal{err}
		}
		return nil
	})
	return out, mapClosed(err)
}

// Get implements Store.
func (s *Bolt) Get(_ context.Context, id coupons.LaneID) (Record, error) {
	k := Key(id)
	var out Record
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLanes).Get(k[:])
		if v == nil {
			return ErrNotFound
		}
		return out.UnmarshalBinary(v)
	})
	return out, mapClosed(err)
}

// Advance implements Store.
func (s *Bolt) Advance(_ context.Context, id coupons.LaneID, prevLast uint32, next Record, charge int64) error {
	k := Key(id)
	enc, err := next.MarshalBinary()
	if err != nil {
		return err
	}
	return mapClosed(s.write(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLanes)
		v := b.Get(k[:])
		if v == nil {
			return ErrNotFound
		}
		var cur Record
		if err := cur.UnmarshalBinary(v); err != nil {
			return err
		}
		if cur.State.Last != prevLast {
			return fmt.Errorf("%w: at %d, expected %d", ErrConflict, cur.State.Last, prevLast)
		}
		// Every check comes before the first write (see boltOp).
		var g *bolt.Bucket
		var total int64
		if next.Meta.Cap > 0 && charge > 0 {
			g = tx.Bucket(bucketGrants)
			var spent int64
			if v := g.Get(next.Meta.Grant[:]); len(v) == 8 {
				spent = int64(binary.BigEndian.Uint64(v))
			}
			if total, err = coupons.ChargeCap(spent, next.Meta.Cap, charge); err != nil {
				return err
			}
		}
		if err := b.Put(k[:], enc); err != nil {
			return fatal{err}
		}
		if err := tx.Bucket(bucketDirty).Put(k[:], nil); err != nil {
			return fatal{err}
		}
		if g != nil {
			if err := g.Put(next.Meta.Grant[:], binary.BigEndian.AppendUint64(nil, uint64(total))); err != nil {
				return fatal{err}
			}
		}
		return nil
	}))
}

// Close implements Store: it stops the committer after the transaction in
// flight and closes the database.
func (s *Bolt) Close() error {
	select {
	case <-s.quit:
		return nil
	default:
	}
	close(s.quit)
	<-s.done
	return s.db.Close()
}

// SetProof implements Store.
func (s *Bolt) SetProof(_ context.Context, id coupons.LaneID, proof [][32]byte) error {
	enc, err := encodeProof(proof)
	if err != nil {
		return err
	}
	k := Key(id)
	return mapClosed(s.write(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketProofs).Put(k[:], enc); err != nil {
			return fatal{err}
		}
		return nil
	}))
}

// Pending implements Store.
func (s *Bolt) Pending(_ context.Context, limit int) ([]Pending, error) {
	var out []Pending
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDirty).Cursor()
		lanes, red, proofs := tx.Bucket(bucketLanes), tx.Bucket(bucketRedeemed), tx.Bucket(bucketProofs)
		for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
			v := lanes.Get(k)
			if v == nil || len(k) != 36 {
				continue
			}
			var r Record
			if err := r.UnmarshalBinary(v); err != nil {
				return err
			}
			var done uint32
			if rv := red.Get(k); len(rv) == 4 {
				done = binary.BigEndian.Uint32(rv)
			}
			if done >= r.State.Last {
				continue
			}
			p := Pending{Index: r.State.Last, Value: r.State.LastValue, Redeemed: done, Anchor: r.Meta.Anchor}
			copy(p.ID.Book[:], k[:32])
			p.ID.Lane = binary.BigEndian.Uint32(k[32:])
			if pv := proofs.Get(k); pv != nil {
				var err error
				if p.Proof, err = decodeProof(pv); err != nil {
					return err
				}
			}
			out = append(out, p)
		}
		return nil
	})
	return out, mapClosed(err)
}

// Redeemed implements Store.
func (s *Bolt) Redeemed(_ context.Context, id coupons.LaneID, index uint32) error {
	k := Key(id)
	return mapClosed(s.write(func(tx *bolt.Tx) error {
		red := tx.Bucket(bucketRedeemed)
		var done uint32
		if rv := red.Get(k[:]); len(rv) == 4 {
			done = binary.BigEndian.Uint32(rv)
		}
		if index > done {
			done = index
			if err := red.Put(k[:], binary.BigEndian.AppendUint32(nil, done)); err != nil {
				return fatal{err}
			}
		}
		if v := tx.Bucket(bucketLanes).Get(k[:]); v != nil {
			var r Record
			if err := r.UnmarshalBinary(v); err == nil && done >= r.State.Last {
				if err := tx.Bucket(bucketDirty).Delete(k[:]); err != nil {
					return fatal{err}
				}
			}
		}
		return nil
	}))
}
