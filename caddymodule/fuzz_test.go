package caddymodule

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzGate: any Authorization and ECoupon-Open header, on a paid path or a
// POST of any body to the open endpoint, is answered with a clear 4xx (or
// served, when it really pays), never a 5xx or a panic.
func FuzzGate(f *testing.F) {
	w := newWorld(f, "news.example", t0Later())
	g := newGate(f, w, `{"backend":"memory"}`, 1)
	c := newClient(f, nil, w.owner, 0)
	c.nonce = gateNonce(g)
	h := c.payment("GET", "/premium/x", 1)
	f.Add(h.Get("Authorization"), h.Get(HeaderOpen), []byte(nil))
	f.Add("ECoupon lane=AAAA.1, i=1, w=AA, m=AA", "{AAAA}", []byte("(open)"))
	f.Add("", "", []byte("{"))
	f.Fuzz(func(t *testing.T, auth, open string, body []byte) {
		hdr := http.Header{}
		if auth != "" {
			hdr.Set("Authorization", auth)
		}
		if open != "" {
			hdr.Set(HeaderOpen, open)
		}
		if rec := serve(g, "GET", "/premium/x", hdr); rec.Code >= 500 {
			t.Fatalf("paid path: %d %s", rec.Code, rec.Body)
		}
		r := httptest.NewRequest("POST", "http://localhost:9080"+OpenPath, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		if err := g.ServeHTTP(rec, r, okHandler); err != nil {
			t.Fatalf("open endpoint: %v", err)
		}
		if rec.Code >= 500 {
			t.Fatalf("open endpoint: %d %s", rec.Code, rec.Body)
		}
	})
}
