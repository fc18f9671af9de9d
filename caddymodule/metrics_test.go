package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStolenCouponDetectedAndCounted: a thief replays coupon 2 of a lane
// with its own request; the vendor cannot tell yet and serves it, the
// holder's own request with coupon 2 is refused as spent, and the holder's
// next payment reveals the key that exposes the theft, which is counted.
func TestStolenCouponDetectedAndCounted(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	pays := payments(t, g, w, 2, 3, 1)
	thefts := testutil.ToFloat64(gateMetrics.thefts.WithLabelValues("news.example"))
	accepted := testutil.ToFloat64(gateMetrics.payments.WithLabelValues("news.example", "accepted"))

	if rec := serve(g, "GET", "/premium/x", pays[0]); rec.Code != 200 {
		t.Fatalf("coupon 1: %d %s", rec.Code, rec.Body)
	}
	// The thief saw coupon 2's header and rebinds it to its own request
	// with a made-up MAC (it cannot compute the real one without w_3).
	var p coupons.Payment
	if err := coupons.ParsePayment(pays[1].Get("Authorization"), &p); err != nil {
		t.Fatal(err)
	}
	p.MAC = [16]byte{0xde, 0xad}
	if rec := serve(g, "GET", "/premium/secret", http.Header{"Authorization": {p.Header()}}); rec.Code != 200 {
		t.Fatalf("the stolen coupon itself: %d", rec.Code)
	}
	if rec := serve(g, "GET", "/premium/x", pays[1]); rec.Code != 402 {
		t.Fatalf("the holder's coupon 2 after the theft: %d", rec.Code)
	}
	if got := testutil.ToFloat64(gateMetrics.thefts.WithLabelValues("news.example")); got != thefts {
		t.Fatalf("theft counted before its evidence exists")
	}
	if rec := serve(g, "GET", "/premium/x", pays[2]); rec.Code != 200 {
		t.Fatalf("coupon 3: %d %s", rec.Code, rec.Body)
	}
	if got := testutil.ToFloat64(gateMetrics.thefts.WithLabelValues("news.example")); got != thefts+1 {
		t.Fatalf("theft not counted: %v", got-thefts)
	}
	if got := testutil.ToFloat64(gateMetrics.payments.WithLabelValues("news.example", "accepted")); got != accepted+3 {
		t.Errorf("accepted payments counted %v, want 3", got-accepted)
	}
	if got := testutil.ToFloat64(gateMetrics.payments.WithLabelValues("news.example", "coupon_spent")); got < 1 {
		t.Error("refusal not counted by reason")
	}
}

// TestLaneRateLimit: a lane paying faster than lane_rate gets 429 with
// Retry-After and spends no coupon (the same coupon passes a second
// later); refused payments count against the rate too.
func TestLaneRateLimit(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	g.LaneRate = 2
	reCore(t, g)
	now := time.Now()
	g.now = func() time.Time { return now }
	c := newClient(t, nil, w.owner, 0)
	c.nonce = gateNonce(g)
	for k := 0; k < 2; k++ {
		if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
			t.Fatalf("payment %d: %d %s", k, rec.Code, rec.Body)
		}
	}
	third := c.payment("GET", "/premium/x", 1)
	rec := serve(g, "GET", "/premium/x", third)
	if rec.Code != 429 || rec.Header().Get("Retry-After") == "" || errorCode(t, rec.Body.String()) != "lane_rate_limited" {
		t.Fatalf("third payment in the same instant: %d %q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	now = now.Add(time.Second)
	if rec := serve(g, "GET", "/premium/x", third); rec.Code != 200 {
		t.Fatalf("the same coupon a second later: %d %s", rec.Code, rec.Body)
	}
	// Refused payments use up tokens too (refusing them costs hashes or
	// a store read): a burst of bogus ones is limited like paid ones.
	now = now.Add(time.Second)
	d := [32]byte{}
	bp := coupons.Pay(c.lane, 4, coupons.Value{1}, &coupons.Value{2}, &d)
	bogus := http.Header{"Authorization": {bp.Header()}}
	codes := []int{}
	for k := 0; k < 3; k++ {
		codes = append(codes, serve(g, "GET", "/premium/x", bogus).Code)
	}
	if codes[0] != 402 || codes[1] != 402 || codes[2] != 429 {
		t.Fatalf("three bogus payments in an instant: %v, want 402 402 429", codes)
	}
}

// TestLaneRateLimitWithoutCacheAdmission: the lane rate limit does not
// depend on the lane's cache entry. With a cache that never keeps the
// lane (cleared before every request: as if ristretto had not admitted
// the entry yet, or dropped it), six payments in the same instant at
// lane_rate 2 serve two; the others get 429 with Retry-After and spend
// no coupon. (When the bucket lived in the cache entry, all six passed.)
func TestLaneRateLimitWithoutCacheAdmission(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	g.LaneRate = 2
	reCore(t, g)
	now := time.Now()
	g.now = func() time.Time { return now }
	c := newClient(t, nil, w.owner, 0)
	c.nonce = gateNonce(g)
	pays := make([]http.Header, 6)
	for k := range pays {
		pays[k] = c.payment("GET", "/premium/x", 1)
	}
	var codes []int
	for k, p := range pays {
		g.core.ClearCache()
		rec := serve(g, "GET", "/premium/x", p)
		codes = append(codes, rec.Code)
		if rec.Code == 429 && (rec.Header().Get("Retry-After") == "" || errorCode(t, rec.Body.String()) != "lane_rate_limited") {
			t.Fatalf("payment %d: 429 without Retry-After or with another code: %q %s", k, rec.Header().Get("Retry-After"), rec.Body)
		}
	}
	if fmt.Sprint(codes) != "[200 200 429 429 429 429]" {
		t.Fatalf("six payments in an instant at lane_rate 2, cache never admitting: %v, want [200 200 429 429 429 429]", codes)
	}
	// No coupon was spent by the refused ones: the lane stands at the
	// second coupon, and the third payment passes a second later.
	rec, err := g.store.Get(context.Background(), c.lane)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State.Last != 2 {
		t.Fatalf("the lane stands at %d after two served payments, want 2", rec.State.Last)
	}
	now = now.Add(time.Second)
	g.core.ClearCache()
	if rec := serve(g, "GET", "/premium/x", pays[2]); rec.Code != 200 {
		t.Fatalf("the third coupon a second later: %d %s", rec.Code, rec.Body)
	}
}

// TestBoltCommitMetrics: a gate on the bolt store exports its group-commit
// counters under the store's path while the store is open, and stops when
// the last gate using it is cleaned up.
func TestBoltCommitMetrics(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	path := filepath.Join(t.TempDir(), "spent.db")
	g := &Gate{Vendor: "news.example", BrokerKeys: []string{w.brokerKeyFile}, Price: 1, MaxJump: 64, LaneRate: -1,
		OpensPerMinute: 1 << 20, SecretFile: filepath.Join(filepath.Dir(w.brokerKeyFile), "secret"),
		StoreRaw: []byte(fmt.Sprintf(`{"backend":"bolt","path":%q}`, path))}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := g.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(boltCollector{})
	counters := func() map[string]float64 {
		out := map[string]float64{}
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			for _, m := range f.GetMetric() {
				if m.GetLabel()[0].GetValue() == path {
					out[f.GetName()] = m.GetCounter().GetValue()
				}
			}
		}
		return out
	}
	before := counters()
	for i, h := range payments(t, g, w, 0, 3, 1) {
		if rec := serve(g, "GET", "/premium/x", h); rec.Code != 200 {
			t.Fatalf("payment %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	after := counters()
	// The open and three payments, each durable before its response.
	if got := after["ecoupons_store_commit_writes_total"] - before["ecoupons_store_commit_writes_total"]; got < 4 {
		t.Errorf("writes counted: %v, want at least 4", got)
	}
	if g := after["ecoupons_store_commit_groups_total"]; g < 1 || g > after["ecoupons_store_commit_writes_total"] {
		t.Errorf("groups %v for %v writes", g, after["ecoupons_store_commit_writes_total"])
	}
	if after["ecoupons_store_commit_sync_seconds_total"] <= 0 {
		t.Error("no sync time counted")
	}
	if err := g.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if got := counters(); len(got) != 0 {
		t.Errorf("a closed store still exported: %v", got)
	}
}
