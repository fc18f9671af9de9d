package lanes

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/store"
)

type count struct{ n atomic.Int64 }

func (c *count) Inc() { c.n.Add(1) }

// TestLaneCacheHoldsWhatItIsSizedFor: a working set of as many lanes as
// the cache is sized for is served from the cache (hit rate ≥ 95% on the
// second pass). Before, ristretto counted its own 56 bytes per entry
// against a cost budget of one per lane, and a cache "of 131,072 lanes"
// held about 2,300. It also measures the memory a cached lane takes.
func TestLaneCacheHoldsWhatItIsSizedFor(t *testing.T) {
	const n = 20_000
	st := store.NewMemory()
	c := newChain(t, 4)
	var hit, miss count
	core := newCore(t, st, Config{Price: 1, CacheLanes: n, Hit: &hit, Miss: &miss})
	ids := make([]coupons.LaneID, n)
	for k := range ids {
		ids[k] = c.id
		ids[k].Lane = uint32(k)
		if _, err := st.Open(context.Background(), ids[k], store.NewRecord(c.meta())); err != nil {
			t.Fatal(err)
		}
	}
	pay := func(id coupons.LaneID, i uint32) {
		c.id = id
		mustAccept(t, core, c.pay(i, "/a"))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, id := range ids {
		pay(id, 1)
	}
	core.cache.Wait()
	runtime.GC()
	runtime.ReadMemStats(&after)
	perLane := float64(after.HeapAlloc-before.HeapAlloc) / n
	hit.n.Store(0)
	miss.n.Store(0)
	for _, id := range ids {
		pay(id, 2)
	}
	rate := float64(hit.n.Load()) / n
	t.Logf("second pass over %d lanes in a cache of %d: hit rate %.1f%%; about %.0f bytes per cached lane", n, n, 100*rate, perLane)
	if rate < 0.95 {
		t.Fatalf("hit rate %.1f%% for a working set the size of the cache, want at least 95%%", 100*rate)
	}
	if perLane > 1500 {
		t.Errorf("a cached lane takes %.0f bytes, more than DefaultCacheLanes' documented budget", perLane)
	}
}

// TestLaneCacheSizeRefused: a cache that holds nothing is a configuration
// error, not a silent miss on every payment.
func TestLaneCacheSizeRefused(t *testing.T) {
	if _, err := New(store.NewMemory(), Config{Price: 1, MaxJump: 1, CacheLanes: -1}); err == nil {
		t.Fatal("a lane cache of -1 lanes accepted")
	}
}
