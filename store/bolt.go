package store

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	bolt "go.etcd.io/bbolt"
)

// The buckets of the bbolt file, numbered for the write-ahead log.
const (
	bLanes byte = iota
	bGrants
	bProofs
	bRedeemed
	bDirty   // pending lanes: key → their place in the order (queued)
	bRefused // lanes the broker refused for good: key → encodeRefusal
	nBuckets
)

var bucketNames = [nBuckets][]byte{[]byte("lanes"), []byte("grants"), []byte("proofs"), []byte("redeemed"), []byte("dirty"), []byte("refused")}

// Bolt is the embedded durable store: a bbolt file fronted by a
// write-ahead log (wal.go). Writes are group-committed by one committer
// goroutine: while one group's log record and its fdatasync are in
// flight, new writes queue; the committer then runs all of them, in
// order, and appends their changes as the next record. Each write returns
// only after its record is on disk. There is no artificial delay: a lone
// write costs one fdatasync, and under load each fdatasync carries every
// write that arrived during the previous one. Changes live in memory (the
// overlay, read before the bbolt file) until a checkpoint writes them to
// the bbolt file in one transaction, when the log is full and on Close;
// on open, the log is replayed into the bbolt file.
type Bolt struct{ *kvStore }

// kvStore is the engine-independent part of the durable stores (Bolt,
// Pebble): the committer, which runs queued writes in groups over a kvTx
// overlay, and the Store methods written as such writes. The durable
// layer under it is either a bbolt file behind our write-ahead log (db,
// log, overlay) or a pebble database (peb), whose own log makes each
// group's batch durable.
type kvStore struct {
	db      *bolt.DB
	log     *wal
	peb     *pebble.DB           // the pebble engine (db, log and overlay unused)
	pebOff  bool                 // peb was closed (guarded by mu): reads return ErrClosed
	pebSync *pebble.WriteOptions // how groups are committed to peb
	qmu     sync.Mutex
	queue   []*boltOp     // writes waiting for the next group
	closed  bool          // Close began: writes are refused
	kick    chan struct{} // wakes the committer when the queue fills (capacity 1)
	done    chan struct{} // closed when the committer has stopped

	closeOnce sync.Once
	closeErr  error
	max       int

	delay     time.Duration
	lastGroup int               // writes in the previous group
	group     map[string]change // the group being run (reused)
	payload   []byte            // its log record's payload (reused)
	errs      []error           // its writes' results (reused)
	order     []string

	mu      sync.RWMutex // guards overlay (written by the committer only)
	overlay map[string]change
	broken  error // a failed log write: the store takes no more writes
	id      string

	groups, writes, syncNanos atomic.Uint64 // see Stats
}

// BoltStats counts the store's group commits since it was opened.
// Writes/Groups is the average group size, SyncTime/Groups the average
// time to append a group to the log and fdatasync it: what commit_delay
// trades latency against.
type BoltStats struct {
	// Groups is the number of log records written (one fdatasync each).
	Groups uint64
	// Writes is the number of writes (payments, opens, …) they carried.
	Writes uint64
	// SyncTime is the total time spent appending and syncing the records.
	SyncTime time.Duration
}

// Stats returns the store's group-commit counters.
func (s *kvStore) Stats() BoltStats {
	return BoltStats{Groups: s.groups.Load(), Writes: s.writes.Load(), SyncTime: time.Duration(s.syncNanos.Load())}
}

// opPool recycles boltOps and their channels (each is empty when put back).
var opPool = sync.Pool{New: func() any { return &boltOp{err: make(chan error, 1)} }}

// boltOp is one queued write. fn must make no change when it returns an
// error, so that failing writes can share a group with others.
type boltOp struct {
	fn  func(*kvTx) error
	err chan error
}

// BoltOptions tune the bolt store.
type BoltOptions struct {
	// BatchSize caps the writes per group. Default 1000.
	BatchSize int
	// NoSync skips fdatasync: only for benchmarks and tests; a crash loses
	// recent coupons and may accept them twice.
	NoSync bool
	// CommitDelay is how long the committer waits, after a group of two
	// or more writes, before it starts the next group, so that groups
	// grow under heavy concurrent load: fewer, larger log writes and
	// fdatasyncs, for up to this much more latency per write. A lone
	// writer never waits. Default 0: the committer only yields to the
	// goroutines ready to run (see commitLoop), which costs no latency
	// when the CPU is idle.
	CommitDelay time.Duration
}

// OpenBolt opens (creating if needed) the store at path, with its
// write-ahead log at path + ".wal", replaying the log.
func OpenBolt(path string, opt BoltOptions) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoSync: opt.NoSync,
		// The freelist is rebuilt on open instead of written at every commit.
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	log, recs, err := openWAL(path+".wal", opt.NoSync)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: opening the write-ahead log of %s: %w", path, err)
	}
	s := &kvStore{db: db, log: log, kick: make(chan struct{}, 1), done: make(chan struct{}), max: 1000,
		overlay: map[string]change{}}
	if opt.BatchSize > 0 {
		s.max = opt.BatchSize
	}
	s.delay = opt.CommitDelay
	s.group = map[string]change{}
	// Replay: the log's records into the overlay, then a checkpoint.
	for _, p := range recs {
		if err := decodeChanges(p, func(c change) error {
			if c.bucket() >= nBuckets {
				return fmt.Errorf("%w: bucket %d in the write-ahead log", ErrCorrupt, c.bucket())
			}
			c.val = append([]byte(nil), c.val...)
			s.overlay[c.k] = c
			return nil
		}); err != nil {
			log.close()
			db.Close()
			return nil, err
		}
	}
	if err := s.checkpoint(); err != nil {
		log.close()
		db.Close()
		return nil, fmt.Errorf("store: initialising %s: %w", path, err)
	}
	// The store's identity, made once and kept in the file.
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("meta"))
		if err != nil {
			return err
		}
		if v := b.Get([]byte("id")); len(v) > 0 {
			s.id = string(v)
			return nil
		}
		s.id = newID()
		return b.Put([]byte("id"), []byte(s.id))
	}); err != nil {
		log.close()
		db.Close()
		return nil, fmt.Errorf("store: initialising %s: %w", path, err)
	}
	go s.commitLoop()
	return &Bolt{s}, nil
}

// checkpoint writes the overlay into the bbolt file (one durable
// transaction), then empties the log and the overlay. Only the committer
// (or Open and Close, when it is not running) calls it.
func (s *kvStore) checkpoint() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		var bs [nBuckets]*bolt.Bucket
		for i, name := range bucketNames {
			b, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			bs[i] = b
		}
		// In key order: a B+tree takes sorted writes page after page
		// (each leaf loaded and split once, in order), where the map's
		// random order jumps between them.
		keys := make([]string, 0, len(s.overlay))
		for k := range s.overlay {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			c := s.overlay[k]
			var err error
			if c.del {
				err = bs[c.bucket()].Delete([]byte(c.key()))
			} else {
				err = bs[c.bucket()].Put([]byte(c.key()), c.val)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.log.reset(); err != nil {
		return err
	}
	s.mu.Lock()
	clear(s.overlay)
	s.mu.Unlock()
	return nil
}

// maxKeyLen is the longest key the store uses (a lane's, see Key): keys up
// to this long are looked up without allocating.
const maxKeyLen = 36

// kvTx is what a write sees: its group's earlier changes, then the
// overlay, then the bbolt file.
type kvTx struct {
	s       *kvStore
	group   map[string]change
	order   []string // keys of group in first-change order
	boltTx  *bolt.Tx // opened on the first read the overlay cannot answer
	err     error    // opening boltTx failed
	pending []change // this op's changes, kept only if it succeeds
}

func (t *kvTx) get(b byte, key []byte) []byte {
	var buf [1 + maxKeyLen]byte
	k := fullKey(buf[:], b, key)
	for i := len(t.pending) - 1; i >= 0; i-- {
		if c := &t.pending[i]; c.k == string(k) {
			return c.val
		}
	}
	if c, ok := t.group[string(k)]; ok {
		return c.val
	}
	if c, ok := t.s.overlay[string(k)]; ok { // the committer is the overlay's only writer
		return c.val
	}
	if t.s.peb != nil {
		if t.err != nil {
			return nil
		}
		var v []byte
		v, t.err = pebbleGet(t.s.peb, k)
		return v
	}
	if t.boltTx == nil && t.err == nil {
		t.boltTx, t.err = t.s.db.Begin(false)
	}
	if t.err != nil {
		return nil
	}
	if v := t.boltTx.Bucket(bucketNames[b]).Get(key); v != nil {
		return append([]byte(nil), v...)
	}
	return nil
}

// put records a change of key to a copy of val.
func (t *kvTx) put(b byte, key, val []byte) { t.putOwned(b, key, append([]byte(nil), val...)) }

// putOwned is put for a val that nobody else holds or changes: the store
// keeps it as is.
func (t *kvTx) putOwned(b byte, key, val []byte) {
	var buf [1 + maxKeyLen]byte
	t.pending = append(t.pending, change{k: string(fullKey(buf[:], b, key)), val: val})
}

func (t *kvTx) del(b byte, key []byte) {
	var buf [1 + maxKeyLen]byte
	t.pending = append(t.pending, change{k: string(fullKey(buf[:], b, key)), del: true})
}

// maxYields bounds the yields of the committer gathering one group.
const maxYields = 8

// commitLoop runs queued writes in groups, each one log record, until
// the store is closed and its queue empty.
func (s *kvStore) commitLoop() {
	defer close(s.done)
	batch := make([]*boltOp, 0, s.max)
	for {
		s.qmu.Lock()
		for len(s.queue) == 0 && !s.closed {
			s.qmu.Unlock()
			<-s.kick
			s.qmu.Lock()
		}
		if len(s.queue) == 0 { // closed, and every write answered
			s.qmu.Unlock()
			return
		}
		s.qmu.Unlock()
		if s.lastGroup > 1 && s.delay > 0 {
			time.Sleep(s.delay)
		}
		// Gather the group. Between takes the committer yields: when the
		// CPU is busy, the goroutines ready to run (requests on their way
		// to a payment) run first and join this group, so that one
		// fdatasync serves more payments; when it is idle, yielding
		// returns at once. It stops at the first yield that brings no one.
		batch = batch[:0]
		for yield := 0; ; yield++ {
			before := len(batch)
			s.qmu.Lock()
			n := min(len(s.queue), s.max-len(batch))
			batch = append(batch, s.queue[:n]...)
			rest := copy(s.queue, s.queue[n:])
			clear(s.queue[rest:])
			s.queue = s.queue[:rest]
			s.qmu.Unlock()
			if yield == maxYields || len(batch) >= s.max || (yield > 0 && len(batch) == before) {
				break
			}
			runtime.Gosched()
		}
		s.lastGroup = len(batch)
		errs := s.runGroup(batch)
		for i, op := range batch {
			op.err <- errs[i] // the last use of op: its writer may reuse it
		}
		clear(batch)
	}
}

// runGroup runs a group of writes and makes their changes durable.
func (s *kvStore) runGroup(batch []*boltOp) []error {
	errs := s.errs[:0]
	for range batch {
		errs = append(errs, nil)
	}
	s.errs = errs
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	if s.broken != nil {
		return fail(s.broken)
	}
	clear(s.group)
	t := &kvTx{s: s, group: s.group, order: s.order[:0]}
	for i, op := range batch {
		t.pending = t.pending[:0]
		if errs[i] = op.fn(t); errs[i] != nil {
			continue
		}
		for _, c := range t.pending {
			if _, ok := t.group[c.k]; !ok {
				t.order = append(t.order, c.k)
			}
			t.group[c.k] = c
		}
	}
	s.order = t.order
	if t.boltTx != nil {
		t.boltTx.Rollback()
	}
	if t.err != nil {
		return fail(mapClosed(t.err))
	}
	if len(t.group) == 0 {
		return errs
	}
	started := time.Now()
	var err error
	if s.peb != nil {
		err = s.pebbleCommit(t.order, t.group)
	} else {
		p := s.payload[:0]
		for _, k := range t.order {
			p = appendChange(p, t.group[k])
		}
		s.payload = p
		err = s.log.append(p)
		if errors.Is(err, errWALFull) {
			if err = s.checkpoint(); err == nil {
				started = time.Now()
				err = s.log.append(p)
			}
		}
	}
	if err == nil {
		s.groups.Add(1)
		ok := 0
		for _, e := range errs {
			if e == nil {
				ok++
			}
		}
		s.writes.Add(uint64(ok))
		s.syncNanos.Add(uint64(time.Since(started)))
	}
	if err != nil {
		// The log's state is unknown (fsync failures may drop pages):
		// refuse every later write rather than risk accepting a coupon
		// twice. Reopening the store replays what reached the disk.
		s.broken = fmt.Errorf("store: the write-ahead log failed; writes are refused until the process restarts and replays it: %w", err)
		return fail(s.broken)
	}
	if s.peb != nil {
		return errs // in the database: no overlay
	}
	s.mu.Lock()
	for k, c := range t.group {
		s.overlay[k] = c
	}
	s.mu.Unlock()
	return errs
}

// write queues fn and waits until its group is durable.
func (s *kvStore) write(fn func(*kvTx) error) error {
	op := opPool.Get().(*boltOp)
	op.fn = fn
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		op.fn = nil
		opPool.Put(op)
		return ErrClosed
	}
	s.queue = append(s.queue, op)
	first := len(s.queue) == 1
	s.qmu.Unlock()
	if first {
		s.kickCommitter()
	}
	err := <-op.err // every queued write is answered, even after Close
	op.fn = nil
	opPool.Put(op)
	return err
}

// writeAll queues fns together (in order, so that consecutive groups take
// them) and waits until every one is durable, returning their results.
func (s *kvStore) writeAll(fns []func(*kvTx) error) []error {
	errs := make([]error, len(fns))
	if len(fns) == 0 {
		return errs
	}
	ops := make([]*boltOp, len(fns))
	for i, fn := range fns {
		ops[i] = opPool.Get().(*boltOp)
		ops[i].fn = fn
	}
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		for i, op := range ops {
			op.fn = nil
			opPool.Put(op)
			errs[i] = ErrClosed
		}
		return errs
	}
	first := len(s.queue) == 0
	s.queue = append(s.queue, ops...)
	s.qmu.Unlock()
	if first {
		s.kickCommitter()
	}
	for i, op := range ops {
		errs[i] = <-op.err
		op.fn = nil
		opPool.Put(op)
	}
	return errs
}

// kickCommitter wakes the committer after the queue went from empty to
// not empty.
func (s *kvStore) kickCommitter() {
	select {
	case s.kick <- struct{}{}:
	default: // a kick is already pending
	}
}

// read runs fn with a getter and a scanner of buckets that see the
// overlay, then the durable layer. scan calls fn for every entry of a
// bucket, in no particular order; k and v are valid during the call only.
func (s *kvStore) read(fn func(get func(b byte, key []byte) []byte, scan func(b byte, fn func(k, v []byte) error) error) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.peb != nil {
		return s.pebbleRead(fn)
	}
	return mapClosed(s.db.View(func(tx *bolt.Tx) error {
		return fn(func(b byte, key []byte) []byte {
			var buf [1 + maxKeyLen]byte
			if c, ok := s.overlay[string(fullKey(buf[:], b, key))]; ok {
				return c.val
			}
			return tx.Bucket(bucketNames[b]).Get(key)
		}, func(b byte, fn func(k, v []byte) error) error {
			// Those the overlay holds, then those of the file that the
			// overlay does not mention (it may have deleted them).
			for k, c := range s.overlay {
				if k[0] == b && !c.del {
					if err := fn([]byte(c.key()), c.val); err != nil {
						return err
					}
				}
			}
			cur := tx.Bucket(bucketNames[b]).Cursor()
			for k, v := cur.First(); k != nil; k, v = cur.Next() {
				var buf [1 + maxKeyLen]byte
				if _, ok := s.overlay[string(fullKey(buf[:], b, k))]; ok {
					continue
				}
				if err := fn(k, v); err != nil {
					return err
				}
			}
			return nil
		})
	}))
}

func mapClosed(err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// ID implements Store: made when the file was created, kept in it.
func (s *kvStore) ID(context.Context) (string, error) { return s.id, nil }

// Open implements Store.
func (s *kvStore) Open(_ context.Context, id coupons.LaneID, first Record, proof ...[32]byte) (Record, error) {
	k := Key(id)
	var encProof []byte
	if len(proof) > 0 {
		var err error
		if encProof, err = encodeProof(proof); err != nil {
			return Record{}, err
		}
	}
	var out Record
	err := s.write(func(t *kvTx) error {
		if encProof != nil && t.get(bProofs, k[:]) == nil {
			t.put(bProofs, k[:], encProof) // in the same log record as the lane
		}
		if v := t.get(bLanes, k[:]); v != nil {
			return out.UnmarshalBinary(v)
		}
		out = first
		enc, err := out.MarshalBinary()
		if err != nil {
			return err
		}
		t.put(bLanes, k[:], enc)
		return nil
	})
	return out, mapClosed(err)
}

// Get implements Store.
func (s *kvStore) Get(_ context.Context, id coupons.LaneID) (Record, error) {
	k := Key(id)
	var out Record
	err := s.read(func(get func(byte, []byte) []byte, _ func(byte, func(k, v []byte) error) error) error {
		v := get(bLanes, k[:])
		if v == nil {
			return ErrNotFound
		}
		return out.UnmarshalBinary(v)
	})
	return out, err
}

// Advance implements Store.
func (s *kvStore) Advance(_ context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next Record, charge int64) error {
	return s.advance(id, prevLast, prevCredit, next, charge, false)
}

// Reopen implements Store.
func (s *kvStore) Reopen(_ context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next Record) error {
	return s.advance(id, prevLast, prevCredit, next, 0, true)
}

func (s *kvStore) advance(id coupons.LaneID, prevLast, prevCredit uint32, next Record, charge int64, reopen bool) error {
	fn, err := s.advanceOp(id, prevLast, prevCredit, next, charge, reopen)
	if err != nil {
		return err
	}
	return mapClosed(s.write(fn))
}

// advanceOp is the write of an Advance (or a Reopen).
func (s *kvStore) advanceOp(id coupons.LaneID, prevLast, prevCredit uint32, next Record, charge int64, reopen bool) (func(*kvTx) error, error) {
	k := Key(id)
	enc, err := next.MarshalBinary()
	if err != nil {
		return nil, err
	}
	capNanos, grant, nextLast := next.Meta.Cap, next.Meta.Grant, next.State.Last // the closure captures these, not all of next
	return func(t *kvTx) error {
		v := t.get(bLanes, k[:])
		if v == nil {
			return ErrNotFound
		}
		last, credit, err := recordPosition(v)
		if err != nil {
			return err
		}
		if err := checkWrite(v, enc, reopen); err != nil {
			return err
		}
		if last != prevLast || credit != prevCredit {
			return fmt.Errorf("%w: at %d (credit %d), expected %d (credit %d)", ErrConflict, last, credit, prevLast, prevCredit)
		}
		// Every check comes before the first change (see boltOp).
		if capNanos > 0 && charge > 0 {
			var spent int64
			if v := t.get(bGrants, grant[:]); len(v) == 8 {
				spent = int64(binary.BigEndian.Uint64(v))
			}
			total, err := coupons.ChargeCap(spent, capNanos, charge)
			if err != nil {
				return err
			}
			t.put(bGrants, grant[:], binary.BigEndian.AppendUint64(nil, uint64(total)))
		}
		t.putOwned(bLanes, k[:], enc) // made above for this write only
		if t.get(bDirty, k[:]) == nil && nextLast > redeemedOf(t, k[:]) {
			// newly pending: at the back of the order (a write that
			// leaves nothing to redeem, such as a Leased store's release,
			// marks nothing)
			t.putOwned(bDirty, k[:], queued{due: time.Now().UnixNano()}.encode())
		}
		return nil
	}, nil
}

// redeemedOf is what the broker paid of the lane whose key is k.
func redeemedOf(t *kvTx, k []byte) uint32 {
	if rv := t.get(bRedeemed, k); len(rv) == 4 {
		return binary.BigEndian.Uint32(rv)
	}
	return 0
}

// advanceBatch implements batchAdvancer: the Advances (no charge) of ws,
// queued together so that they share groups (one fdatasync for up to
// BatchSize of them), each with its own result.
func (s *kvStore) advanceBatch(ws []batchWrite) []error {
	errs := make([]error, len(ws))
	fns := make([]func(*kvTx) error, 0, len(ws))
	at := make([]int, 0, len(ws))
	for i, w := range ws {
		fn, err := s.advanceOp(w.id, w.prevLast, w.prevCredit, w.next, 0, false)
		if err != nil {
			errs[i] = err
			continue
		}
		fns = append(fns, fn)
		at = append(at, i)
	}
	for j, err := range s.writeAll(fns) {
		errs[at[j]] = mapClosed(err)
	}
	return errs
}

// MarkRevoked implements Store.
func (s *kvStore) MarkRevoked(_ context.Context, id coupons.LaneID, certs [][32]byte, keys []spki.KeyHash) error {
	k := Key(id)
	return mapClosed(s.write(func(t *kvTx) error {
		v := t.get(bLanes, k[:])
		if v == nil {
			return ErrNotFound
		}
		var r Record
		if err := r.UnmarshalBinary(v); err != nil {
			return err
		}
		if len(certs) == 0 || !r.Meta.SamePrincipals(certs, keys) {
			return fmt.Errorf("%w: the lane holds other principals", ErrConflict)
		}
		if r.Meta.Revoked {
			return nil
		}
		r.Meta.Revoked = true
		enc, err := r.MarshalBinary()
		if err != nil {
			return err
		}
		t.putOwned(bLanes, k[:], enc)
		return nil
	}))
}

// Close implements Store: it refuses new writes, lets the committer
// finish those already queued, checkpoints the log into the bbolt file
// and closes both.
// Later and concurrent calls wait for the first and return its result.
func (s *kvStore) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

// stopCommitter refuses new writes and waits until the committer has
// answered every queued one and stopped.
func (s *kvStore) stopCommitter() {
	s.qmu.Lock()
	s.closed = true
	s.qmu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	<-s.done
}

func (s *kvStore) close() error {
	s.stopCommitter()
	if s.peb != nil {
		return s.pebbleClose()
	}
	var err error
	if s.broken == nil {
		err = s.checkpoint()
	}
	if cerr := s.log.close(); err == nil {
		err = cerr
	}
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// SetProof implements Store.
func (s *kvStore) SetProof(_ context.Context, id coupons.LaneID, proof [][32]byte) error {
	enc, err := encodeProof(proof)
	if err != nil {
		return err
	}
	k := Key(id)
	return mapClosed(s.write(func(t *kvTx) error {
		t.put(bProofs, k[:], enc)
		return nil
	}))
}

// Pending implements Store. It reads every pending lane's place in the
// order (12 bytes each) to pick the longest waiting: about 25ms for
// 100,000 pending lanes, once per batch of a redemption run.
func (s *kvStore) Pending(_ context.Context, now time.Time, limit int) ([]Pending, error) {
	var out []Pending
	cutoff := now.UnixNano()
	err := s.read(func(get func(byte, []byte) []byte, scan func(byte, func(k, v []byte) error) error) error {
		type due struct {
			k string
			q queued
		}
		var list []due
		add := func(k string, v []byte) {
			if q := decodeQueued(v); q.due <= cutoff && len(k) == 36 {
				list = append(list, due{k, q})
			}
		}
		if err := scan(bDirty, func(k, v []byte) error {
			add(string(k), v)
			return nil
		}); err != nil {
			return err
		}
		slices.SortFunc(list, func(a, b due) int {
			if c := cmp.Compare(a.q.due, b.q.due); c != 0 {
				return c
			}
			return cmp.Compare(a.k, b.k)
		})
		for _, d := range list {
			if len(out) >= limit {
				break
			}
			k := []byte(d.k)
			v := get(bLanes, k)
			if v == nil {
				continue
			}
			var r Record
			if err := r.UnmarshalBinary(v); err != nil {
				return err
			}
			var done uint32
			if rv := get(bRedeemed, k); len(rv) == 4 {
				done = binary.BigEndian.Uint32(rv)
			}
			if done >= r.State.Last {
				continue
			}
			p := Pending{ID: laneOfKey(k), Index: r.State.Last, Value: r.State.LastValue, Redeemed: done, Anchor: r.Meta.Anchor, Tries: d.q.tries}
			if pv := get(bProofs, k); pv != nil {
				var err error
				if p.Proof, err = decodeProof(pv); err != nil {
					return err
				}
			}
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// Redeemed implements Store.
func (s *kvStore) Redeemed(_ context.Context, id coupons.LaneID, index uint32) error {
	k := Key(id)
	return mapClosed(s.write(func(t *kvTx) error {
		var done uint32
		if rv := t.get(bRedeemed, k[:]); len(rv) == 4 {
			done = binary.BigEndian.Uint32(rv)
		}
		if index > done {
			done = index
			t.put(bRedeemed, k[:], binary.BigEndian.AppendUint32(nil, done))
		}
		if t.get(bRefused, k[:]) != nil {
			t.del(bRefused, k[:])
		}
		if v := t.get(bLanes, k[:]); v != nil {
			last, _, err := recordPosition(v)
			switch {
			case err != nil:
			case done >= last:
				t.del(bDirty, k[:])
			default: // newer coupons: to the back of the order
				t.putOwned(bDirty, k[:], queued{due: time.Now().UnixNano()}.encode())
			}
		}
		return nil
	}))
}

// Postpone implements Store.
func (s *kvStore) Postpone(_ context.Context, id coupons.LaneID, until time.Time) error {
	k := Key(id)
	return mapClosed(s.write(func(t *kvTx) error {
		v := t.get(bLanes, k[:])
		if v == nil || t.get(bRefused, k[:]) != nil {
			return nil // no lane, or refused for good: not pending
		}
		// Pending means coupons not paid yet (a mark from before the order
		// was kept reads as absent, see kvTx.get).
		last, _, err := recordPosition(v)
		if err != nil {
			return err
		}
		var done uint32
		if rv := t.get(bRedeemed, k[:]); len(rv) == 4 {
			done = binary.BigEndian.Uint32(rv)
		}
		if done >= last {
			return nil
		}
		q := decodeQueued(t.get(bDirty, k[:]))
		t.putOwned(bDirty, k[:], queued{due: until.UnixNano(), tries: q.tries + 1}.encode())
		return nil
	}))
}

// Refuse implements Store.
func (s *kvStore) Refuse(_ context.Context, r Refusal) error {
	k := Key(r.ID)
	enc := encodeRefusal(r)
	return mapClosed(s.write(func(t *kvTx) error {
		t.putOwned(bRefused, k[:], enc)
		t.del(bDirty, k[:])
		return nil
	}))
}

// Refusals implements Store.
func (s *kvStore) Refusals(_ context.Context, limit int) ([]Refusal, error) {
	var out []Refusal
	err := s.read(func(_ func(byte, []byte) []byte, scan func(byte, func(k, v []byte) error) error) error {
		m := map[string][]byte{}
		if err := scan(bRefused, func(k, v []byte) error {
			m[string(k)] = append([]byte(nil), v...)
			return nil
		}); err != nil {
			return err
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys[:min(len(keys), max(limit, 0))] {
			r, err := decodeRefusal([]byte(k), m[k])
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}
