package caddymodule

import (
	"fmt"
	"path/filepath"
	"testing"
)

// TestLeaseAcceptsFromMemory: on the bolt store with the default lease, a
// lane's payments reach the disk once per lease, not once per coupon; with
// lease 1, every payment does.
func TestLeaseAcceptsFromMemory(t *testing.T) {
	for _, lease := range []uint32{0, 1} {
		t.Run(fmt.Sprintf("lease=%d", lease), func(t *testing.T) {
			w := newWorldL(t, "news.example", t0Later(), 256)
			path := filepath.Join(t.TempDir(), "spent.db")
			g := newGateWith(t, w, fmt.Sprintf(`{"backend":"bolt","path":%q}`, path), 1, func(g *Gate) { g.Lease = lease })
			pays := payments(t, g, w, 0, 96, 1)
			for k, h := range pays {
				if rec := serve(g, "GET", "/premium/x", h); rec.Code != 200 {
					t.Fatalf("payment %d: %d %s", k, rec.Code, rec.Body)
				}
			}
			st := g.store.(sharedBolt).Stats()
			want := uint64(96)
			if lease == 0 {
				want = 96 / DefaultLease
			}
			if st.DurableWrites != want {
				t.Fatalf("lease %d: %d durable writes for 96 payments (%d from memory), want %d", lease, st.DurableWrites, st.FastAccepts, want)
			}
		})
	}
}
