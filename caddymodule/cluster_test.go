package caddymodule

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testredis"
	"github.com/ecoupons/ecoupons/store"
)

// TestFleetOnRedisClusterFailoverAcceptsEachCouponOnce: three gates share
// a Redis Cluster of three masters with a replica each; goroutines race
// the same coupons through all of them while the master that holds the
// lane is killed (SIGKILL), its replica takes over and the killed node
// comes back as the new master's replica. No coupon may be
// accepted twice — before, during or after the failover — payments must
// go on after it, and the promoted replica must hold the highest accepted
// coupon (each write was acknowledged by the replica before the gate
// answered).
func TestFleetOnRedisClusterFailoverAcceptsEachCouponOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a six-node Redis Cluster and waits for a failover")
	}
	cl := testredis.StartCluster(t, 3)
	w := newWorldL(t, "news.example", t0Later(), 4096)
	storeJSON := fmt.Sprintf(`{"backend":"redis","url":%q,"cluster":true}`, cl.URL)
	gates := []*Gate{newGate(t, w, storeJSON, 1), newGate(t, w, storeJSON, 1), newGate(t, w, storeJSON, 1)}
	const lane, n = 3, 1200
	pays := payments(t, gates[0], w, lane, n, 1)
	if rec := serve(gates[0], "GET", "/premium/x", pays[0]); rec.Code != 200 {
		t.Fatalf("opening payment: %d %s", rec.Code, rec.Body)
	}
	victim, err := cl.MasterOf(store.ClusterSlotKey("", w.owner.Book.Book.ID()))
	if err != nil {
		t.Fatal(err)
	}

	accepted := make([]atomic.Int32, n)
	accepted[0].Store(1)
	var total, afterFailover atomic.Int32
	var failedOver atomic.Bool
	killed := make(chan struct{})
	var once sync.Once
	var unavailable, odd atomic.Int32
	var wg sync.WaitGroup
	for wk := range 6 {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 11))
			for k := 1; k < n; k++ {
				h := http.Header{"Authorization": pays[k]["Authorization"]}
				for deadline := time.Now().Add(30 * time.Second); ; {
					rec := serve(gates[rng.IntN(len(gates))], "GET", "/premium/x", h)
					if rec.Code == 200 {
						accepted[k].Add(1)
						if total.Add(1) == n/4 {
							once.Do(func() { close(killed) })
						}
						if failedOver.Load() {
							afterFailover.Add(1)
						}
					}
					if rec.Code == 503 && time.Now().Before(deadline) {
						// The store is failing over: a client retries.
						unavailable.Add(1)
						time.Sleep(20 * time.Millisecond)
						continue
					}
					if rec.Code != 200 && rec.Code != 402 {
						odd.Add(1)
						t.Logf("coupon %d: %d %s", k+1, rec.Code, rec.Body)
					}
					break
				}
			}
		}(uint64(wk))
	}
	go func() {
		select {
		case <-killed:
		case <-time.After(60 * time.Second):
			return
		}
		cl.Kill(victim)
		if err := cl.WaitOK(context.Background(), 30*time.Second); err != nil {
			t.Error(err)
		}
		// The promoted replica has no replica of its own: writes to its
		// slots wait for one in vain (503) until the killed node comes back
		// as its replica, as a supervisor would bring it back.
		if err := cl.Restart(victim); err != nil {
			t.Error(err)
		}
		failedOver.Store(true)
	}()
	wg.Wait()
	if odd.Load() > 0 {
		t.Fatalf("%d answers were neither 200, 402 nor 503", odd.Load())
	}
	highest := 0
	for k := range accepted {
		if c := accepted[k].Load(); c > 1 {
			t.Fatalf("coupon %d accepted %d times", k+1, c)
		} else if c == 1 {
			highest = k + 1
		}
	}
	if !failedOver.Load() {
		t.Fatal("the run ended before the failover completed: no payment after it to check")
	}
	if afterFailover.Load() == 0 {
		t.Fatalf("no payment accepted after the failover (%d accepted in all)", total.Load())
	}
	s, err := store.NewRedisCluster(context.Background(), cl.URL, store.ClusterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec, err := s.Get(context.Background(), coupons.LaneID{Book: w.owner.Book.Book.ID(), Lane: lane})
	if err != nil {
		t.Fatal(err)
	}
	if int(rec.State.Last) < highest {
		t.Fatalf("the promoted replica holds coupon %d, below the highest accepted %d: an accepted coupon was lost", rec.State.Last, highest)
	}
	t.Logf("%d coupons accepted once (highest %d, %d after the failover), none twice; %d answers 503 while failing over; store at %d",
		total.Load(), highest, afterFailover.Load(), unavailable.Load(), rec.State.Last)
}
