package caddymodule

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testredis"
	"github.com/ecoupons/ecoupons/store"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// startGate is gateOn with a stop function (called at most once, also
// when the test ends), so that a test can restart a gate on its store.
func (bw *brokerWorld) startGate(t *testing.T, secretFile, storeJSON string) (*Gate, func()) {
	g := &Gate{Vendor: "news.example", BrokerKeys: []string{bw.brokerPub}, Broker: bw.srv.URL, VendorKey: bw.vendorPEM, Price: 1, LaneRate: -1,
		Mode: ModeOffline, RedeemEvery: caddy.Duration(time.Hour), SecretFile: secretFile, StoreRaw: []byte(storeJSON)}
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	var once sync.Once
	stop := func() { once.Do(func() { g.Cleanup(); cancel() }) }
	t.Cleanup(stop)
	if err := g.Provision(cctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	return g, stop
}

// junkLanes puts n pending lanes of a book the broker does not know,
// whose IDs sort before every real book's (all zeros), into the store.
func junkLanes(t *testing.T, s store.Store, n int) {
	t.Helper()
	ctx := context.Background()
	meta := store.Meta{Length: 64, Unit: 1_000_000, Currency: "EUR", NotAfter: time.Now().Add(time.Hour)}
	meta.Anchor[0] = 1
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l := w; l < n; l += 8 {
				id := coupons.LaneID{Lane: uint32(l)}
				r, err := s.Open(ctx, id, store.NewRecord(meta))
				if err == nil {
					next := r
					next.State.Last, next.State.LastValue = 1, coupons.Value{2}
					err = s.Advance(ctx, id, 0, 0, next, 0)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestJunkLanesCannotStarveRedemption: 600 pending lanes of a book the
// broker does not know, which have waited longer than an honest lane and
// whose IDs sort before it, used to fill every batch for ever (refused,
// left pending, retried and logged every run; on bolt after a restart the
// same 500 came first in every run and the honest lane was never paid,
// its escrow going back to the owner after the book's expiry). Now the
// honest lane is paid in the first run, the junk lanes leave the pending
// set as refused with their reason (counted in the refused metric), and a
// restart of a bolt gate keeps them refused. On memory, bolt and Redis.
func TestJunkLanesCannotStarveRedemption(t *testing.T) {
	for _, backend := range []string{"memory", "bolt", "redis"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			bw := newBrokerWorld(t)
			secret := filepath.Join(bw.dir, "secret")
			var storeJSON string
			switch backend {
			case "memory":
				storeJSON = `{"backend":"memory"}`
			case "bolt":
				storeJSON = boltStoreJSON(filepath.Join(bw.dir, "spent.db"))
			case "redis":
				storeJSON = fmt.Sprintf(`{"backend":"redis","url":%q,"prefix":"starve:"}`, testredis.Start(t))
			}
			g, stop := bw.startGate(t, secret, storeJSON)
			const junk = 600
			junkLanes(t, g.store, junk)
			time.Sleep(2 * time.Millisecond) // the honest lane waits less than every junk lane
			c := newClient(t, nil, bw.owner, 1)
			c.nonce = gateNonce(g)
			for k := 0; k < 5; k++ {
				if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
					t.Fatalf("payment: %d %s", rec.Code, rec.Body)
				}
			}
			if backend == "bolt" { // a restart: the pending lanes come from the bbolt file
				stop()
				g, stop = bw.startGate(t, secret, storeJSON)
			}
			refused := promtest.ToFloat64(gateMetrics.redemptions.WithLabelValues("news.example", "refused"))

			n, err := g.redeemOnce(ctx)
			if err != nil || n != 1 {
				t.Fatalf("first run: %d lanes paid, %v; want the honest lane", n, err)
			}
			a, err := bw.db.Account(ctx, "vendor:news.example:EUR")
			if err != nil || a.Balance != 5*1_000_000 {
				t.Fatalf("vendor paid %d (%v), want 5 coupons", a.Balance, err)
			}
			if p, err := g.store.Pending(ctx, time.Now().Add(1000*time.Hour), 1000); err != nil || len(p) != 0 {
				t.Fatalf("%d lanes still pending (%v), want none", len(p), err)
			}
			refs, err := g.store.Refusals(ctx, 2*junk)
			if err != nil || len(refs) != junk {
				t.Fatalf("%d lanes listed as refused (%v), want %d", len(refs), err, junk)
			}
			for _, r := range refs {
				if r.ID.Book != ([32]byte{}) || r.Code != broker.RedeemUnknownBook || r.Index != 1 || r.Message == "" {
					t.Fatalf("refusal %+v", r)
				}
			}
			if got := promtest.ToFloat64(gateMetrics.redemptions.WithLabelValues("news.example", "refused")) - refused; got != junk {
				t.Errorf("refused metric rose by %v, want %d", got, junk)
			}
			// The next run sends nothing: refused lanes are not retried.
			if n, err := g.redeemOnce(ctx); err != nil || n != 0 {
				t.Fatalf("second run: %d %v", n, err)
			}
			if backend == "bolt" {
				stop()
				g, _ = bw.startGate(t, secret, storeJSON)
				if refs, err := g.store.Refusals(ctx, 2*junk); err != nil || len(refs) != junk {
					t.Fatalf("after a restart: %d refused lanes (%v)", len(refs), err)
				}
				if p, _ := g.store.Pending(ctx, time.Now().Add(1000*time.Hour), 1000); len(p) != 0 {
					t.Fatalf("after a restart: %d lanes pending", len(p))
				}
			}
		})
	}
}

// TestTemporaryRefusalBacksOff: a lane the broker refuses for now
// (redeem_more_often) or whose batch fails (the broker unreachable) stays
// pending and waits redeem_every, then twice as long, and so on, instead
// of being sent again at every run; it is never listed as refused; once
// the broker accepts it, it is paid.
func TestTemporaryRefusalBacksOff(t *testing.T) {
	ctx := context.Background()
	bw := newBrokerWorld(t)
	bw.b.MaxRedeemSteps = 2
	g := bw.gate(t, ModeOffline, filepath.Join(bw.dir, "secret"))
	// The test runs the worker's steps itself (redeemOnce, on its own
	// clock): the worker is stopped, and has ended, before the test
	// changes the gate's settings.
	g.stopRedeem()
	g.RedeemEvery = caddy.Duration(time.Minute) // for the back-off
	var clock time.Time
	g.redeemClock = func() time.Time { return clock }
	every := time.Duration(g.RedeemEvery)
	c := newClient(t, nil, bw.owner, 0)
	c.nonce = gateNonce(g)
	pay := func(n int) {
		for k := 0; k < n; k++ {
			if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
				t.Fatalf("payment: %d %s", rec.Code, rec.Body)
			}
		}
	}
	pay(5)
	clock = time.Now() // after the payments: the lane is due
	tries := func() uint32 {
		t.Helper()
		p, err := g.store.Pending(ctx, clock.Add(1000*time.Hour), 10)
		if err != nil || len(p) != 1 {
			t.Fatalf("pending: %+v %v", p, err)
		}
		return p[0].Tries
	}
	retry := promtest.ToFloat64(gateMetrics.redemptions.WithLabelValues("news.example", "retry"))
	// Each step: advance the clock, run, and see whether the lane was sent
	// (its tries rose).
	for k, step := range []struct {
		after time.Duration
		tries uint32
	}{
		{0, 1},            // refused: wait redeem_every
		{0, 1},            // not sent again at once
		{every - 1, 1},    // nor before redeem_every
		{1, 2},            // then sent, refused: wait 2 × redeem_every
		{every, 2},        // not yet
		{every, 3},        // sent: wait 4 × redeem_every
		{3 * every, 3},    // not yet
		{every, 4},        // sent: wait 8 × redeem_every
		{1000 * every, 5}, // sent: wait 16 × redeem_every (TestRedeemDelay: the cap)
	} {
		clock = clock.Add(step.after)
		if n, err := g.redeemOnce(ctx); err != nil || n != 0 {
			t.Fatalf("step %d: %d %v", k, n, err)
		}
		if got := tries(); got != step.tries {
			t.Fatalf("step %d: %d tries, want %d", k, got, step.tries)
		}
	}
	if got := promtest.ToFloat64(gateMetrics.redemptions.WithLabelValues("news.example", "retry")) - retry; got != 5 {
		t.Errorf("retry metric rose by %v, want 5", got)
	}
	if refs, _ := g.store.Refusals(ctx, 10); len(refs) != 0 {
		t.Fatalf("a lane refused for now is listed as refused: %+v", refs)
	}

	// The broker accepts it now: paid.
	bw.b.MaxRedeemSteps = 100
	clock = clock.Add(maxRedeemBackoff)
	if n, err := g.redeemOnce(ctx); err != nil || n != 1 {
		t.Fatalf("after the broker's limit rose: %d %v", n, err)
	}

	// The broker unreachable: the batch fails, the lane backs off.
	pay(1)
	failed := promtest.ToFloat64(gateMetrics.redemptions.WithLabelValues("news.example", "failed"))
	brokerURL := g.Broker
	g.Broker = "http://127.0.0.1:1"
	if _, err := g.redeemOnce(ctx); err == nil {
		t.Fatal("a run with the broker unreachable did not fail")
	}
	if got := tries(); got != 1 {
		t.Fatalf("after a failed batch: %d tries", got)
	}
	if got := promtest.ToFloat64(gateMetrics.redemptions.WithLabelValues("news.example", "failed")) - failed; got != 1 {
		t.Errorf("failed metric rose by %v, want 1", got)
	}
	if n, err := g.redeemOnce(ctx); err != nil || n != 0 { // not sent: no error
		t.Fatalf("the next run at once: %d %v", n, err)
	}
	g.Broker = brokerURL
	clock = clock.Add(every)
	if n, err := g.redeemOnce(ctx); err != nil || n != 1 {
		t.Fatalf("once the broker is back: %d %v", n, err)
	}
	if p, _ := g.store.Pending(ctx, clock.Add(1000*time.Hour), 10); len(p) != 0 {
		t.Fatalf("still pending: %+v", p)
	}
}

// TestRedeemDelay: the back-off doubles from redeem_every up to the cap.
func TestRedeemDelay(t *testing.T) {
	m := time.Minute
	for _, c := range []struct {
		every time.Duration
		tries uint32
		want  time.Duration
	}{
		{m, 0, m}, {m, 1, m}, {m, 2, 2 * m}, {m, 3, 4 * m}, {m, 7, maxRedeemBackoff}, {m, 1 << 31, maxRedeemBackoff},
		{2 * time.Hour, 5, 2 * time.Hour},
	} {
		if got := redeemDelay(c.every, c.tries); got != c.want {
			t.Errorf("redeemDelay(%v, %d) = %v, want %v", c.every, c.tries, got, c.want)
		}
	}
}
