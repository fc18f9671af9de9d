package caddymodule

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/wallet"
)

// TestTwoStoresNoRejectedReceipt: one vendor, two gates with stores and
// receipt chains of their own, a wallet alternating requests and keeping
// every receipt. Each receipt checks out against its own gate's
// commitment — none is rejected. Before lanes were bound to stores, a
// lane paid at one gate was refused lane_not_open at the other and paid
// again, and `wallet receipts` reported a rejected receipt against an
// honest vendor.
func TestTwoStoresNoRejectedReceipt(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	// One clock for both gates and the wallet's log: with a clock each,
	// read a moment apart, the second gate's could start a second ahead
	// (each is truncated to the second) and its receipts came from "the
	// future" for the log (a flake seen in CI).
	ga, clock, _ := receiptGate(t, w)
	gb, _, _ := receiptGateOn(t, w, clock)
	if ga.challenge.Store == gb.challenge.Store {
		t.Fatal("two memory stores share a name")
	}
	srvs := []string{gateServer(t, ga).URL, gateServer(t, gb).URL}
	log := wallet.OpenReceiptLog(filepath.Join(t.TempDir(), "receipts"))
	log.Now = clock.now
	tr, err := wallet.NewTransport(w.owner)
	if err != nil {
		t.Fatal(err)
	}
	tr.Receipts = log
	c := &http.Client{Transport: tr}
	const n = 10
	for k := 0; k < n; k++ {
		resp, err := c.Get(srvs[k%2] + "/premium/x")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: %v %v", k, err, resp)
		}
		resp.Body.Close()
		clock.add(time.Second)
	}
	if tr.Spent() != n {
		t.Fatalf("%d requests at price 1 revealed %d coupons", n, tr.Spent())
	}
	checked, err := log.Check(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(checked) != n {
		t.Fatalf("%d receipts kept for %d paid requests", len(checked), n)
	}
	got := map[wallet.ReceiptStatus]int{}
	for _, c := range checked {
		got[c.Status]++
		if c.Status == wallet.ReceiptRejected || c.Status == wallet.ReceiptUnverifiable {
			t.Errorf("receipt for %s (lane %s, coupon %d): %s %s", c.Origin, c.Lane, c.Index, c.Status, c.Reason)
		}
	}
	if got[wallet.ReceiptAuthenticated] < n-2 {
		t.Fatalf("receipts: %v, want all but the last of each gate authenticated", got)
	}
}
