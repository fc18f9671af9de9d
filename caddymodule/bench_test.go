package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
)

func BenchmarkBaselineSHA256_32(b *testing.B) { testutil.BenchSHA256_32(b) }

func BenchmarkBaselineEd25519Verify(b *testing.B) { testutil.BenchEd25519Verify(b) }

// bigWorld is a world whose lanes hold 2^20 coupons, for benchmarks.
func bigWorld(b *testing.B) *world {
	w := &world{broker: testKey("broker"), alice: testKey("alice")}
	bp, _ := spki.NewPublicKey(w.broker.Public())
	ap, _ := spki.NewPublicKey(w.alice.Public())
	w.brokerKeyFile = b.TempDir() + "/broker.pub"
	if err := writeFile(w.brokerKeyFile, spki.Advanced(bp.Sexp())); err != nil {
		b.Fatal(err)
	}
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: bp.Hash(), Owner: ap.Hash(), Lanes: 1, Length: 1 << 20,
		Currency: "EUR", Unit: 1_000_000, NotAfter: time.Now().Add(24 * time.Hour)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	sb, _ := bk.Sign(w.alice)
	user, _ := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(bp), Subject: spki.HashPrincipal(ap.Hash()), Tag: coupons.UserTag("a", "EUR")}, w.broker)
	if w.owner, err = delegation.NewOwner(sb, user, sec, anchors, w.alice); err != nil {
		b.Fatal(err)
	}
	if w.owner.Funding, err = coupons.SignFunding(sb.Book, w.broker, time.Time{}); err != nil {
		b.Fatal(err)
	}
	return w
}

// BenchmarkServeHTTPUngated is the baseline of the gate benchmark: the same
// request served by the next handler alone.
func BenchmarkServeHTTPUngated(b *testing.B) {
	r := httptest.NewRequest("GET", "http://localhost:9080/premium/x", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		if err := okHandler.ServeHTTP(rec, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServeHTTPSteady is the gate's steady state in process, memory
// store: parse the header, cache hit, one chain step, the binding check,
// the request digest, the store's compare-and-set, the next handler.
// Payments are computed before the timer starts.
func BenchmarkServeHTTPSteady(b *testing.B) {
	w := bigWorld(b)
	g := newGate(b, w, `{"backend":"memory"}`, 1)
	c := newClient(b, nil, w.owner, 0)
	rec := serve(g, "GET", "/premium/x", nil)
	c.nonce = nonceRe.FindStringSubmatch(rec.Header().Get("WWW-Authenticate"))[1]
	n := min(b.N+1, 1<<20-1)
	auth := make([]string, n)
	first := c.payment("GET", "/premium/x", 1)
	if rec := serve(g, "GET", "/premium/x", first); rec.Code != 200 {
		b.Fatalf("open: %d %s", rec.Code, rec.Body)
	}
	for k := range auth {
		auth[k] = c.payment("GET", "/premium/x", 1).Get("Authorization")
	}
	reqs := make([]*http.Request, n)
	for k := range reqs {
		reqs[k] = httptest.NewRequest("GET", "http://localhost:9080/premium/x", nil)
		reqs[k].Header.Set("Authorization", auth[k])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec := httptest.NewRecorder()
		if err := g.ServeHTTP(rec, reqs[i%n], okHandler); err != nil || (i < n && rec.Code != 200) {
			b.Fatalf("payment %d: %v %d %s", i, err, rec.Code, rec.Body)
		}
	}
}
