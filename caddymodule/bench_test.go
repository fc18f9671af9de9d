package caddymodule

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ecoupons/ecoupons/internal/testutil"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
)

func BenchmarkBaselineSHA256_32(b *testing.B) { testutil.BenchSHA256_32(b) }

func BenchmarkBaselineEd25519Verify(b *testing.B) { testutil.BenchEd25519Verify(b) }

// bigWorld is a world whose lanes hold 2^22 coupons, for benchmarks: more
// than a benchmark pays on one lane, so that it never wraps into replays.
func bigWorld(b *testing.B) *world {
	w := &world{broker: testKey("broker"), alice: testKey("alice")}
	bp, _ := spki.NewPublicKey(w.broker.Public())
	ap, _ := spki.NewPublicKey(w.alice.Public())
	w.brokerKeyFile = b.TempDir() + "/broker.pub"
	if err := writeFile(w.brokerKeyFile, spki.Advanced(bp.Sexp())); err != nil {
		b.Fatal(err)
	}
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: bp.Hash(), Owner: ap.Hash(), Lanes: 1, Length: 1 << 22,
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

// wireWriter is the ResponseWriter of the gate benchmarks, the gated
// requests' and the ungated ones' alike: it does per response what
// net/http's server does, and no more. Each response gets a new header
// map (the server makes one per response); WriteHeader writes the status
// line and the header fields (http.Header.Write, as the server does) and
// Write the body into a buffer kept across responses, as the server's
// connection buffer is. (httptest.ResponseRecorder, used before, copies
// the header map at WriteHeader, a copy no server makes, which cost the
// gated requests about 300 ns more than the ungated ones for the one
// header the gate adds.) Each map starts with the one field Caddy's
// server puts in every response's map before any handler runs (Server:
// Caddy, caddyhttp.Server.ServeHTTP), so that neither benchmark pays for
// a first insertion no request through Caddy pays. (Before, the gate's
// ECoupon-Balance was the first field of an empty map in Steady and
// Ungated wrote none: Steady paid for the map's first group, which in
// Caddy the Server field has always paid for.)
type wireWriter struct {
	h      http.Header
	status int
	buf    bytes.Buffer
}

// caddyServerHeader is the value Caddy's server sets in every response's
// map (its serverHeader, shared by all responses).
var caddyServerHeader = []string{"Caddy"}

// reset starts the next response.
func (w *wireWriter) reset() {
	w.h, w.status = make(http.Header), 0
	w.h["Server"] = caddyServerHeader
	w.buf.Reset()
}

// Header returns the response's header map.
func (w *wireWriter) Header() http.Header { return w.h }

// WriteHeader writes the status line and the header fields, once.
func (w *wireWriter) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	w.status = code
	w.buf.WriteString("HTTP/1.1 ")
	w.buf.Write(strconv.AppendInt(w.buf.AvailableBuffer(), int64(code), 10))
	w.buf.WriteString("\r\n")
	if err := w.h.Write(&w.buf); err != nil {
		panic(err)
	}
	w.buf.WriteString("\r\n")
}

// Write writes body bytes (after an implicit 200).
func (w *wireWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.buf.Write(b)
}

// BenchmarkServeHTTPUngated is the baseline of the gate benchmark: the same
// request served by the next handler alone, into the same writer
// (wireWriter).
func BenchmarkServeHTTPUngated(b *testing.B) {
	r := httptest.NewRequest("GET", "http://localhost:9080/premium/x", nil)
	rw := new(wireWriter)
	b.ReportAllocs()
	clock := testutil.NewCPUClock(b)
	for b.Loop() {
		rw.reset()
		if err := okHandler.ServeHTTP(rw, r); err != nil || rw.status != http.StatusOK {
			b.Fatal(err, rw.status)
		}
	}
	clock.Report(b)
}

// BenchmarkServeHTTPSteady is the gate's steady state in process, memory
// store: parse the header, cache hit, one chain step, the binding check,
// the request digest, the store's compare-and-set, the next handler.
// Payments are computed before the timer starts (in batches, benchSteady);
// responses go to the writer BenchmarkServeHTTPUngated uses (wireWriter).
func BenchmarkServeHTTPSteady(b *testing.B) {
	w := bigWorld(b)
	benchSteady(b, w, newGate(b, w, `{"backend":"memory"}`, 1), nil)
}

// BenchmarkServeHTTPSteadyPaymentScheme is BenchmarkServeHTTPSteady with
// each payment sent as a credential of the HTTP Payment scheme
// (Authorization: Payment …): as the steady state, plus decoding the
// credential, checking its challenge's binding and terms
// (payment.Binder.VerifyECoupon) and writing a Payment-Receipt.
func BenchmarkServeHTTPSteadyPaymentScheme(b *testing.B) {
	w := bigWorld(b)
	benchSteadyPayment(b, w, newGate(b, w, `{"backend":"memory"}`, 1))
}

// BenchmarkServeHTTPSteadyLaneRate is the steady state with the per-lane
// rate limit on (at a rate no payment reaches): the lane's token bucket is
// taken on every payment.
func BenchmarkServeHTTPSteadyLaneRate(b *testing.B) {
	w := bigWorld(b)
	g := newGate(b, w, `{"backend":"memory"}`, 1)
	g.LaneRate = 1e9
	reCore(b, g)
	benchSteady(b, w, g, nil)
}

// BenchmarkServeHTTPSteadyRevocations is the same steady state at a gate
// that checks revocation lists (a file source) on a lane opened by a
// delegate (two certificates, two keys): with no new list since the
// lane's last check, the check costs an atomic load and two comparisons.
func BenchmarkServeHTTPSteadyRevocations(b *testing.B) {
	w := bigWorld(b)
	benchSteady(b, w, revBenchGate(b, w), nil)
}

// BenchmarkServeHTTPNewList is the steady state while lists keep arriving:
// before each payment the revocation generation moves on, as if a new list
// (not naming the lane) had just been installed, so every payment checks
// the lane's principals against the lists. The worst case of the check,
// paid once per lane per list in practice.
func BenchmarkServeHTTPNewList(b *testing.B) {
	w := bigWorld(b)
	g := revBenchGate(b, w)
	benchSteady(b, w, g, func() { g.revoked.gen.Add(1) })
}

// revBenchGate is a memory-store gate polling a file list (hourly).
func revBenchGate(b *testing.B, w *world) *Gate {
	now := time.Now()
	list, err := delegation.SignRevocations(w.broker, 1, now, now.Add(24*time.Hour), [][32]byte{{1}}, []spki.KeyHash{{2}})
	if err != nil {
		b.Fatal(err)
	}
	path := b.TempDir() + "/revocations"
	if err := writeFile(path, spki.Canonical(list.Sexp())); err != nil {
		b.Fatal(err)
	}
	g := &Gate{Vendor: "news.example", BrokerKeys: []string{w.brokerKeyFile}, Price: 1, MaxJump: 64, LaneRate: -1,
		OpensPerMinute: 1 << 20, SecretFile: b.TempDir() + "/secret", StoreRaw: []byte(`{"backend":"memory"}`),
		Revocations: []string{path}, RevocationsEvery: caddy.Duration(time.Hour)}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := g.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Cleanup(); cancel() })
	return g
}

// benchSteady pays one coupon per request on lane 0, granted by w's owner
// to a device (so that the lane has principals to check: two certificates,
// two keys); before, when set, runs before each payment, inside the timer.
func benchSteady(b *testing.B, w *world, g *Gate, before func()) {
	c := newClient(b, nil, benchDevice(b, w), 0)
	rec := serve(g, "GET", "/premium/x", nil)
	c.nonce = nonceRe.FindStringSubmatch(rec.Header().Get("WWW-Authenticate"))[1]
	first := c.payment("GET", "/premium/x", 1)
	if rec := serve(g, "GET", "/premium/x", first); rec.Code != 200 {
		b.Fatalf("open: %d %s", rec.Code, rec.Body)
	}
	// Payments are made in batches with the timer stopped, so that the
	// heap the loop runs with stays small: a million requests made in
	// advance would make the collector's work, not the gate's, the
	// measure. A batch is small enough for its requests to stay in the
	// CPU's caches, as a request the server has just read is: with 4096
	// (megabytes of requests and of the garbage of making them) each payment
	// cost a few hundred ns more in cache misses on the request.
	const batch = 256
	reqs := make([]*http.Request, batch)
	// Each request is a copy of one parsed request (httptest.NewRequest
	// reads every request it makes through a new 4 KiB buffer, garbage
	// that would push the batch out of cache).
	tmpl := httptest.NewRequest("GET", "http://localhost:9080/premium/x", nil)
	fill := func() {
		for k := range reqs {
			if c.cursor.Remaining() == 0 {
				reqs[k] = reqs[0] // the lane is used up: replays, refused
				continue
			}
			reqs[k] = tmpl.Clone(tmpl.Context())
			reqs[k].Header.Set("Authorization", c.payment("GET", "/premium/x", 1).Get("Authorization"))
		}
	}
	fill()
	rw := new(wireWriter)
	b.ReportAllocs()
	clock := testutil.NewCPUClock(b)
	defer clock.Report(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%batch == 0 {
			b.StopTimer()
			clock.Stop()
			fill()
			clock.Start()
			b.StartTimer()
		}
		if before != nil {
			before()
		}
		rw.reset()
		if err := g.ServeHTTP(rw, reqs[i%batch], okHandler); err != nil || rw.status != http.StatusOK {
			b.Fatalf("payment %d: %v %d %s", i, err, rw.status, rw.buf.Bytes())
		}
	}
}

// benchDevice grants lane 0 of w's book to a device and returns its holder.
func benchDevice(b *testing.B, w *world) *delegation.Holder {
	k := testKey("bench-device")
	enc, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	d, err := delegation.NewDevice("bench", k, enc.PublicKey())
	if err != nil {
		b.Fatal(err)
	}
	gr, err := w.owner.Issue(d, 0, 0, delegation.GrantOptions{})
	if err != nil {
		b.Fatal(err)
	}
	h, err := delegation.Accept(gr, k, enc, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// BenchmarkServeHTTPSteadyPOST is the steady state for a paid POST with a
// 1 KiB body: as BenchmarkServeHTTPSteady, plus reading the body, hashing
// it, checking its Content-Digest and handing a copy to the next handler.
func BenchmarkServeHTTPSteadyPOST(b *testing.B) {
	w := bigWorld(b)
	g := newGate(b, w, `{"backend":"memory"}`, 1)
	c := newClient(b, nil, w.owner, 0)
	rec := serve(g, "GET", "/premium/x", nil)
	c.nonce = nonceRe.FindStringSubmatch(rec.Header().Get("WWW-Authenticate"))[1]
	if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		b.Fatalf("open: %d %s", rec.Code, rec.Body)
	}
	body := bytes.Repeat([]byte("x"), 1024)
	n := min(b.N+1, 1<<22-1)
	reqs := make([]*http.Request, n)
	for k := range reqs {
		h := c.paymentWith("localhost:9080", "POST", "/premium/x", body, "", 1)
		reqs[k] = httptest.NewRequest("POST", "http://localhost:9080/premium/x", bytes.NewReader(body))
		for name, v := range h {
			reqs[k].Header[name] = v
		}
	}
	rw := new(wireWriter)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rw.reset()
		if err := g.ServeHTTP(rw, reqs[i%n], okHandler); err != nil || (i < n && rw.status != 200) {
			b.Fatalf("payment %d: %v %d %s", i, err, rw.status, rw.buf.Bytes())
		}
	}
}
