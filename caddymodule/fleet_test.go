package caddymodule

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/internal/testredis"
)

// newGate provisions a gate in process (no HTTP server) with the given
// store module JSON.
func newGate(t testing.TB, w *world, storeJSON string, price uint32) *Gate {
	t.Helper()
	return newGateWith(t, w, storeJSON, price, nil)
}

// newGateWith is newGate with settings changed by set before Provision.
func newGateWith(t testing.TB, w *world, storeJSON string, price uint32, set func(*Gate)) *Gate {
	t.Helper()
	g := &Gate{Vendor: "news.example", BrokerKeys: []string{w.brokerKeyFile}, Price: price, MaxJump: 64, LaneRate: -1,
		OpensPerMinute: 1 << 20, SecretFile: filepath.Join(filepath.Dir(w.brokerKeyFile), "secret"), StoreRaw: []byte(storeJSON)}
	if set != nil {
		set(g)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := g.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Cleanup(); cancel() })
	return g
}

var okHandler = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.WriteHeader(200)
	_, err := w.Write([]byte("paid content"))
	return err
})

func serve(g *Gate, method, path string, h http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://localhost:9080"+path, nil)
	for k, v := range h {
		r.Header[k] = v
	}
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, r, okHandler); err != nil {
		rec.Code = caddyhttp.Error(500, err).StatusCode
		if he, ok := err.(caddyhttp.HandlerError); ok {
			rec.Code = he.StatusCode
		}
	}
	return rec
}

// payments pre-computes n payments of price coupons each on one lane, the
// first one carrying the lane open.
func payments(t testing.TB, g *Gate, w *world, lane uint32, n, price int) []http.Header {
	c := newClient(t, nil, w.owner, lane)
	// A nonce from the gate's own challenge.
	rec := serve(g, "GET", "/premium/x", nil)
	m := nonceRe.FindStringSubmatch(rec.Header().Get("WWW-Authenticate"))
	if m == nil {
		t.Fatal("no nonce")
	}
	c.nonce = m[1]
	out := make([]http.Header, n)
	for k := range out {
		out[k] = c.payment("GET", "/premium/x", price)
	}
	return out
}

// raceSpend sends every payment from many goroutines to random gates and
// checks that each payment is accepted at most once and that the store
// ends at the highest accepted index.
func raceSpend(t *testing.T, gates []*Gate, pays []http.Header, workers int) {
	t.Helper()
	// The lane open must succeed first, on one gate.
	if rec := serve(gates[0], "GET", "/premium/x", pays[0]); rec.Code != 200 {
		t.Fatalf("opening payment: %d %s", rec.Code, rec.Body)
	}
	accepted := make([]atomic.Int32, len(pays))
	accepted[0].Store(1)
	var wg sync.WaitGroup
	var errs atomic.Int32
	for wk := 0; wk < workers; wk++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 7))
			for k := 1; k < len(pays); k++ {
				h := http.Header{"Authorization": pays[k]["Authorization"]}
				rec := serve(gates[rng.IntN(len(gates))], "GET", "/premium/x", h)
				switch rec.Code {
				case 200:
					accepted[k].Add(1)
				case 402:
				default:
					errs.Add(1)
				}
			}
		}(uint64(wk))
	}
	wg.Wait()
	if errs.Load() > 0 {
		t.Fatalf("%d answers were neither 200 nor 402", errs.Load())
	}
	total := 0
	for k := range accepted {
		if n := accepted[k].Load(); n > 1 {
			t.Fatalf("payment %d accepted %d times", k, n)
		} else if n == 1 {
			total++
		}
	}
	if total < 2 {
		t.Fatalf("only %d payments accepted", total)
	}
	t.Logf("%d of %d payments accepted once, none twice", total, len(pays))
}

// TestFleetSharingRedisAcceptsEachCouponOnce: three gates share one Redis;
// goroutines race the same coupons through all of them.
func TestFleetSharingRedisAcceptsEachCouponOnce(t *testing.T) {
	url := testredis.Start(t)
	w := newWorld(t, "news.example", t0Later())
	storeJSON := fmt.Sprintf(`{"backend":"redis","url":%q}`, url)
	gates := []*Gate{newGate(t, w, storeJSON, 1), newGate(t, w, storeJSON, 1), newGate(t, w, storeJSON, 1)}
	raceSpend(t, gates, payments(t, gates[0], w, 0, 60, 1), 12)
}

// TestBoltGateAcceptsEachCouponOnce: the same race within one node on bolt.
func TestBoltGateAcceptsEachCouponOnce(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, fmt.Sprintf(`{"backend":"bolt","path":%q}`, filepath.Join(t.TempDir(), "spent.db")), 1)
	raceSpend(t, []*Gate{g}, payments(t, g, w, 1, 60, 1), 12)
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o644) }

// reCore makes g's acceptance core again after a test changed the gate's
// store or settings.
func reCore(t testing.TB, g *Gate) {
	t.Helper()
	g.core.Close()
	core, err := g.newCore()
	if err != nil {
		t.Fatal(err)
	}
	g.core = core
}
