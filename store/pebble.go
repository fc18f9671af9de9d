package store

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// Pebble is the embedded durable store on a pebble database (an LSM tree
// with its own write-ahead log). It shares the bolt store's committer and
// Store methods (kvStore): writes run in groups, in order, over an
// overlay of the group's changes, and each group is one pebble batch
// committed with a sync, so a write returns once its group is on disk.
// Unlike bbolt, pebble never rewrites random pages at a checkpoint: its
// flushes and compactions write sorted files sequentially, so its cost
// per write does not grow with the number of lanes as fast.
//
// Keys are the bolt store's, prefixed with their bucket's byte (as in its
// write-ahead log); the store's identity is kept under pebbleIDKey.
type Pebble struct{ *kvStore }

// PebbleOptions tune the pebble store.
type PebbleOptions struct {
	// BatchSize caps the writes per group (one pebble batch and sync).
	// Default 1000.
	BatchSize int
	// NoSync skips syncing the batches: only for benchmarks and tests; a
	// crash loses recent coupons and may accept them twice.
	NoSync bool
	// CacheSize is the size of pebble's block cache in bytes. Default 64
	// MiB.
	CacheSize int64
}

// ErrPebble wraps a failure of the pebble database that is not one of the
// store's own errors.
var ErrPebble = errors.New("store: pebble")

// pebbleIDKey holds the store's identity: its first byte is no bucket's.
var pebbleIDKey = []byte("\xffid")

// OpenPebble opens (creating if needed) the pebble store in directory dir.
func OpenPebble(dir string, opt PebbleOptions) (*Pebble, error) {
	cacheSize := opt.CacheSize
	if cacheSize <= 0 {
		cacheSize = 64 << 20
	}
	cache := pebble.NewCache(cacheSize)
	defer cache.Unref() // the database holds its own reference
	po := &pebble.Options{
		Cache:              cache,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{},
	}
	// Bloom filters on every level: a lane's record is in one level, and
	// a read skips the others without reading their blocks.
	po.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("%w: opening %s: %v", ErrPebble, dir, err)
	}
	s := &kvStore{peb: db, kick: make(chan struct{}, 1), done: make(chan struct{}), max: 1000,
		overlay: map[string]change{}, group: map[string]change{}}
	if opt.BatchSize > 0 {
		s.max = opt.BatchSize
	}
	if opt.NoSync {
		s.pebSync = pebble.NoSync
	} else {
		s.pebSync = pebble.Sync
	}
	id, err := pebbleGet(db, pebbleIDKey)
	if err == nil && len(id) == 0 {
		id = []byte(newID())
		err = db.Set(pebbleIDKey, id, pebble.Sync)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: initialising %s: %v", ErrPebble, dir, err)
	}
	s.id = string(id)
	go s.commitLoop()
	return &Pebble{s}, nil
}

// pebbleGet returns a copy of key's value, or nil if there is none.
func pebbleGet(db *pebble.DB, key []byte) ([]byte, error) {
	v, closer, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPebble, err)
	}
	out := append([]byte(nil), v...)
	closer.Close()
	return out, nil
}

// pebbleCommit makes a group's changes durable: one batch, synced.
func (s *kvStore) pebbleCommit(order []string, group map[string]change) error {
	b := s.peb.NewBatch()
	defer b.Close()
	for _, k := range order {
		c := group[k]
		var err error
		if c.del {
			err = b.Delete([]byte(k), nil)
		} else {
			err = b.Set([]byte(k), c.val, nil)
		}
		if err != nil {
			return err
		}
	}
	return b.Commit(s.pebSync)
}

// pebbleRead is read on the pebble engine, from one snapshot (the caller
// holds mu for reading).
func (s *kvStore) pebbleRead(fn func(get func(b byte, key []byte) []byte, scan func(b byte, fn func(k, v []byte) error) error) error) error {
	if s.pebOff {
		return ErrClosed
	}
	snap := s.peb.NewSnapshot()
	defer snap.Close()
	var getErr error
	get := func(b byte, key []byte) []byte {
		var buf [1 + maxKeyLen]byte
		v, closer, err := snap.Get(fullKey(buf[:], b, key))
		if err != nil {
			if !errors.Is(err, pebble.ErrNotFound) && getErr == nil {
				getErr = fmt.Errorf("%w: %v", ErrPebble, err)
			}
			return nil
		}
		out := append([]byte(nil), v...)
		closer.Close()
		return out
	}
	scan := func(b byte, fn func(k, v []byte) error) error {
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{b}, UpperBound: []byte{b + 1}})
		if err != nil {
			return fmt.Errorf("%w: %v", ErrPebble, err)
		}
		for it.First(); it.Valid(); it.Next() {
			v, err := it.ValueAndErr()
			if err == nil {
				err = fn(it.Key()[1:], v)
			}
			if err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Close(); err != nil {
			return fmt.Errorf("%w: %v", ErrPebble, err)
		}
		return nil
	}
	if err := fn(get, scan); err != nil {
		return err
	}
	return getErr
}

// pebbleClose closes the database once the committer has stopped; reads
// from then on return ErrClosed.
func (s *kvStore) pebbleClose() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pebOff = true
	if err := s.peb.Close(); err != nil {
		return fmt.Errorf("%w: closing: %v", ErrPebble, err)
	}
	return nil
}

// quietLogger drops pebble's informational messages and keeps its errors
// on the standard logger's output.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	pebble.DefaultLogger.Errorf(format, args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	pebble.DefaultLogger.Fatalf(format, args...)
}
