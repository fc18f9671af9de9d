package caddymodule

import (
	"net/http"
	"testing"

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
