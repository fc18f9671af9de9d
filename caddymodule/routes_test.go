package caddymodule

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRevenueCountedByRoute: coupons_total and revenue_total count the
// coupons of served requests, in coupons and in currency units, under the
// route's name; a request whose upstream fails is credited back and not
// counted.
func TestRevenueCountedByRoute(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGateWith(t, w, `{"backend":"memory"}`, 2, func(g *Gate) { g.Name = "articles" })
	coupons0 := testutil.ToFloat64(gateMetrics.coupons.WithLabelValues("news.example", "articles"))
	revenue0 := testutil.ToFloat64(gateMetrics.revenue.WithLabelValues("news.example", "articles", "EUR"))
	pays := payments(t, g, w, 0, 4, 2)
	for k := 0; k < 3; k++ {
		if rec := serve(g, "GET", "/premium/x", pays[k]); rec.Code != 200 {
			t.Fatalf("payment %d: %d %s", k+1, rec.Code, rec.Body)
		}
	}
	failing := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusBadGateway)
		return nil
	})
	r := httptest.NewRequest("GET", "http://localhost:9080/premium/x", nil)
	r.Header["Authorization"] = pays[3]["Authorization"]
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, r, failing); err != nil || rec.Code != http.StatusBadGateway {
		t.Fatalf("the failing upstream's request: %v %d", err, rec.Code)
	}
	if got := testutil.ToFloat64(gateMetrics.coupons.WithLabelValues("news.example", "articles")) - coupons0; got != 6 {
		t.Errorf("coupons_total counted %v, want 6 (3 served requests at price 2; the failed one credited back)", got)
	}
	if got := testutil.ToFloat64(gateMetrics.revenue.WithLabelValues("news.example", "articles", "EUR")) - revenue0; math.Abs(got-0.006) > 1e-12 {
		t.Errorf("revenue_total counted %v EUR, want 0.006 (6 coupons of 0.001)", got)
	}
}

// TestRouteNameIsBounded: a name that would make labels without bound
// (spaces, slashes, any length) is refused at provisioning.
func TestRouteNameIsBounded(t *testing.T) {
	for _, name := range []string{"a b", "/premium/*", string(make([]byte, 65))} {
		g := &Gate{Vendor: "news.example", BrokerKeys: []string{"k.pub"}, Name: name}
		g.defaults()
		if err := g.check(); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
}

// TestUnknownWellKnownPathIs404: the gate owns /.well-known/ecoupons/; a
// path there it does not serve is a 404 with a reason, not a 402 asking to
// pay for it, and a wrong method on its receipt commitment is a 405.
func TestUnknownWellKnownPathIs404(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	rec := serve(g, "GET", "/.well-known/ecoupons/nothing", nil)
	wantRefusal(t, rec, http.StatusNotFound, coupons.CodeNotFound)
	var p problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Reason == "" {
		t.Errorf("404 body %q: %v", rec.Body, err)
	}
	rec = serve(g, "POST", VendorPath, nil)
	wantRefusal(t, rec, http.StatusMethodNotAllowed, coupons.CodeMethodNotAllowed)
	if rec.Header().Get("Allow") != "GET" {
		t.Errorf("405 without Allow: GET")
	}
}

// TestHeadCostsTheGETPrice is the documented HEAD rule: a HEAD answer is a
// GET answer without its body, and its headers may be what is sold, so an
// unpaid HEAD gets the 402 challenge and a paid one costs the price.
func TestHeadCostsTheGETPrice(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 3)
	rec := serve(g, "HEAD", "/premium/x", nil)
	if rec.Code != http.StatusPaymentRequired || rec.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("unpaid HEAD: %d, challenge %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
	c := newClient(t, nil, w.owner, 1)
	c.nonce = gateNonce(g)
	if rec := serve(g, "HEAD", "/premium/x", c.payment("HEAD", "/premium/x", 2)); rec.Code != http.StatusPaymentRequired {
		t.Fatalf("HEAD paid 2 of 3 coupons: %d, want 402 (insufficient)", rec.Code)
	}
	if rec := serve(g, "HEAD", "/premium/x", c.payment("HEAD", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("HEAD paid the rest: %d %s", rec.Code, rec.Body)
	}
}
