package spki

import (
	"testing"

	"github.com/ecoupons/ecoupons/internal/testutil"
)

// Baselines, measured in the same run as the operations they normalise.

func BenchmarkBaselineSHA256_32(b *testing.B) { testutil.BenchSHA256_32(b) }

func BenchmarkBaselineEd25519Verify(b *testing.B) { testutil.BenchEd25519Verify(b) }

func benchCert(b *testing.B) *SignedCert {
	f := newChainFixture(b)
	return f.ab
}

func BenchmarkCertEncodeCanonical(b *testing.B) {
	sc := benchCert(b)
	s := sc.Sexp()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendCanonical(buf[:0], s)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkCertParseCanonical(b *testing.B) {
	sc := benchCert(b)
	enc := Canonical(sc.Sexp())
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		x, err := ParseCanonical(enc)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ParseSignedCert(x); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSexpParseCanonical(b *testing.B) {
	enc := Canonical(benchCert(b).Sexp())
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCanonical(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyChain3 finds and verifies a chain of three certificates
// (three signature checks, two reductions, one tag check): the delegation
// part of a lane open.
func BenchmarkVerifyChain3(b *testing.B) {
	f := newChainFixture(b)
	carol := testEd25519("carol")
	// alice → bob (propagate) → carol (propagate) → card
	ab := f.ab
	bc := makeCert(b, f.bob, pubOf(b, carol), tagLanes09, true, Validity{})
	cd := makeCert(b, carol, pubOf(b, f.card), tagLanes04, false, Validity{})
	certs := []*SignedCert{cd, bc, ab}
	req := f.req(b, "3", t0)
	b.ReportAllocs()
	for b.Loop() {
		// Fresh copies so that no verification result is cached across
		// iterations: every iteration checks three signatures.
		c, err := FindChain(certs, req)
		if err != nil || len(c.Certs) != 3 {
			b.Fatal(err)
		}
	}
}

func BenchmarkIntersect(b *testing.B) {
	x := mustTag(b, `(ecoupons-spend (book |AAAA|) (lanes (* range numeric ge "0" le "99")) (vendor news.example))`)
	y := mustTag(b, `(ecoupons-spend (book |AAAA|) (lanes (* range numeric ge "10" le "19")))`)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Intersect(x, y); !ok {
			b.Fatal("empty")
		}
	}
}

func BenchmarkImpliesRequest(b *testing.B) {
	grant := mustTag(b, `(ecoupons-spend (book |AAAA|) (lanes (* range numeric ge "10" le "19")) (vendor news.example))`)
	req := mustTag(b, `(ecoupons-spend (book |AAAA|) (lanes "15") (vendor news.example))`)
	b.ReportAllocs()
	for b.Loop() {
		if !Implies(req, grant) {
			b.Fatal("not implied")
		}
	}
}
