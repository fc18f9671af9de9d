package spki

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
)

// Hostile certificate graphs for FindChain: m keys K0 (the root) … K(m-1),
// fully connected by m(m-1) propagating certificates, plus m more, so that
// a graph holds m² certificates (100 for m = 10, about 36 KB). Every simple
// path through the keys is a candidate chain, so a search that explores
// them all does about (m-1)! work.
const (
	// hostileDeadEnds: the m more certificates are self-delegations and no
	// certificate names the subject: every path is a dead end.
	hostileDeadEnds = "dead-ends"
	// hostileBadLinks: every key but the root delegates to the subject
	// with a broken signature; the root's own certificate to the subject,
	// the only valid chain, comes last.
	hostileBadLinks = "bad-links"
	// hostileBlocked: as hostileBadLinks, except that K1's certificate to
	// the subject verifies but grants another tag. Every key leads to the
	// subject through K1, which a path through K1 may not revisit: the
	// search wanders through the keys behind K1 before it would come to
	// the valid chain, listed last.
	hostileBlocked = "blocked"
)

var hostileShapes = []string{hostileDeadEnds, hostileBadLinks, hostileBlocked}

// hostileGraph returns the m² certificates of a hostile graph and the
// request they are meant to answer: (ecoupons-spend (lanes "3")) from K0
// to the subject, at t0, chains of at most 8 certificates.
func hostileGraph(t testing.TB, m int, shape string) ([]*SignedCert, ChainRequest) {
	t.Helper()
	keys := make([]ed25519.PrivateKey, m)
	for i := range keys {
		keys[i] = testEd25519(fmt.Sprintf("hostile-%d", i))
	}
	subject := testEd25519("hostile-subject")
	var certs []*SignedCert
	for i, k := range keys {
		for j, l := range keys {
			if i != j {
				certs = append(certs, makeCert(t, k, pubOf(t, l), tagLanes09, true, Validity{}))
			}
		}
	}
	for i := m - 1; i >= 0; i-- {
		k := keys[i]
		switch {
		case shape == hostileDeadEnds:
			certs = append(certs, makeCert(t, k, pubOf(t, k), tagLanes09, true, Validity{}))
		case i == 0:
			certs = append(certs, makeCert(t, k, pubOf(t, subject), tagLanes04, false, Validity{}))
		case i == 1 && shape == hostileBlocked:
			certs = append(certs, makeCert(t, k, pubOf(t, subject), `(ecoupons-spend (lanes "7"))`, false, Validity{}))
		default:
			sc := makeCert(t, k, pubOf(t, subject), tagLanes04, false, Validity{})
			sig := *sc.Signature
			sig.Value = append([]byte(nil), sig.Value...)
			sig.Value[0] ^= 1
			sc.Signature = &sig
			certs = append(certs, sc)
		}
	}
	return certs, ChainRequest{
		Root:    pubOf(t, keys[0]).Hash(),
		Subject: pubOf(t, subject).Hash(),
		Tag:     mustTag(t, `(ecoupons-spend (lanes "3"))`),
		Time:    t0,
	}
}

// BenchmarkFindChainHostile100 runs FindChain on the hostile graphs of 100
// certificates (a fresh search each time: no signature cache).
func BenchmarkFindChainHostile100(b *testing.B) {
	for _, shape := range hostileShapes {
		b.Run(shape, func(b *testing.B) {
			certs, req := hostileGraph(b, 10, shape)
			b.ReportAllocs()
			for b.Loop() {
				_, _ = FindChain(certs, req)
			}
		})
	}
}

// TestFindChainHostileGraphBounded: on hostile graphs of 100 certificates
// (about (n-1)! candidate paths) the search counts every link it tries,
// every signature it checks and every reduction, and stays within
// SearchBudget; dead ends cost nothing, broken links are never followed,
// and a search that would need more gives up with ErrSearchBudget.
func TestFindChainHostileGraphBounded(t *testing.T) {
	for _, shape := range hostileShapes {
		t.Run(shape, func(t *testing.T) {
			certs, req := hostileGraph(t, 10, shape)
			n := len(certs)
			chain, s, err := findChain(certs, req, 8)
			if s.steps > SearchBudget(n)+1 || s.paths > searchPaths || searchWork-s.op.steps > searchWork+1000 {
				t.Fatalf("%d steps (budget %d), %d paths, %d tag steps", s.steps, SearchBudget(n), s.paths, searchWork-s.op.steps)
			}
			verified := 0
			for _, c := range s.checked {
				if c {
					verified++
				}
			}
			t.Logf("%d certificates: %d steps of %d, %d signatures, %d paths: %v", n, s.steps, SearchBudget(n), verified, s.paths, err)
			switch shape {
			case hostileDeadEnds:
				// No certificate names the subject: nothing to walk.
				if !errors.Is(err, ErrNoPath) || s.steps != 0 || verified != 0 {
					t.Fatalf("dead ends: %v after %d steps, %d signatures", err, s.steps, verified)
				}
			case hostileBadLinks:
				// The broken links are checked once, by the backward pass,
				// and never followed: the one valid chain is found at once.
				if err != nil || len(chain.Certs) != 1 || s.steps > 3*10 {
					t.Fatalf("bad links: %v after %d steps", err, s.steps)
				}
			case hostileBlocked:
				var ce *ChainError
				if !errors.Is(err, ErrSearchBudget) || !errors.As(err, &ce) || !s.out {
					t.Fatalf("blocked: %v after %d steps", err, s.steps)
				}
			}
		})
	}
	// A smaller blocked graph: the valid chain, listed last, is within the
	// budget and is found.
	certs, req := hostileGraph(t, 5, hostileBlocked)
	chain, s, err := findChain(certs, req, 8)
	if err != nil || len(chain.Certs) != 1 || s.steps > SearchBudget(len(certs)) {
		t.Fatalf("25 blocked certificates: %v after %d steps", err, s.steps)
	}
}
