package lanes

import (
	"context"
	"crypto/rand"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
)

// chain is one lane's hash chain, known in full to the test (the client).
type chain struct {
	id  coupons.LaneID
	tag coupons.LaneTag
	w   []coupons.Value // w[i], i = 0 … length
}

func newChain(t testing.TB, length uint32) *chain {
	t.Helper()
	var c chain
	rand.Read(c.id.Book[:])
	var salt [32]byte
	rand.Read(salt[:])
	c.tag = coupons.NewLaneTag(salt, 0)
	c.w = make([]coupons.Value, length+1)
	rand.Read(c.w[length][:])
	for i := length; i > 0; i-- {
		c.w[i-1] = coupons.Step(&c.tag, i-1, &c.w[i])
	}
	return &c
}

const testNonce = "n0nce"

func (c *chain) meta() store.Meta {
	return store.Meta{Tag: c.tag, Anchor: c.w[0], Length: uint32(len(c.w) - 1), Unit: 1_000_000, Currency: "EUR",
		NotAfter: time.Now().Add(time.Hour), Nonce: testNonce, Certs: [][32]byte{{1}}, Keys: []spki.KeyHash{{2}}}
}

// open records the lane in st as a gate's open would.
func (c *chain) open(t testing.TB, st store.Store) {
	t.Helper()
	if _, err := st.Open(context.Background(), c.id, store.NewRecord(c.meta())); err != nil {
		t.Fatal(err)
	}
}

// pay is the client's payment with coupon i for GET path, bound to it.
func (c *chain) pay(i uint32, path string) *Payment {
	req := coupons.Request{Method: "GET", Host: "news.example", Path: path, Lane: c.id, Index: i, Nonce: testNonce}
	d := req.Digest()
	var next *coupons.Value
	if int(i)+1 < len(c.w) {
		next = &c.w[i+1]
	}
	return &Payment{Coupon: coupons.Pay(c.id, i, c.w[i], next, &d), Request: coupons.Request{Method: "GET", Host: "news.example", Path: path}}
}

// countingStore counts the writes that reach the store, and can fail.
type countingStore struct {
	store.Store
	advances atomic.Int64
	fail     atomic.Bool
}

var errDown = errors.New("store down")

func (s *countingStore) Get(ctx context.Context, id coupons.LaneID) (store.Record, error) {
	if s.fail.Load() {
		return store.Record{}, errDown
	}
	return s.Store.Get(ctx, id)
}

func (s *countingStore) Advance(ctx context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next store.Record, charge int64) error {
	if s.fail.Load() {
		return errDown
	}
	s.advances.Add(1)
	return s.Store.Advance(ctx, id, prevLast, prevCredit, next, charge)
}

// leasingStore stands for store.Leased in these tests: a reservation this
// process wrote is its own (Get hides it); crash forgets them, so that a
// restarted gate sees the reservations left on the store.
type leasingStore struct {
	store.Store
	mu   sync.Mutex
	held map[coupons.LaneID]bool
}

func (s *leasingStore) Get(ctx context.Context, id coupons.LaneID) (store.Record, error) {
	rec, err := s.Store.Get(ctx, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[id] {
		rec.Lease = 0
	}
	return rec, err
}

func (s *leasingStore) Advance(ctx context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next store.Record, charge int64) error {
	err := s.Store.Advance(ctx, id, prevLast, prevCredit, next, charge)
	if err == nil && next.Lease > next.State.Last {
		s.mu.Lock()
		if s.held == nil {
			s.held = map[coupons.LaneID]bool{}
		}
		s.held[id] = true
		s.mu.Unlock()
	}
	return err
}

func (s *leasingStore) crash() {
	s.mu.Lock()
	s.held = nil
	s.mu.Unlock()
}

func newCore(t testing.TB, st store.Store, cfg Config) *Core {
	t.Helper()
	if cfg.Price == 0 {
		cfg.Price = 1
	}
	if cfg.MaxJump == 0 {
		cfg.MaxJump = 1024
	}
	c, err := New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func mustAccept(t testing.TB, c *Core, p *Payment) Result {
	t.Helper()
	res, err := c.Accept(context.Background(), p)
	if err != nil {
		t.Fatalf("coupon %d refused: %v", p.Coupon.Index, err)
	}
	return res
}

// TestPartialPaymentKeptAsCredit: at price 2, one coupon is kept as credit
// (not served), the next completes the price; a jump of three pays one
// request and is not credited the third coupon (see
// TestCouponsSpentElsewhereAreNotCredit).
func TestPartialPaymentKeptAsCredit(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 100)
	c.open(t, st)
	core := newCore(t, st, Config{Price: 2})
	if res := mustAccept(t, core, c.pay(1, "/a")); res.Served || res.Record.Credit != 1 || res.Paid != 1 {
		t.Fatalf("one coupon at price 2: served %v, credit %d, paid %d", res.Served, res.Record.Credit, res.Paid)
	}
	if res := mustAccept(t, core, c.pay(2, "/a")); !res.Served || res.Record.Credit != 0 {
		t.Fatalf("second coupon: served %v, credit %d", res.Served, res.Record.Credit)
	}
	if res := mustAccept(t, core, c.pay(5, "/b")); !res.Served || res.Record.Credit != 0 || res.Paid != 3 {
		t.Fatalf("three coupons at price 2: served %v, credit %d, paid %d", res.Served, res.Record.Credit, res.Paid)
	}
	rec, _ := st.Get(context.Background(), c.id)
	if rec.State.Last != 5 || rec.Credit != 0 {
		t.Fatalf("stored: last %d credit %d", rec.State.Last, rec.Credit)
	}
}

// TestCouponsSpentElsewhereAreNotCredit: a reader spends coupons 1…10 of a
// lane at store B, then pays coupon 11 at store A (whose record is behind)
// and, back at B, coupon 20 after spending 12…19 at A: each gate sees a
// jump, and crediting it would serve the other store's coupons again.
// Each payment pays its request and leaves no credit.
func TestCouponsSpentElsewhereAreNotCredit(t *testing.T) {
	a, b := store.NewMemory(), store.NewMemory()
	c := newChain(t, 100)
	c.open(t, a)
	c.open(t, b)
	coreA, coreB := newCore(t, a, Config{Price: 1}), newCore(t, b, Config{Price: 1})
	for k := uint32(1); k <= 10; k++ {
		mustAccept(t, coreB, c.pay(k, "/b"))
	}
	if res := mustAccept(t, coreA, c.pay(11, "/a")); !res.Served || res.Record.Credit != 0 {
		t.Fatalf("coupon 11 at A after 1…10 at B: served %v, credit %d (B's coupons counted at A)", res.Served, res.Record.Credit)
	}
	for k := uint32(12); k <= 19; k++ {
		mustAccept(t, coreA, c.pay(k, "/a"))
	}
	if res := mustAccept(t, coreB, c.pay(20, "/b")); !res.Served || res.Record.Credit != 0 {
		t.Fatalf("coupon 20 at B after 11…19 at A: served %v, credit %d (A's coupons counted at B)", res.Served, res.Record.Credit)
	}
	// Credit a lane is owed (an upstream failure) is still spent first,
	// one revealed coupon at a time.
	if err := coreB.Refund(context.Background(), c.id); err != nil {
		t.Fatal(err)
	}
	coreB2 := newCore(t, b, Config{Price: 1})
	if res := mustAccept(t, coreB2, c.pay(21, "/b")); !res.Served || res.Record.Credit != 1 {
		t.Fatalf("coupon 21 with 1 coupon of credit at price 1: served %v, credit %d", res.Served, res.Record.Credit)
	}
}

// TestReplayRefused: a coupon accepted once is refused, saying where the
// lane resumes.
func TestReplayRefused(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 100)
	c.open(t, st)
	core := newCore(t, st, Config{})
	mustAccept(t, core, c.pay(1, "/a"))
	mustAccept(t, core, c.pay(2, "/a"))
	_, err := core.Accept(context.Background(), c.pay(2, "/a"))
	var spent *SpentError
	if !errors.As(err, &spent) || spent.Resume != 3 || spent.Lease || !errors.Is(err, coupons.ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
}

// TestReplayAtAnotherGateOfTheFleet: two gates (cores with their own
// caches) on one store. A coupon accepted at gate A is refused at gate B,
// whose cache is behind (its compare-and-set fails, it reads the store and
// sees the replay); B's next payment is accepted after the same refresh.
func TestReplayAtAnotherGateOfTheFleet(t *testing.T) {
	st := &countingStore{Store: store.NewMemory()}
	c := newChain(t, 100)
	c.open(t, st)
	a, b := newCore(t, st, Config{}), newCore(t, st, Config{})
	mustAccept(t, a, c.pay(1, "/a"))
	mustAccept(t, b, c.pay(2, "/a")) // b caches the lane at 2
	mustAccept(t, a, c.pay(3, "/a")) // a is behind: conflict, refresh, accept
	if _, err := b.Accept(context.Background(), c.pay(3, "/a")); !errors.Is(err, coupons.ErrReplay) {
		t.Fatalf("coupon 3 accepted at A then paid at B: %v", err)
	}
	if res := mustAccept(t, b, c.pay(4, "/a")); res.Paid != 1 {
		t.Fatalf("coupon 4 at B paid %d coupons, want 1", res.Paid)
	}
	rec, _ := st.Get(context.Background(), c.id)
	if rec.State.Last != 4 {
		t.Fatalf("store at %d", rec.State.Last)
	}
}

// TestConcurrentGatesAcceptEachCouponOnce: two gates race on the same
// coupons; each coupon is accepted exactly once in all.
func TestConcurrentGatesAcceptEachCouponOnce(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 400)
	c.open(t, st)
	cores := []*Core{newCore(t, st, Config{LaneRate: -1}), newCore(t, st, Config{LaneRate: -1})}
	var accepted [2]atomic.Int64
	done := make(chan struct{})
	for g := range cores {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := uint32(1); i <= 400; i++ {
				if _, err := cores[g].Accept(context.Background(), c.pay(i, "/a")); err == nil {
					accepted[g].Add(1)
				}
			}
		}()
	}
	<-done
	<-done
	if n := accepted[0].Load() + accepted[1].Load(); n != 400 {
		t.Fatalf("%d + %d coupons accepted in all, want 400 (each once)", accepted[0].Load(), accepted[1].Load())
	}
}

// TestStaleCacheBeyondMaxJumpRefreshed: gate A cached a lane at coupon 1;
// gate B moved it to 1101 (more than max_jump later). A's next payment
// (1102) verifies against the store, not its stale cache: accepted, not
// index_jump_too_large for ever.
func TestStaleCacheBeyondMaxJumpRefreshed(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 3000)
	c.open(t, st)
	a, b := newCore(t, st, Config{LaneRate: -1}), newCore(t, st, Config{LaneRate: -1})
	mustAccept(t, a, c.pay(1, "/a"))
	for i := uint32(2); i <= 1101; i++ {
		mustAccept(t, b, c.pay(i, "/a"))
	}
	for i := uint32(1102); i <= 1105; i++ {
		if res := mustAccept(t, a, c.pay(i, "/a")); res.Paid != 1 {
			t.Fatalf("coupon %d paid %d", i, res.Paid)
		}
	}
	// A jump too large from the store's position is still refused.
	if _, err := a.Accept(context.Background(), c.pay(1105+1025, "/a")); !errors.Is(err, coupons.ErrJumpTooLarge) {
		t.Fatalf("a jump of 1025: %v", err)
	}
}

// TestRefundCreditsThePrice: a refund after an upstream failure credits
// the price; the next payment's coupon and the credit pay the next request
// and leave the price as credit again.
func TestRefundCreditsThePrice(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 100)
	c.open(t, st)
	core := newCore(t, st, Config{Price: 2})
	mustAccept(t, core, c.pay(2, "/a"))
	if err := core.Refund(context.Background(), c.id); err != nil {
		t.Fatal(err)
	}
	rec, _ := st.Get(context.Background(), c.id)
	if rec.Credit != 2 || rec.State.Last != 2 {
		t.Fatalf("after refund: credit %d, last %d", rec.Credit, rec.State.Last)
	}
	// The cached entry follows the refund: coupon 3 plus 2 credit.
	if res := mustAccept(t, core, c.pay(3, "/a")); !res.Served || res.Record.Credit != 1 {
		t.Fatalf("after refund: served %v, credit %d", res.Served, res.Record.Credit)
	}
}

// TestCrashWithinLeaseNeverAcceptsTwice: a core with lease 8 writes each
// lane's reservation (leasingStore); a gate restarted after a crash
// (a new core: empty cache) refuses every coupon up to the reservation,
// even those never accepted (it cannot know which were), tells the client
// where to resume, and accepts from there, charging the skipped coupons.
func TestCrashWithinLeaseNeverAcceptsTwice(t *testing.T) {
	st := &leasingStore{Store: store.NewMemory()}
	c := newChain(t, 100)
	c.open(t, st)
	before := newCore(t, st, Config{Lease: 8})
	for i := uint32(1); i <= 3; i++ {
		before.ClearCache() // the lane is read from the store each time
		mustAccept(t, before, c.pay(i, "/a"))
	}
	st.crash()
	rec, _ := st.Get(context.Background(), c.id)
	if rec.Lease != 3+8-1 {
		t.Fatalf("reservation %d after coupon 3 at lease 8, want 10", rec.Lease)
	}
	after := newCore(t, st, Config{Lease: 8}) // the gate restarted
	for _, i := range []uint32{3, 4, 10} {
		_, err := after.Accept(context.Background(), c.pay(i, "/a"))
		var spent *SpentError
		if !errors.As(err, &spent) || spent.Resume != 11 || !spent.Lease {
			t.Fatalf("coupon %d within the reservation after a crash: %v", i, err)
		}
	}
	res := mustAccept(t, after, c.pay(11, "/a"))
	if res.Paid != 8 || !res.Served {
		t.Fatalf("resume at 11: paid %d served %v", res.Paid, res.Served)
	}
	// Coupons 4…10 may have been accepted, and served, before the crash:
	// they are charged, not credited (crediting them would serve them
	// twice).
	if res.Record.Credit != 0 {
		t.Fatalf("resume at 11: credit %d for the coupons within the lease", res.Record.Credit)
	}
	if _, err := after.Accept(context.Background(), c.pay(11, "/a")); !errors.Is(err, coupons.ErrReplay) {
		t.Fatalf("coupon 11 twice: %v", err)
	}
	mustAccept(t, after, c.pay(12, "/a"))
}

// TestLeaseOneWritesNoReservation: lease 1 is per-coupon durability: no
// reservation is written, and a restarted gate takes the next coupon.
func TestLeaseOneWritesNoReservation(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 100)
	c.open(t, st)
	mustAccept(t, newCore(t, st, Config{Lease: 1}), c.pay(1, "/a"))
	rec, _ := st.Get(context.Background(), c.id)
	if rec.Lease > rec.State.Last {
		t.Fatalf("reservation %d at lease 1", rec.Lease)
	}
	mustAccept(t, newCore(t, st, Config{Lease: 1}), c.pay(2, "/a"))
}

// TestStoreDownRefusesWithStoreError: a failing store accepts nothing,
// and its error is a *StoreError (503 at the gate).
func TestStoreDownRefusesWithStoreError(t *testing.T) {
	st := &countingStore{Store: store.NewMemory()}
	c := newChain(t, 100)
	c.open(t, st)
	core := newCore(t, st, Config{})
	mustAccept(t, core, c.pay(1, "/a"))
	st.fail.Store(true)
	var se *StoreError
	if _, err := core.Accept(context.Background(), c.pay(2, "/a")); !errors.As(err, &se) {
		t.Fatalf("cached lane, store down: %v", err)
	}
	core.ClearCache()
	if _, err := core.Accept(context.Background(), c.pay(2, "/a")); !errors.As(err, &se) {
		t.Fatalf("uncached lane, store down: %v", err)
	}
	st.fail.Store(false)
	mustAccept(t, core, c.pay(2, "/a"))
}

// TestUnknownLaneNotOpen and a Check refusal: nothing is cached.
func TestUnknownLaneAndCheckRefusal(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 100)
	core := newCore(t, st, Config{})
	if _, err := core.Accept(context.Background(), c.pay(1, "/a")); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("unknown lane: %v", err)
	}
	c.open(t, st)
	errMisfit := errors.New("other vendor")
	picky := newCore(t, st, Config{Check: func(*store.Meta) error { return errMisfit }})
	if _, err := picky.Accept(context.Background(), c.pay(1, "/a")); !errors.Is(err, errMisfit) {
		t.Fatalf("checked lane: %v", err)
	}
	mustAccept(t, core, c.pay(1, "/a"))
}

// TestExpiredLaneRefused: a lane past its book's or grant's expiry takes
// no payment.
func TestExpiredLaneRefused(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 100)
	c.open(t, st)
	core := newCore(t, st, Config{Now: func() time.Time { return time.Now().Add(2 * time.Hour) }})
	if _, err := core.Accept(context.Background(), c.pay(1, "/a")); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired lane: %v", err)
	}
}

type fakeRevocations struct {
	gen     atomic.Uint64
	revoked atomic.Bool
}

func (f *fakeRevocations) Generation() uint64       { return f.gen.Load() }
func (f *fakeRevocations) Revokes(*store.Meta) bool { return f.revoked.Load() }

// TestRevokedLaneMarkedForEveryGate: a list revoking the lane's chain
// stops it at its next payment and marks it in the store, so another gate
// without that list refuses it too.
func TestRevokedLaneMarkedForEveryGate(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 100)
	c.open(t, st)
	rv := &fakeRevocations{}
	rv.gen.Store(1)
	var marked atomic.Int64
	core := newCore(t, st, Config{Revocations: rv, OnRevoked: func(coupons.LaneID) { marked.Add(1) }})
	mustAccept(t, core, c.pay(1, "/a"))
	rv.revoked.Store(true)
	rv.gen.Store(2)
	if _, err := core.Accept(context.Background(), c.pay(2, "/a")); !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("revoked lane: %v", err)
	}
	if marked.Load() != 1 {
		t.Fatalf("OnRevoked called %d times", marked.Load())
	}
	other := newCore(t, st, Config{})
	if _, err := other.Accept(context.Background(), c.pay(2, "/a")); !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("marked lane at a gate without the list: %v", err)
	}
}

// TestLaneRateLimitWithoutCache: the lane's rate limit holds whatever the
// cache admits (the cache is cleared before every payment).
func TestLaneRateLimitWithoutCache(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 100)
	c.open(t, st)
	now := time.Now()
	core := newCore(t, st, Config{LaneRate: 2, Now: func() time.Time { return now }})
	var got []bool
	for i := uint32(1); i <= 5; i++ {
		core.ClearCache()
		_, err := core.Accept(context.Background(), c.pay(i, "/a"))
		var rl *RateLimitedError
		got = append(got, errors.As(err, &rl))
	}
	if got[0] || got[1] || !got[2] || !got[3] || !got[4] {
		t.Fatalf("rate limited: %v, want [false false true true true]", got)
	}
}

// TestLaneBucketsCrowdedStripe: a lane's bucket is kept while at most
// laneBuckets lanes of its stripe are paying (here: it stays drained while
// seven other lanes of its stripe drain theirs), and a lane whose bucket
// has filled up again gives its slot away losing nothing.
func TestLaneBucketsCrowdedStripe(t *testing.T) {
	core := newCore(t, store.NewMemory(), Config{LaneRate: 2})
	now := time.Now()
	const a = uint64(5) // lane a and others of stripe 5
	other := func(k int) uint64 { return a + uint64(k)*Stripes }
	for k := 0; k < 2; k++ {
		if wait := core.rateLimit(a, now); wait != 0 {
			t.Fatalf("payment %d of lane a refused", k)
		}
	}
	for k := 1; k < laneBuckets; k++ {
		for j := 0; j < 3; j++ {
			core.rateLimit(other(k), now)
		}
	}
	if wait := core.rateLimit(a, now); wait == 0 {
		t.Fatal("lane a's drained bucket was dropped while its stripe held 8 lanes")
	}
	// A second later every bucket is full again: new lanes take their
	// slots, and lane a (also full by then) loses nothing by it.
	now = now.Add(time.Second)
	for k := laneBuckets; k < 2*laneBuckets; k++ {
		core.rateLimit(other(k), now)
	}
	for k := 0; k < 2; k++ {
		if wait := core.rateLimit(a, now); wait != 0 {
			t.Fatalf("lane a, full again, refused at payment %d", k)
		}
	}
	if wait := core.rateLimit(a, now); wait == 0 {
		t.Fatal("lane a's third payment in the instant passed")
	}
}

// BenchmarkAccept is the core's steady state: one coupon per payment on a
// cached lane, memory store.
func BenchmarkAccept(b *testing.B) {
	st := store.NewMemory()
	c := newChain(b, 1<<16)
	c.open(b, st)
	core := newCore(b, st, Config{LaneRate: -1})
	pays := make([]*Payment, 0, 1<<16)
	for i := uint32(1); i < 1<<16; i++ {
		pays = append(pays, c.pay(i, "/a"))
	}
	b.ReportAllocs()
	k := 0
	for b.Loop() {
		if k == len(pays) {
			b.StopTimer()
			st = store.NewMemory()
			c.open(b, st)
			core = newCore(b, st, Config{LaneRate: -1})
			k = 0
			b.StartTimer()
		}
		if _, err := core.Accept(context.Background(), pays[k]); err != nil {
			b.Fatal(err)
		}
		k++
	}
}

// TestAcceptTo: AcceptTo fills the caller's result as Accept returns it,
// and zeroes it when it refuses the payment.
func TestAcceptTo(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 8)
	core := newCore(t, st, Config{LaneRate: -1})
	res := Result{Paid: 9, Served: true}
	if err := core.AcceptTo(context.Background(), c.pay(1, "/a"), &res); !errors.Is(err, ErrNotOpen) || !reflect.DeepEqual(res, Result{}) {
		t.Fatalf("unopened lane: %v, result %+v", err, res)
	}
	c.open(t, st)
	if err := core.AcceptTo(context.Background(), c.pay(1, "/a"), &res); err != nil || !res.Served || res.Paid != 1 || res.Record.State.Last != 1 {
		t.Fatalf("first coupon: %v %+v", err, res)
	}
	want, err := core.Accept(context.Background(), c.pay(2, "/a"))
	if err != nil || want.Record.State.Last != 2 {
		t.Fatalf("Accept: %v %+v", err, want)
	}
	if err := core.AcceptTo(context.Background(), c.pay(2, "/a"), &res); err == nil || !reflect.DeepEqual(res, Result{}) {
		t.Fatalf("replay: %v, result %+v", err, res)
	}
}

// TestMeteredPaymentHoldsAWindow: a metered request's payment (Hold) takes
// a window of coupons off the lane in whole units of the price, with the
// lane's credit first; coupons beyond the window are spent, not credited;
// too few for one unit stay as credit; Credit gives back what a response
// did not deliver, durably, and the next window uses it.
func TestMeteredPaymentHoldsAWindow(t *testing.T) {
	st := store.NewMemory()
	c := newChain(t, 200)
	c.open(t, st)
	core := newCore(t, st, Config{Price: 2, MaxJump: 64})
	p := c.pay(8, "/stream")
	p.Hold = 8 // a window of 4 units at price 2
	if res := mustAccept(t, core, p); !res.Served || res.Held != 8 || res.Record.Credit != 0 {
		t.Fatalf("8 coupons for a window of 8: served %v held %d credit %d", res.Served, res.Held, res.Record.Credit)
	}
	// 3 units delivered, one unit (2 coupons) comes back.
	if err := core.Credit(context.Background(), c.id, 2); err != nil {
		t.Fatal(err)
	}
	if rec, _ := st.Get(context.Background(), c.id); rec.Credit != 2 {
		t.Fatalf("stored credit after the credit back: %d", rec.Credit)
	}
	// The next window: 2 coupons of credit and 6 new ones.
	p = c.pay(14, "/stream")
	p.Hold = 8
	if res := mustAccept(t, core, p); !res.Served || res.Held != 8 || res.Record.Credit != 0 || res.Paid != 6 {
		t.Fatalf("credit 2 + 6 coupons: served %v held %d credit %d paid %d", res.Served, res.Held, res.Record.Credit, res.Paid)
	}
	// A jump beyond the window is not credited (it may be coupons spent
	// at another store of the vendor).
	p = c.pay(34, "/stream")
	p.Hold = 8
	if res := mustAccept(t, core, p); !res.Served || res.Held != 8 || res.Record.Credit != 0 {
		t.Fatalf("20 coupons for a window of 8: served %v held %d credit %d", res.Served, res.Held, res.Record.Credit)
	}
	// An odd number: whole units only, the rest stays as credit.
	p = c.pay(39, "/stream")
	p.Hold = 8
	if res := mustAccept(t, core, p); !res.Served || res.Held != 4 || res.Record.Credit != 1 {
		t.Fatalf("5 coupons at price 2: served %v held %d credit %d", res.Served, res.Held, res.Record.Credit)
	}
	// Less than a unit with no credit left: kept, not served.
	core.Credit(context.Background(), c.id, 0)
	p = c.pay(40, "/stream")
	p.Hold = 8
	if res := mustAccept(t, core, p); !res.Served || res.Held != 2 || res.Record.Credit != 0 {
		t.Fatalf("1 coupon + 1 credit: served %v held %d credit %d", res.Served, res.Held, res.Record.Credit)
	}
	p = c.pay(41, "/stream")
	p.Hold = 8
	if res := mustAccept(t, core, p); res.Served || res.Held != 0 || res.Record.Credit != 1 {
		t.Fatalf("1 coupon at price 2: served %v held %d credit %d", res.Served, res.Held, res.Record.Credit)
	}
}
