package spki

import (
	"bytes"
	"testing"
)

// FuzzParse: parsing any input never panics; whatever parses re-encodes to
// a canonical form that parses (strictly) to the same value, and the
// advanced and transport forms we emit parse back to it too.
func FuzzParse(f *testing.F) {
	for _, v := range readSexpVectors(f) {
		f.Add(v.in)
		f.Add(v.can)
	}
	f.Add([]byte("(cert (issuer (hash sha256 |AAAA|)) (tag (* range numeric ge \"1\")))"))
	f.Add([]byte("[\"a\\x00\"]\"b\\\r\nc\""))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		can := Canonical(s)
		c2, err := ParseCanonical(can)
		if err != nil {
			t.Fatalf("canonical form %q does not parse: %v", can, err)
		}
		if !Equal(s, c2) || !bytes.Equal(Canonical(c2), can) {
			t.Fatalf("canonical round trip changed the value")
		}
		for _, enc := range [][]byte{Advanced(s), AdvancedIndent(s), Transport(s)} {
			back, err := Parse(enc)
			if err != nil {
				t.Fatalf("emitted form %q does not parse: %v", enc, err)
			}
			if !Equal(back, s) {
				t.Fatalf("emitted form %q parses to another value", enc)
			}
		}
	})
}

// FuzzParseCert: certificate and sequence parsing never panics, and a parsed
// certificate re-encodes to the same bytes (so its hash is stable).
func FuzzParseCert(f *testing.F) {
	fx := newChainFixture(f)
	for _, sc := range []*SignedCert{fx.ab, fx.bc} {
		f.Add(Canonical(sc.Sexp()))
		f.Add(Advanced(sc.Sexp()))
		f.Add(Canonical(sc.Cert.Sexp()))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		if c, err := ParseCert(s); err == nil {
			if !bytes.Equal(Canonical(c.Sexp()), Canonical(s)) {
				t.Fatalf("parsed certificate does not keep its bytes")
			}
			_ = c.Tag.String()
		}
		if certs, err := ParseSequence(s); err == nil {
			for _, sc := range certs {
				_ = sc.Verify() // must not panic, whatever the keys
			}
		}
		_, _ = ParsePublicKey(s)
		_, _ = ParseSignature(s)
	})
}

// FuzzIntersect checks the laws of AIntersect on fuzzed tags: commutative,
// idempotent, the result implies both inputs, and it is exact: a concrete
// request x is granted by a∩b iff it is granted by a and by b.
func FuzzIntersect(f *testing.F) {
	vs := readTagVectors(f)
	for i, v := range vs {
		f.Add([]byte(v.a), []byte(v.b), []byte(concreteSamples[i%len(concreteSamples)]))
	}
	f.Fuzz(func(t *testing.T, ain, bin, xin []byte) {
		a, b, x := fuzzTag(ain), fuzzTag(bin), fuzzSexp(xin)
		if a == nil || b == nil || x == nil {
			return
		}
		checkIdempotent(t, a)
		checkIdempotent(t, b)
		checkLaws(t, a, b, []Sexp{x})
	})
}

var fuzzLimits = Limits{MaxSize: 512, MaxDepth: 6, MaxAtom: 64, MaxNodes: 48}

func fuzzSexp(in []byte) Sexp {
	s, err := fuzzLimits.Parse(in)
	if err != nil {
		return nil
	}
	return s
}

func fuzzTag(in []byte) *Tag {
	s := fuzzSexp(in)
	if s == nil {
		return nil
	}
	t, err := ParseTag(s)
	if err != nil {
		return nil
	}
	return t
}
