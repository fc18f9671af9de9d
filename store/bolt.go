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
	bucketLanes  = []byte("lanes")
	bucketGrants = []byte("grants")
)

// Bolt is the embedded durable store (go.etcd.io/bbolt). Concurrent
// payments are group-committed: Advance calls arriving together share one
// transaction and one fsync (bbolt's Batch), and each returns only after
// its batch is on disk.
type Bolt struct {
	db *bolt.DB
}

// BoltOptions tune the bolt store.
type BoltOptions struct {
	// BatchDelay is how long a transaction waits for more payments to share
	// its fsync. Default 2ms.
	BatchDelay time.Duration
	// BatchSize caps the payments per transaction. Default 1000.
	BatchSize int
	// NoSync skips fsync: only for benchmarks and tests; a crash loses
	// recent coupons and may accept them twice.
	NoSync bool
}

// OpenBolt opens (creating if needed) the store at path.
func OpenBolt(path string, opt BoltOptions) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoSync: opt.NoSync})
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	db.MaxBatchDelay = 2 * time.Millisecond
	if opt.BatchDelay > 0 {
		db.MaxBatchDelay = opt.BatchDelay
	}
	if opt.BatchSize > 0 {
		db.MaxBatchSize = opt.BatchSize
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketLanes, bucketGrants} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: initialising %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
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
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLanes)
		if v := b.Get(k[:]); v != nil {
			return out.UnmarshalBinary(v)
		}
		out = newRecord(meta)
		enc, err := out.MarshalBinary()
		if err != nil {
			return err
		}
		return b.Put(k[:], enc)
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
	return mapClosed(s.db.Batch(func(tx *bolt.Tx) error {
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
		if next.Meta.Cap > 0 && charge > 0 {
			g := tx.Bucket(bucketGrants)
			var spent int64
			if v := g.Get(next.Meta.Grant[:]); len(v) == 8 {
				spent = int64(binary.BigEndian.Uint64(v))
			}
			total, err := coupons.ChargeCap(spent, next.Meta.Cap, charge)
			if err != nil {
				return err
			}
			if err := g.Put(next.Meta.Grant[:], binary.BigEndian.AppendUint64(nil, uint64(total))); err != nil {
				return err
			}
		}
		return b.Put(k[:], enc)
	}))
}

// Close implements Store.
func (s *Bolt) Close() error { return s.db.Close() }
