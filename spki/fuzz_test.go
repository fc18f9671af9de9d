package spki

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
	"time"
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

// FuzzFindChain: on fuzzed graphs over five keys (the root K0, K1-K3 and
// the subject K4; up to 16 certificates with fuzzed propagation, tags,
// validity and broken signatures) FindChain never panics, stays within
// SearchBudget, returns only valid chains, and finds one whenever an
// exhaustive search does (unless it reports ErrSearchBudget).
func FuzzFindChain(f *testing.F) {
	// A pair of bytes is a certificate: from b%5 to b/5%5; flags 1
	// propagate, 2 broken signature, 4-8 the tag, 16 expired.
	f.Add([]byte{5, 1, 21, 0}, byte(7))                        // K0→K1→K4
	f.Add([]byte{5, 1, 21, 2, 10, 1, 22, 0}, byte(7))          // a broken link and a detour
	f.Add([]byte{5, 1, 6, 1, 11, 1, 21, 16, 22, 4}, byte(1))   // a loop, an expired link, one-link chains only
	f.Add([]byte{20, 12, 5, 13, 21, 9, 16, 1, 23, 1}, byte(3)) // tags that do not cover
	f.Add([]byte{5, 1, 16, 1, 13, 1, 22, 0}, byte(7))          // K0→K1→K3→K2→K4
	keys := make([]ed25519.PrivateKey, 5)
	for i := range keys {
		keys[i] = testEd25519(fmt.Sprintf("fuzz-chain-%d", i))
	}
	tags := []string{tagLanes09, tagLanes04, "(*)", `(ecoupons-spend (lanes "7"))`}
	type spec struct{ from, to, flags byte }
	signed := map[spec]*SignedCert{}
	cert := func(t testing.TB, sp spec) *SignedCert {
		if sc, ok := signed[sp]; ok {
			return sc
		}
		v := Validity{}
		if sp.flags&16 != 0 {
			v.NotAfter = t0.Add(-time.Hour)
		}
		sc := makeCert(t, keys[sp.from], pubOf(t, keys[sp.to]), tags[(sp.flags>>2)&3], sp.flags&1 != 0, v)
		if sp.flags&2 != 0 {
			sig := *sc.Signature
			sig.Value = append([]byte(nil), sig.Value...)
			sig.Value[0] ^= 1
			sc = &SignedCert{Cert: sc.Cert, Signature: &sig}
		}
		signed[sp] = sc
		return sc
	}
	req := ChainRequest{Root: pubOf(f, keys[0]).Hash(), Subject: pubOf(f, keys[4]).Hash(), Tag: mustTag(f, `(ecoupons-spend (lanes "3"))`), Time: t0}
	f.Fuzz(func(t *testing.T, graph []byte, maxLen byte) {
		var certs []*SignedCert
		for k := 0; k+1 < len(graph) && len(certs) < 16; k += 2 {
			certs = append(certs, cert(t, spec{from: graph[k] % 5, to: graph[k] / 5 % 5, flags: graph[k+1] & 31}))
		}
		max := 1 + int(maxLen%8)
		chain, s, err := findChain(certs, req, max)
		if s.steps > SearchBudget(len(certs))+1 {
			t.Fatalf("%d steps, budget %d", s.steps, SearchBudget(len(certs)))
		}
		exists := bruteChain(certs, req, max)
		if err != nil {
			var ce *ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *ChainError", err)
			}
			if exists && !errors.Is(err, ErrSearchBudget) {
				t.Fatalf("a chain exists, FindChain says %v", err)
			}
			return
		}
		if !exists {
			t.Fatalf("FindChain found a chain the exhaustive search does not")
		}
		if len(chain.Certs) == 0 || len(chain.Certs) > max {
			t.Fatalf("chain of %d certificates (at most %d)", len(chain.Certs), max)
		}
		seen := map[KeyHash]bool{req.Root: true}
		at := req.Root
		for k, sc := range chain.Certs {
			c := sc.Cert
			if c.Issuer.Hash != at || seen[c.Subject.Hash] || sc.Verify() != nil || c.Validity.Check(t0) != nil ||
				(k < len(chain.Certs)-1 && !c.Propagate) {
				t.Fatalf("link %d of the chain is not valid", k)
			}
			at = c.Subject.Hash
			seen[at] = true
		}
		if at != req.Subject || !Implies(req.Tag, chain.Result.Tag) {
			t.Fatalf("the chain does not grant the request")
		}
	})
}

// bruteChain reports whether a valid chain of at most max certificates
// exists, trying every simple path.
func bruteChain(certs []*SignedCert, req ChainRequest, max int) bool {
	visited := map[KeyHash]bool{req.Root: true}
	var from func(at KeyHash, t *Tuple, n int) bool
	from = func(at KeyHash, t *Tuple, n int) bool {
		for _, sc := range certs {
			c := sc.Cert
			if c.Issuer.Hash != at || visited[c.Subject.Hash] || sc.Verify() != nil || c.Validity.Check(req.Time) != nil {
				continue
			}
			nt := c.Tuple()
			if t != nil {
				var err error
				if nt, err = Reduce(*t, nt); err != nil {
					continue
				}
			}
			if c.Subject.Hash == req.Subject {
				if Implies(req.Tag, nt.Tag) {
					return true
				}
				continue
			}
			if n+1 < max {
				visited[c.Subject.Hash] = true
				ok := from(c.Subject.Hash, &nt, n+1)
				visited[c.Subject.Hash] = false
				if ok {
					return true
				}
			}
		}
		return false
	}
	return from(req.Root, nil, 0)
}
