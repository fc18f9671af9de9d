package coupons

import (
	"sync"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"

	"github.com/ecoupons/ecoupons/spki"
)

func BenchmarkBaselineSHA256_32(b *testing.B) { testutil.BenchSHA256_32(b) }

func BenchmarkBaselineEd25519Verify(b *testing.B) { testutil.BenchEd25519Verify(b) }

// BenchmarkVerifyPaymentSteady is the vendor's steady-state check of the
// next coupon of a lane, including the TESLA binding check of the previous
// request: one chain step (1 compression) and one binding (2
// compressions). The state is reset each iteration so every iteration
// does the same work.
func BenchmarkVerifyPaymentSteady(b *testing.B) {
	w := newWorld(b)
	tag := w.book.Book.LaneTag(0)
	pp := w.payer(0)
	p1, d1 := pp.pay(1, "/premium/a")
	p2, d2 := pp.pay(2, "/premium/a")
	st0 := LaneState{LastValue: w.anchors[0]}
	if _, _, err := VerifyPayment(&tag, 16, &st0, &p1, &d1, 4); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		st := st0
		if _, theft, err := VerifyPayment(&tag, 16, &st, &p2, &d2, 4); err != nil || theft != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParsePayment(b *testing.B) {
	w := newWorld(b)
	p, _ := w.payer(0).pay(1, "/premium/a")
	h := p.Header()
	var q Payment
	b.ReportAllocs()
	for b.Loop() {
		if err := ParsePayment(h, &q); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRequestDigest(b *testing.B) {
	r := Request{Method: "GET", Host: "news.example", Path: "/premium/article-2026-11-25", Query: "lang=en", Index: 7, Nonce: "AAAAAAAAAAAAAAAAAAAAAA"}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Digest()
	}
}

// BenchmarkParseContentDigest parses the Content-Digest of a paid request
// with a body.
func BenchmarkParseContentDigest(b *testing.B) {
	sum := [32]byte{1, 2, 3}
	v := ContentDigestHeader(&sum)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseContentDigest(v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLaneOpen2Level parses and verifies a lane open whose spender is
// two delegations away from the owner (owner → phone → card): signatures
// on the book, the book certificate, the user certificate, two grants and
// the challenge.
func BenchmarkLaneOpen2Level(b *testing.B) {
	w := newWorld(b)
	toPhone := w.grant(b, w.alice, w.phone, 0, 1, 0, true)
	toTablet := w.grant(b, w.phone, testKey("tablet"), 1, 1, 0, false)
	doc := spki.Canonical(w.open(b, testKey("tablet"), 1, toPhone, toTablet).Sexp())
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		x, err := spki.ParseCanonical(doc)
		if err != nil {
			b.Fatal(err)
		}
		o, err := ParseOpen(x)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := VerifyOpen(o, w.policy); err != nil {
			b.Fatal(err)
		}
	}
}

// mapCache is a VerifyCache for tests and benchmarks.
type mapCache struct {
	mu sync.Mutex
	m  map[[32]byte]bool
}

func (c *mapCache) Verified(k [32]byte) bool { c.mu.Lock(); defer c.mu.Unlock(); return c.m[k] }
func (c *mapCache) Remember(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[[32]byte]bool{}
	}
	c.m[k] = true
}

// BenchmarkLaneOpen2LevelWarm is the same open when the book, its
// certificates and the grants were verified before (the next lane of a
// known book): only the spender's challenge signature is checked.
func BenchmarkLaneOpen2LevelWarm(b *testing.B) {
	w := newWorld(b)
	w.policy.Cache = &mapCache{}
	toPhone := w.grant(b, w.alice, w.phone, 0, 1, 0, true)
	toTablet := w.grant(b, w.phone, testKey("tablet"), 1, 1, 0, false)
	doc := spki.Canonical(w.open(b, testKey("tablet"), 1, toPhone, toTablet).Sexp())
	open := func() {
		x, err := spki.ParseCanonical(doc)
		if err != nil {
			b.Fatal(err)
		}
		o, err := ParseOpen(x)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := VerifyOpen(o, w.policy); err != nil {
			b.Fatal(err)
		}
	}
	open()
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		open()
	}
}

// BenchmarkCreateBook1000x65536 creates a book of 1,000 lanes × 2^16
// coupons (65.5 million chain steps, spread over all CPUs, plus the Merkle
// tree). Compare hashes/s with 1e9 / BaselineSHA256_32 ns/op: a plain
// single-core SHA-256 loop.
func BenchmarkCreateBook1000x65536(b *testing.B) {
	p := Params{Vendor: "news.example", Lanes: 1000, Length: 1 << 16, Currency: "EUR", Unit: 1_000_000, NotAfter: t0.Add(time.Hour)}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := Create(p, nil); err != nil {
			b.Fatal(err)
		}
	}
	steps := float64(b.N) * 1000 * (1 << 16)
	b.ReportMetric(steps/b.Elapsed().Seconds(), "hashes/s")
}
