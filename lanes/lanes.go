// Package lanes is the gate's acceptance core, free of HTTP: it takes a
// payment on a lane (a coupon of a PayWord chain opened earlier), checks
// it against the lane's state and moves that state in the spent-state
// store with a compare-and-set, refreshing a stale cached state from the
// store and retrying on conflicts. It also holds the per-lane rate limit,
// the lane's expiry, the revocation check of the lane's principals, the
// price and credit arithmetic, refunds and spending leases.
//
// One Core serves one route (price, coupon value, lease); routes sharing
// a store share the store's truth, not the Core. The HTTP gate (package
// caddymodule) parses requests, opens lanes, and maps the errors of
// Accept to status codes and reason codes (coupons.Code…).
package lanes

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/store"
)

// Errors of Accept besides the verification errors of package coupons
// (coupons.ErrReplay inside a *SpentError, coupons.ErrJumpTooLarge, …),
// store.ErrRevoked and coupons.ErrCapExceeded.
var (
	// ErrNotOpen means the store holds no such lane: it must be opened
	// (Install) before it takes a payment.
	ErrNotOpen = errors.New("lanes: lane not open here")
	// ErrExpired means the lane's book or grant expired.
	ErrExpired = errors.New("lanes: the lane's book or grant expired")
)

// SpentError refuses a coupon the lane has already accepted (or may have
// accepted before a crash, within a lease). Resume is the first coupon the
// lane takes now. It matches coupons.ErrReplay.
type SpentError struct {
	Resume uint32
	// Lease is true when the coupon was refused because a gate stopped
	// holding a spending lease up to Resume-1 (a crash), not because it
	// was seen: the coupons between the client's and Resume were never
	// accepted, they are skipped.
	Lease bool
}

func (e *SpentError) Error() string {
	if e.Lease {
		return fmt.Sprintf("coupon already spent: the lane resumes at coupon %d (a gate restarted within its spending lease)", e.Resume)
	}
	return fmt.Sprintf("coupon already spent: the lane resumes at coupon %d", e.Resume)
}

// Unwrap makes a SpentError match coupons.ErrReplay.
func (e *SpentError) Unwrap() error { return coupons.ErrReplay }

// RateLimitedError refuses a payment beyond the lane's rate; no coupon
// was spent. Wait is how long until the next one passes.
type RateLimitedError struct{ Wait time.Duration }

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("lanes: lane rate exceeded, retry in %v", e.Wait)
}

// StoreError is a failure of the spent-state store: no payment could be
// accepted safely.
type StoreError struct{ Err error }

func (e *StoreError) Error() string { return "lanes: spent-state store: " + e.Err.Error() }

// Unwrap returns the store's error.
func (e *StoreError) Unwrap() error { return e.Err }

// Revocations is what the core asks about a lane's principals: the
// generation of the lists installed (it changes whenever a list is), and
// whether they revoke a lane opened under m's certificates and keys.
type Revocations interface {
	Generation() uint64
	Revokes(m *store.Meta) bool
}

// Counter counts events (a prometheus.Counter fits).
type Counter interface{ Inc() }

// Config is a route's acceptance policy.
type Config struct {
	// Price is the number of coupons one request costs (at least 1).
	Price uint32
	// MaxJump bounds how far one payment may move a lane.
	MaxJump uint32
	// Lease is the spending lease, in coupons: accepting a coupon past
	// the lane's durable reservation reserves this many more (Lease-1
	// beyond it) in one durable write, and the store may accept the
	// others from memory (store.Leased). 1 (or 0): every coupon is
	// durable before it is accepted.
	Lease uint32
	// LaneRate limits payments per lane per second (with a burst of the
	// same size); negative or zero: no limit.
	LaneRate float64
	// Revocations, when set, are checked against each lane's principals
	// before its payments, and a lane they revoke is marked in the store.
	Revocations Revocations
	// Check, when set, is called on a lane's record when it is read from
	// the store (not on each payment): its error is returned by Accept.
	// The gate refuses lanes opened for another vendor or coupon value,
	// or written before records kept what this gate needs.
	Check func(*store.Meta) error
	// OnRevoked is called when the core marks a lane revoked.
	OnRevoked func(coupons.LaneID)
	// Hit and Miss count the lane cache's hits and misses (optional).
	Hit, Miss Counter
	// CacheLanes is how many lanes the cache holds (default
	// DefaultCacheLanes); a lane found there costs no store read.
	CacheLanes int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultCacheLanes is the lane cache's size when Config.CacheLanes is 0:
// about 100 MiB of records (a cached lane takes about 800 bytes with its
// principals and the cache's bookkeeping; TestLaneCacheHoldsWhatItIsSizedFor
// measures it).
const DefaultCacheLanes = 1 << 17

// Stripes is the number of locks the lanes hash to. A payment holds its
// lane's lock through the store's durable write (a group commit: up to
// commit_delay plus an fdatasync), so two busy lanes sharing a lock wait
// for each other's commits: with 256 locks, most of 256 concurrent lanes
// would share one with another lane; with 4096, about 6% (32 KiB).
const Stripes = 4096

// entry is a cached lane: its record as of the last payment seen here
// (guarded by the lane's stripe lock). Its rate-limit bucket is not here
// but in Core.buckets, so that the limit does not depend on the cache
// admitting the entry.
type entry struct {
	key [36]byte // the lane, checked on lookup (the cache index is a hash)
	rec store.Record
	// gen is the revocation generation at which rec's principals were
	// last found unrevoked; 0: not checked yet.
	gen uint64
}

// reload replaces a cached lane's record by one read from (or written to)
// the store; if its principals changed (the lane was opened again under
// another chain), they are checked again before the next payment.
func (e *entry) reload(rec store.Record) {
	if !rec.Meta.SamePrincipals(e.rec.Meta.Certs, e.rec.Meta.Keys) {
		e.gen = 0
	}
	e.rec = rec
}

// stripe is one of the locks lanes hash to. It remembers the entry its
// last payment used: a lane paying steadily finds it there without a
// cache lookup (ristretto's Get costs more than the rest of the lookup).
type stripe struct {
	sync.Mutex
	last *entry // guarded by the stripe; nil after ClearCache
}

// Core accepts payments on the lanes of one route.
type Core struct {
	store   store.Store
	cfg     Config
	seed    maphash.Seed
	locks   *[Stripes]stripe
	buckets *[Stripes][laneBuckets]laneBucket
	cache   *ristretto.Cache[uint64, *entry]
}

// New returns a core accepting payments into st under cfg.
func New(st store.Store, cfg Config) (*Core, error) {
	if cfg.Price == 0 {
		return nil, errors.New("lanes: price must be at least 1")
	}
	if cfg.MaxJump < cfg.Price {
		return nil, fmt.Errorf("lanes: max_jump %d is below the price %d", cfg.MaxJump, cfg.Price)
	}
	if cfg.Lease == 0 {
		cfg.Lease = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheLanes == 0 {
		cfg.CacheLanes = DefaultCacheLanes
	}
	if cfg.CacheLanes < 1 {
		return nil, fmt.Errorf("lanes: the lane cache must hold at least one lane, got %d", cfg.CacheLanes)
	}
	// Each lane costs 1, and ristretto's own bookkeeping is not counted
	// (IgnoreInternalCost): the cache holds CacheLanes lanes. Counted, it
	// added 56 bytes to each cost of 1 and held about 1/57 of them.
	cache, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{NumCounters: 10 * int64(cfg.CacheLanes), MaxCost: int64(cfg.CacheLanes),
		BufferItems: 64, IgnoreInternalCost: true})
	if err != nil {
		return nil, err
	}
	return &Core{store: st, cfg: cfg, seed: maphash.MakeSeed(), locks: new([Stripes]stripe),
		buckets: new([Stripes][laneBuckets]laneBucket), cache: cache}, nil
}

// Close releases the core's cache (not the store).
func (c *Core) Close() { c.cache.Close() }

// ClearCache forgets every cached lane (the next payments read the store).
func (c *Core) ClearCache() {
	c.cache.Clear()
	for i := range c.locks {
		s := &c.locks[i]
		s.Lock()
		s.last = nil
		s.Unlock()
	}
}

// Lease is the spending lease of the route, in coupons (at least 1).
func (c *Core) Lease() uint32 { return c.cfg.Lease }

// hash is the lane's cache index and stripe.
func (c *Core) hash(key [36]byte) uint64 { return maphash.Comparable(c.seed, key) }

func (c *Core) lock(h uint64) *stripe { return &c.locks[h%Stripes] }

// lookup returns the cached entry of lane key, or nil, with its stripe s
// locked: the stripe's last entry, or the cache's.
func (c *Core) lookup(s *stripe, h uint64, key [36]byte) *entry {
	if ent := s.last; ent != nil && ent.key == key {
		return ent
	}
	if ent, ok := c.cache.Get(h); ok && ent.key == key {
		s.last = ent
		return ent
	}
	return nil
}

// Install makes rec, written to the store by a verified open of lane id
// (store.Open or store.Reopen), the lane's state here.
func (c *Core) Install(id coupons.LaneID, rec store.Record) {
	key := store.Key(id)
	h := c.hash(key)
	l := c.lock(h)
	l.Lock()
	defer l.Unlock()
	if ent := c.lookup(l, h, key); ent != nil {
		ent.reload(rec)
		return
	}
	ent := &entry{key: key, rec: rec}
	c.cache.Set(h, ent, 1)
	l.last = ent
}

// Payment is what Accept takes: the coupon, and the request it pays for
// (its Nonce and Index are filled in by Accept).
type Payment struct {
	Coupon  coupons.Payment
	Request coupons.Request
	// MaxJump, when above the route's, is how far this payment may move
	// the lane (a takeover's first payment walking through what a
	// delegate left of its portion).
	MaxJump uint32
	// Reclaimed is how many coupons beyond the price this payment may
	// leave as credit: the part of a delegate's portion, on a lane of this
	// store, that its owner takes back (the takeover's walk). Any other
	// coupons beyond what is due are spent, not credited (see credit).
	Reclaimed uint32
	// Hold, when above zero, makes the payment a metered request's (a
	// window or a top-up): it may take up to Hold coupons (a window of
	// units at the price) from the payment and the lane's credit, not just
	// the price; Result.Held says how many it took. Zero: a request
	// charged the price.
	Hold uint32
	// Now is when the payment arrived, if the caller has read the clock
	// (Config.Now's) already; zero: Accept reads it.
	Now time.Time
}

// Result is an accepted payment.
type Result struct {
	// Record is the lane's state after the payment.
	Record store.Record
	// Paid is the number of coupons this payment revealed.
	Paid uint32
	// Served is true when the payment (with the lane's credit) covers the
	// price: the request may be served. Otherwise the coupons stay on the
	// lane as credit (Record.Credit).
	Served bool
	// Theft is evidence that the lane's previous request was paid by
	// someone who did not know the next chain value (nil: none).
	Theft *coupons.Theft
	// Digest is the request digest the payment was bound to.
	Digest [32]byte
	// Held is, for a payment with Hold (a metered request), the coupons
	// it took off the lane for the response: a multiple of the price, at
	// least the price when Served. They are the caller's to spend on the
	// response's units, and what it does not spend it gives back with
	// Credit.
	Held uint32
}

// Accept verifies a payment and records it. Errors: ErrNotOpen, an error
// of Config.Check, *RateLimitedError, store.ErrRevoked, ErrExpired,
// *SpentError, the verification errors of coupons.VerifyPaymentUpTo,
// coupons.ErrCapExceeded, *StoreError. No coupon is accepted when it
// returns an error.
func (c *Core) Accept(ctx context.Context, p *Payment) (Result, error) {
	var res Result
	err := c.AcceptTo(ctx, p, &res)
	return res, err
}

// AcceptTo is Accept writing its result to res (zero on error), without
// copying it.
func (c *Core) AcceptTo(ctx context.Context, p *Payment, res *Result) error {
	if err := c.acceptTo(ctx, p, res); err != nil {
		*res = Result{}
		return err
	}
	return nil
}

func (c *Core) acceptTo(ctx context.Context, p *Payment, res *Result) error {
	id := p.Coupon.Lane
	key := store.Key(id)
	h := c.hash(key)
	l := c.lock(h)
	l.Lock()
	defer l.Unlock()
	ent := c.lookup(l, h, key)
	if ent != nil {
		inc(c.cfg.Hit)
	} else {
		inc(c.cfg.Miss)
		rec, err := c.store.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return ErrNotOpen
		}
		if err != nil {
			return &StoreError{err}
		}
		if c.cfg.Check != nil {
			if err := c.cfg.Check(&rec.Meta); err != nil {
				return err
			}
		}
		ent = &entry{key: key, rec: rec}
		c.cache.Set(h, ent, 1)
		l.last = ent
	}
	now := p.Now
	if now.IsZero() {
		now = c.cfg.Now()
	}
	if wait := c.rateLimit(h, now); wait > 0 {
		return &RateLimitedError{Wait: wait}
	}
	// Revocation: a lane marked revoked in the store, or one whose
	// principals a list installed since its last check revokes, takes no
	// payment. In the steady state (no new list) this costs one atomic
	// load and two comparisons.
	if err := c.admit(ctx, id, ent); err != nil {
		return err
	}
	if now.After(ent.rec.Meta.NotAfter) {
		return ErrExpired
	}
	return c.accept(ctx, p, ent, res)
}

// admit checks the lane's principals when they were not checked against
// the lists installed now, or the lane is marked revoked.
func (c *Core) admit(ctx context.Context, id coupons.LaneID, ent *entry) error {
	if ent.rec.Meta.Revoked || (c.cfg.Revocations != nil && ent.gen != c.cfg.Revocations.Generation()) {
		return c.checkRevoked(ctx, id, ent)
	}
	return nil
}

// accept verifies and records the payment on ent, with the lane's lock
// held, into res.
func (c *Core) accept(ctx context.Context, p *Payment, ent *entry, res *Result) error {
	id := p.Coupon.Lane
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// Reloaded from the store: marked by another gate, or opened
			// again under another chain, which is checked before use.
			if err := c.admit(ctx, id, ent); err != nil {
				return err
			}
		}
		cur := &ent.rec // read only until the store took next, the copy written
		st := cur.State
		maxJump := max(c.cfg.MaxJump, p.MaxJump)
		if cur.Lease > st.Last {
			// A gate stopped while it held a spending lease on this lane
			// (a crash): coupons up to the lease may have been accepted.
			if p.Coupon.Index <= cur.Lease {
				if attempt == 0 && c.refresh(ctx, id, ent) {
					continue
				}
				return &SpentError{Resume: cur.Lease + 1, Lease: true}
			}
			maxJump += cur.Lease - st.Last
		}
		p.Request.Lane, p.Request.Index, p.Request.Nonce = id, p.Coupon.Index, cur.Meta.Nonce
		digest := p.Request.Digest()
		paid, theft, err := coupons.VerifyPaymentUpTo(&cur.Meta.Tag, cur.Meta.Length, cur.Meta.PortionEnd(), &st, &p.Coupon, &digest, maxJump)
		if err != nil {
			// A cached state behind the store's (another gate of a fleet
			// moved the lane) refuses valid coupons as replays or as
			// jumps too large: read the store once and try again.
			if attempt == 0 && (errors.Is(err, coupons.ErrReplay) || errors.Is(err, coupons.ErrJumpTooLarge)) && c.refresh(ctx, id, ent) {
				continue
			}
			if errors.Is(err, coupons.ErrReplay) {
				return &SpentError{Resume: cur.State.Last + 1}
			}
			return err
		}
		next := &res.Record // the record written, built in place
		*next = *cur
		next.State, next.Spent = st, st.Last
		var served bool
		var held uint32
		if p.Hold > 0 {
			next.Credit, held, served = hold(cur.Credit, paid, c.cfg.Price, p.Reclaimed, p.Hold)
		} else {
			next.Credit, served = credit(cur.Credit, paid, c.cfg.Price, p.Reclaimed)
		}
		next.Lease = 0
		if c.cfg.Lease > 1 {
			next.Lease = st.Last + c.cfg.Lease - 1
		}
		charge, err := coupons.MulAmount(uint64(paid), cur.Meta.Unit)
		if err != nil {
			return err
		}
		err = c.store.Advance(ctx, id, cur.State.Last, cur.Credit, *next, charge)
		if err == nil {
			next.Lease = 0 // held by the store (or none): nothing to refuse here
			// next is cur with these four fields moved (its Meta is cur's):
			// the cache takes them, not a copy of the whole record.
			cur.State, cur.Spent, cur.Credit, cur.Lease = next.State, next.Spent, next.Credit, 0
			res.Paid, res.Served, res.Theft, res.Digest, res.Held = paid, served, theft, digest, held
			return nil
		}
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			fresh, gerr := c.store.Get(ctx, id)
			if gerr != nil {
				return &StoreError{gerr}
			}
			ent.reload(fresh)
			continue
		}
		if errors.Is(err, store.ErrRevoked) {
			// Another gate marked the lane after this one last read it:
			// the store refused the write, no coupon was accepted.
			ent.rec.Meta.Revoked = true
			return err
		}
		if errors.Is(err, coupons.ErrCapExceeded) {
			return err
		}
		return &StoreError{err}
	}
}

// credit charges a payment of paid coupons on a lane owed owed coupons at
// the price price: served when paid + owed covers the price, and what the
// lane is owed after. Coupons beyond what the request needed (price −
// owed, or the one coupon every payment reveals) and beyond reclaimed (a
// takeover's) are not credited: the gate cannot tell them from coupons
// the client spent at another store of the vendor, or that this gate
// accepted within a spending lease before a crash, and crediting them
// would serve them twice. Too few coupons are all kept as credit.
func credit(owed, paid, price, reclaimed uint32) (uint32, bool) {
	due := uint32(1)
	if owed < price {
		due = max(price-owed, 1)
	}
	counted := min(paid, due+reclaimed)
	if total := owed + counted; total >= price {
		return total - price, true
	}
	return owed + paid, false
}

// hold charges a metered request's payment of paid coupons on a lane owed
// owed coupons: it may take a window of up to want coupons (at least the
// price) from both, in whole units of price. It returns what the lane is
// owed after, the coupons held for the response, and whether they cover
// one unit. Coupons beyond the window (and reclaimed) are spent, not
// credited, as in credit; too few are all kept as credit.
func hold(owed, paid, price, reclaimed, want uint32) (uint32, uint32, bool) {
	want = max(want, price)
	due := uint32(1)
	if owed < want {
		due = want - owed
	}
	counted := min(paid, due+reclaimed)
	total := owed + counted
	if total < price {
		return owed + paid, 0, false
	}
	held := min(total, want) / price * price
	return total - held, held, true
}

// refresh reads the lane from the store and reports whether it differs
// from the cached state (which it replaces).
func (c *Core) refresh(ctx context.Context, id coupons.LaneID, ent *entry) bool {
	fresh, err := c.store.Get(ctx, id)
	if err != nil || (fresh.State.Last == ent.rec.State.Last && fresh.Lease == ent.rec.Lease) {
		return false
	}
	ent.reload(fresh)
	return true
}

// Refund credits price coupons back to a lane whose paid request failed
// upstream: the coupons stay spent, the next payment uses the credit.
func (c *Core) Refund(ctx context.Context, id coupons.LaneID) error {
	return c.Credit(ctx, id, c.cfg.Price)
}

// Credit durably credits n coupons back to a lane: what a metered
// response held (Result.Held) and did not deliver. The coupons stay spent;
// the lane's next payments use the credit.
func (c *Core) Credit(ctx context.Context, id coupons.LaneID, n uint32) error {
	if n == 0 {
		return nil
	}
	key := store.Key(id)
	h := c.hash(key)
	l := c.lock(h)
	l.Lock()
	defer l.Unlock()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var cur store.Record
		if cur, err = c.store.Get(ctx, id); err != nil {
			return err
		}
		next := cur
		next.Credit += n
		if err = c.store.Advance(ctx, id, cur.State.Last, cur.Credit, next, 0); err == nil {
			if ent := c.lookup(l, h, key); ent != nil {
				ent.reload(next)
			}
			return nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return err
}

// checkRevoked decides whether a cached lane may take a payment, with the
// lane's lock held: it returns store.ErrRevoked when the lane is marked
// revoked in the store, or when one of its principals is on a list
// installed here, in which case it marks the lane in the store first (so
// that a restart of this gate and every gate sharing the store refuse it
// too, whatever lists they hold); a *StoreError when the store failed;
// nil when the lane may pay, remembering the revocation generation it was
// checked at. A lane cached as marked is read again, since a new open
// under another chain (a takeover) clears the mark.
func (c *Core) checkRevoked(ctx context.Context, id coupons.LaneID, ent *entry) error {
	for attempt := 0; attempt < 3; attempt++ {
		if ent.rec.Meta.Revoked {
			fresh, err := c.store.Get(ctx, id)
			if err != nil {
				return &StoreError{err}
			}
			ent.reload(fresh)
			if fresh.Meta.Revoked {
				return store.ErrRevoked
			}
		}
		rv := c.cfg.Revocations
		if rv == nil {
			return nil
		}
		gen := rv.Generation() // before the lists are read: a later list bumps it
		if ent.gen == gen {
			return nil
		}
		if !rv.Revokes(&ent.rec.Meta) {
			ent.gen = gen
			return nil
		}
		err := c.store.MarkRevoked(ctx, id, ent.rec.Meta.Certs, ent.rec.Meta.Keys)
		if err == nil {
			ent.rec.Meta.Revoked = true
			if c.cfg.OnRevoked != nil {
				c.cfg.OnRevoked(id)
			}
			return store.ErrRevoked
		}
		if !errors.Is(err, store.ErrConflict) {
			return &StoreError{err}
		}
		// The lane holds other principals now: read and check them.
		fresh, err := c.store.Get(ctx, id)
		if err != nil {
			return &StoreError{err}
		}
		ent.reload(fresh)
		ent.gen = 0
	}
	return &StoreError{fmt.Errorf("lane %s: its principals keep changing", id)}
}

func inc(c Counter) {
	if c != nil {
		c.Inc()
	}
}
