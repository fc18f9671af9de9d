package caddymodule

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/store"
)

// TestBoltDefaultPath: `store bolt` with options but no path uses the
// same file as no store line at all, ecoupons/<vendor>.db in Caddy's data
// directory.
func TestBoltDefaultPath(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	want := filepath.Join(caddy.AppDataDir(), "ecoupons", "news.example.db")
	g := newGate(t, w, `{"backend":"bolt","commit_delay":1000000}`, 1)
	if _, ok := openBolts.Load(want); !ok {
		var open []any
		openBolts.Range(func(k, _ any) bool { open = append(open, k); return true })
		t.Fatalf("no bolt store open at %s; open: %v", want, open)
	}
	for i, h := range payments(t, g, w, 0, 2, 1) {
		if rec := serve(g, "GET", "/premium/x", h); rec.Code != 200 {
			t.Fatalf("payment %d: %d %s", i, rec.Code, rec.Body)
		}
	}
}

// TestLeaseTuningReachesTheStore: lease_idle and lease_flush configure the
// spending leases of the bolt and pebble stores, and a store without them
// keeps the defaults (30s, 1s).
func TestLeaseTuningReachesTheStore(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	for _, c := range []struct {
		json        string
		idle, flush time.Duration
	}{
		{`{"backend":"bolt","path":"` + filepath.Join(t.TempDir(), "a.db") + `","lease_idle":300000000000,"lease_flush":5000000000}`, 5 * time.Minute, 5 * time.Second},
		{`{"backend":"pebble","path":"` + filepath.Join(t.TempDir(), "p") + `","lease_idle":3600000000000}`, time.Hour, time.Second},
		{`{"backend":"bolt","path":"` + filepath.Join(t.TempDir(), "b.db") + `"}`, 30 * time.Second, time.Second},
	} {
		g := newGate(t, w, c.json, 1)
		l, ok := g.store.(sharedBolt)
		if !ok {
			t.Fatalf("%s: store %T, want the leased embedded store", c.json, g.store)
		}
		if o := l.Options(); o.Idle != c.idle || o.FlushEvery != c.flush {
			t.Errorf("%s: leases idle %v, flush %v; want %v, %v", c.json, o.Idle, o.FlushEvery, c.idle, c.flush)
		}
		for i, h := range payments(t, g, w, 0, 2, 1) {
			if rec := serve(g, "GET", "/premium/x", h); rec.Code != 200 {
				t.Fatalf("%s: payment %d: %d %s", c.json, i, rec.Code, rec.Body)
			}
		}
	}
}

// failingStore fails every read and write, as a store whose disk or
// server is gone.
type failingStore struct{ store.Store }

var errStoreDown = errors.New("test: store down")

func (failingStore) Get(context.Context, coupons.LaneID) (store.Record, error) {
	return store.Record{}, errStoreDown
}

func (failingStore) Advance(context.Context, coupons.LaneID, uint32, uint32, store.Record, int64) error {
	return errStoreDown
}

// TestStoreFailureAnswers503: a payment on a cached lane whose store write
// fails, and one on a lane the gate must read from its store, both get a
// JSON 503 store_unavailable with Retry-After, and the next handler does
// not run.
func TestStoreFailureAnswers503(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	pays := payments(t, g, w, 0, 2, 1)
	if rec := serve(g, "GET", "/premium/x", pays[0]); rec.Code != 200 {
		t.Fatalf("first payment: %d %s", rec.Code, rec.Body)
	}
	good := g.store
	g.store = failingStore{good}
	reCore(t, g)
	defer func() { g.store = good }()
	rec := serve(g, "GET", "/premium/x", pays[1])
	wantRefusal(t, rec, 503, "store_unavailable")
	if rec.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if strings.Contains(rec.Body.String(), errStoreDown.Error()) {
		t.Errorf("the store's error leaked to the client: %s", rec.Body)
	}
	g.core.ClearCache()
	wantRefusal(t, serve(g, "GET", "/premium/x", pays[1]), 503, "store_unavailable")
	g.store = good
	reCore(t, g)
	if rec := serve(g, "GET", "/premium/x", pays[1]); rec.Code != 200 {
		t.Fatalf("the same payment once the store is back: %d %s", rec.Code, rec.Body)
	}
}
