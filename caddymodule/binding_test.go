package caddymodule

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/wallet"
)

// upstream records what the next handler received.
type upstream struct {
	body  []byte
	rng   string
	calls int
}

func (u *upstream) handler() caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		u.body, u.rng = b, r.Header.Get("Range")
		u.calls++
		w.WriteHeader(200)
		_, err = w.Write([]byte("paid content"))
		return err
	})
}

// serveWith serves a request with a body through g to next.
func serveWith(g *Gate, next caddyhttp.Handler, method, path string, h http.Header, body []byte) *httptest.ResponseRecorder {
	return serveRequest(g, next, method, path, h, body, nil)
}

// serveRequest serves a request with a body through g to next, after edit
// (when not nil) changed it; an error from the gate counts as a 500.
func serveRequest(g *Gate, next caddyhttp.Handler, method, path string, h http.Header, body []byte, edit func(*http.Request)) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://localhost:9080"+path, bytes.NewReader(body))
	for k, v := range h {
		r.Header[k] = v
	}
	if edit != nil {
		edit(r)
	}
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, r, next); err != nil {
		rec.Code = 500
	}
	return rec
}

// bindingSetup opens a lane on g with a paid GET (coupon 1) and returns its
// client.
func bindingSetup(t *testing.T, g *Gate, w *world) *client {
	t.Helper()
	c := newClient(t, nil, w.owner, 1)
	c.nonce = gateNonce(g)
	if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("coupon 1: %d %s", rec.Code, rec.Body)
	}
	return c
}

func theftCount() float64 {
	return testutil.ToFloat64(gateMetrics.thefts.WithLabelValues("news.example"))
}

// TestResentCouponWithAnotherBodyIsTheft: a thief captures the coupon of a
// paid POST and resends it with a body of its own. With the holder's
// Content-Digest it is refused (400 bad_content_digest, no coupon
// accepted); with one matching its body it is served (the gate cannot
// tell yet), but the holder's next payment on the lane exposes the theft.
func TestResentCouponWithAnotherBodyIsTheft(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	c := bindingSetup(t, g, w)
	up := &upstream{}
	mine, theirs := []byte(`{"transfer":"1 EUR to alice"}`), []byte(`{"transfer":"100 EUR to mallory"}`)
	captured := c.paymentWith("localhost:9080", "POST", "/premium/x", mine, "", 1)
	thefts := theftCount()

	// The captured headers, another body: the Content-Digest gives it away.
	if rec := serveWith(g, up.handler(), "POST", "/premium/x", captured, theirs); rec.Code != 400 || errorCode(t, rec.Body.String()) != "bad_content_digest" {
		t.Fatalf("captured coupon, another body, the holder's Content-Digest: %d %s", rec.Code, rec.Body)
	}
	// The thief states its own body's digest: served, coupon 2 accepted.
	stolen := captured.Clone()
	sum := sha256.Sum256(theirs)
	stolen.Set(coupons.HeaderContentDigest, coupons.ContentDigestHeader(&sum))
	if rec := serveWith(g, up.handler(), "POST", "/premium/x", stolen, theirs); rec.Code != 200 {
		t.Fatalf("captured coupon, another body and its digest: %d %s", rec.Code, rec.Body)
	}
	if !bytes.Equal(up.body, theirs) {
		t.Fatalf("upstream got %q", up.body)
	}
	// The holder's own request comes too late.
	if rec := serveWith(g, up.handler(), "POST", "/premium/x", captured, mine); rec.Code != 402 {
		t.Fatalf("the holder's coupon 2 after the theft: %d %s", rec.Code, rec.Body)
	}
	if got := theftCount(); got != thefts {
		t.Fatalf("theft counted before its evidence exists")
	}
	if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("coupon 3: %d %s", rec.Code, rec.Body)
	}
	if got := theftCount(); got != thefts+1 {
		t.Fatalf("a coupon resent with another body left %v theft evidence, want 1", got-thefts)
	}
}

// TestResentCouponWithAnotherRangeIsTheft: a thief resends the coupon of a
// ranged GET with another Range (the whole resource instead of 100 bytes);
// the holder's next payment exposes the theft.
func TestResentCouponWithAnotherRangeIsTheft(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	c := bindingSetup(t, g, w)
	up := &upstream{}
	captured := c.paymentWith("localhost:9080", "GET", "/premium/x", nil, "bytes=0-99", 1)
	thefts := theftCount()
	stolen := captured.Clone()
	stolen.Set("Range", "bytes=0-")
	if rec := serveWith(g, up.handler(), "GET", "/premium/x", stolen, nil); rec.Code != 200 || up.rng != "bytes=0-" {
		t.Fatalf("captured coupon, another range: %d %s (upstream saw %q)", rec.Code, rec.Body, up.rng)
	}
	if rec := serveWith(g, up.handler(), "GET", "/premium/x", captured, nil); rec.Code != 402 {
		t.Fatalf("the holder's coupon 2 after the theft: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("coupon 3: %d %s", rec.Code, rec.Body)
	}
	if got := theftCount(); got != thefts+1 {
		t.Fatalf("a coupon resent with another Range left %v theft evidence, want 1", got-thefts)
	}
	// The holder's own ranged requests leave none.
	for k := 0; k < 2; k++ {
		h := c.paymentWith("localhost:9080", "GET", "/premium/x", nil, "bytes=100-199", 1)
		if rec := serveWith(g, up.handler(), "GET", "/premium/x", h, nil); rec.Code != 200 || up.rng != "bytes=100-199" {
			t.Fatalf("ranged request %d: %d %s", k, rec.Code, rec.Body)
		}
	}
	if got := theftCount(); got != thefts+1 {
		t.Fatalf("honest ranged requests counted as theft: %v", got-thefts-1)
	}
}

// TestBodyNotMatchingContentDigestRefused: a paid request whose body does
// not match its Content-Digest, whose Content-Digest does not parse, which
// has a body and no Content-Digest, or whose body is beyond max_body, is
// refused before any coupon is accepted: the same coupon then pays for the
// right request, whose body reaches the upstream intact.
func TestBodyNotMatchingContentDigestRefused(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	g.MaxBody = 64
	c := bindingSetup(t, g, w)
	up := &upstream{}
	body := []byte("a comment")
	h := c.paymentWith("localhost:9080", "POST", "/premium/x", body, "", 1)
	noDigest := h.Clone()
	noDigest.Del(coupons.HeaderContentDigest)
	malformed := h.Clone()
	malformed.Set(coupons.HeaderContentDigest, "sha-256=abc")
	onlyOther := h.Clone()
	onlyOther.Set(coupons.HeaderContentDigest, "sha-512=:AAAA:")
	for _, tc := range []struct {
		name   string
		h      http.Header
		body   []byte
		status int
		code   string
	}{
		{"another body", h, []byte("another comment"), 400, "bad_content_digest"},
		{"no body", h, nil, 400, "bad_content_digest"},
		{"no Content-Digest", noDigest, body, 400, "content_digest_required"},
		{"malformed Content-Digest", malformed, body, 400, "bad_content_digest"},
		{"no sha-256", onlyOther, body, 400, "bad_content_digest"},
		{"beyond max_body", h, bytes.Repeat([]byte("x"), 65), 413, "body_too_large"},
	} {
		rec := serveWith(g, up.handler(), "POST", "/premium/x", tc.h, tc.body)
		if rec.Code != tc.status || errorCode(t, rec.Body.String()) != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, rec.Code, rec.Body, tc.status, tc.code)
		}
	}
	if up.calls != 0 {
		t.Fatalf("a refused request reached the upstream")
	}
	if rec := serveWith(g, up.handler(), "POST", "/premium/x", h, body); rec.Code != 200 {
		t.Fatalf("the coupon after the refusals: %d %s", rec.Code, rec.Body)
	}
	if !bytes.Equal(up.body, body) {
		t.Fatalf("upstream got %q, want %q", up.body, body)
	}
	// An empty body needs no Content-Digest; a correct one is accepted.
	empty := c.paymentWith("localhost:9080", "POST", "/premium/x", nil, "", 1)
	sum := sha256.Sum256(nil)
	empty.Set(coupons.HeaderContentDigest, coupons.ContentDigestHeader(&sum))
	if rec := serveWith(g, up.handler(), "POST", "/premium/x", empty, nil); rec.Code != 200 {
		t.Fatalf("an empty body stated: %d %s", rec.Code, rec.Body)
	}
}

// TestWalletSendsContentDigest: the wallet states a POST's body in
// Content-Digest and binds it and a Range header to its payments, so that
// the gate serves them (the body reaching the upstream intact) and finds
// no theft when the next payment opens their MACs; it refuses to pay for a
// body beyond its MaxBody, spending nothing.
func TestWalletSendsContentDigest(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	var gotBody []byte
	var gotDigest, gotRange string
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if err := g.ServeHTTP(rw, r, caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error {
			gotBody, _ = io.ReadAll(r.Body)
			gotDigest, gotRange = r.Header.Get(coupons.HeaderContentDigest), r.Header.Get("Range")
			return okHandler(rw, r)
		})); err != nil {
			http.Error(rw, err.Error(), 500)
		}
	}))
	t.Cleanup(srv.Close)
	tr, err := wallet.NewTransport(w.owner, 1) // one lane: each payment checks the last one's binding
	if err != nil {
		t.Fatal(err)
	}
	cl := &http.Client{Transport: tr}
	thefts := theftCount()
	body := []byte(`{"comment":"hello"}`)
	resp, err := cl.Post(srv.URL+"/premium/comment", "application/json", bytes.NewReader(body))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("paid POST: %v %v", err, resp)
	}
	resp.Body.Close()
	sum := sha256.Sum256(body)
	if !bytes.Equal(gotBody, body) || gotDigest != coupons.ContentDigestHeader(&sum) {
		t.Fatalf("upstream got body %q, Content-Digest %q", gotBody, gotDigest)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/premium/a", nil)
	req.Header.Set("Range", "bytes=0-99")
	if resp, err = cl.Do(req); err != nil || resp.StatusCode != 200 || gotRange != "bytes=0-99" {
		t.Fatalf("paid ranged GET: %v %v (upstream saw %q)", err, resp, gotRange)
	}
	resp.Body.Close()
	if resp, err = cl.Get(srv.URL + "/premium/a"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("paid GET: %v %v", err, resp)
	}
	resp.Body.Close()
	if got := theftCount(); got != thefts {
		t.Fatalf("the wallet's own payments counted as %v thefts: its digest differs from the gate's", got-thefts)
	}
	tr.MaxBody = 16
	spent := tr.Spent()
	if _, err := cl.Post(srv.URL+"/premium/comment", "text/plain", strings.NewReader(strings.Repeat("x", 17))); !errors.Is(err, wallet.ErrBodyTooLarge) {
		t.Fatalf("a body beyond MaxBody: %v", err)
	}
	if tr.Spent() != spent {
		t.Fatalf("a refused body spent %d coupons", tr.Spent()-spent)
	}
}

// TestBalanceHeaderOnOpenAndNearTheEnd: a paid response carries the lane's
// balance when the client cannot count it itself (with the lane's open)
// and over the lane's last 16 requests, so that a client that ignores its
// own count is warned before the lane runs out; between the two it is left
// out (it is the lane's length less the coupon's index).
func TestBalanceHeaderOnOpenAndNearTheEnd(t *testing.T) {
	w := newWorld(t, "news.example", t0Later()) // lanes of 64 coupons
	g := newGate(t, w, `{"backend":"memory"}`, 2)
	c := newClient(t, nil, w.owner, 1)
	c.nonce = gateNonce(g)
	for k := 1; k <= 32; k++ {
		rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 2))
		if rec.Code != 200 {
			t.Fatalf("request %d: %d %s", k, rec.Code, rec.Body)
		}
		left := 64 - 2*k
		want := ""
		if k == 1 || left <= 2*16 {
			want = fmt.Sprint(left)
		}
		if got := rec.Header().Get(HeaderBalance); got != want {
			t.Errorf("request %d (%d coupons left): %s %q, want %q", k, left, HeaderBalance, got, want)
		}
	}
}
