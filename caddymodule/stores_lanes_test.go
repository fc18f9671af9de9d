package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/store"
	"github.com/ecoupons/ecoupons/wallet"
)

// TestLanesStayAtTheirStore: one vendor, two gates with bolt stores of
// their own, a wallet alternating requests between them. Each request
// pays its price once (no lane_not_open refusal that reveals a coupon for
// nothing), no answer carries credit the gate was not paid, and each
// gate's store holds only the lanes paid there, each at the coupon the
// wallet revealed last on it. Before lanes were bound to stores, the
// second gate refused the first lane as lane_not_open, the payment was
// made again (4 coupons at price 2), and coupons spent at one store came
// back as credit at the other.
func TestLanesStayAtTheirStore(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	dir := t.TempDir()
	const price = 2
	gates := []*Gate{
		newGate(t, w, fmt.Sprintf(`{"backend":"bolt","path":%q}`, filepath.Join(dir, "a.db")), price),
		newGate(t, w, fmt.Sprintf(`{"backend":"bolt","path":%q}`, filepath.Join(dir, "b.db")), price),
	}
	if gates[0].challenge.Store == "" || gates[0].challenge.Store == gates[1].challenge.Store {
		t.Fatalf("store names %q and %q: two stores must have two names", gates[0].challenge.Store, gates[1].challenge.Store)
	}
	srvs := []string{gateServer(t, gates[0]).URL, gateServer(t, gates[1]).URL}
	tr, err := wallet.NewTransport(w.owner)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr}
	const n = 12
	for k := 0; k < n; k++ {
		resp, err := c.Get(srvs[k%2] + "/premium/a")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d at gate %d: %d", k, k%2, resp.StatusCode)
		}
		if cr := resp.Header.Get(HeaderCredit); cr != "" {
			t.Fatalf("request %d at gate %d: credit %s the gate was not paid", k, k%2, cr)
		}
	}
	if tr.Spent() != n*price {
		t.Fatalf("%d requests at price %d revealed %d coupons, want %d (each request paid once)", n, price, tr.Spent(), n*price)
	}
	// The stores' lanes: disjoint, and together exactly what was paid.
	var total uint32
	seen := map[coupons.LaneID]int{}
	for gi, g := range gates {
		for lane := uint32(0); lane < w.owner.Book.Book.Lanes; lane++ {
			id := coupons.LaneID{Book: w.owner.Book.Book.ID(), Lane: lane}
			rec, err := g.store.Get(context.Background(), id)
			if err == store.ErrNotFound {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if prev, ok := seen[id]; ok {
				t.Fatalf("lane %d is open at both stores (gates %d and %d)", lane, prev, gi)
			}
			seen[id] = gi
			total += rec.State.Last
			if rec.Credit != 0 {
				t.Fatalf("lane %d at gate %d holds credit %d", lane, gi, rec.Credit)
			}
		}
	}
	if total != n*price {
		t.Fatalf("the stores hold %d coupons, the wallet paid %d", total, n*price)
	}
}
