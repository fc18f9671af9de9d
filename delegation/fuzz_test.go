package delegation

import (
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/spki"
)

// FuzzParseGrant: grant documents (seed and portion lanes) never panic the
// parser or Accept, and a parsed grant re-encodes to its own canonical
// bytes.
func FuzzParseGrant(f *testing.F) {
	fx := newFixture(f)
	phoneKey := testKey("phone")
	phone, phoneEnc := device(f, "phone", phoneKey)
	// Portions (lane 3 whole, lane 4 a portion of 3) and seeds, of a book
	// and of an anonymous book.
	for _, owner := range []*Holder{fx.owner, anonymousOwner(fx)} {
		for _, opt := range []GrantOptions{{Propagate: true, Cap: 11_000_000}, {}} {
			g, err := owner.Issue(phone, 3, 4, opt)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(spki.Canonical(g.Sexp()))
			f.Add(spki.Transport(g.Sexp()))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		x, err := spki.Parse(in)
		if err != nil {
			return
		}
		g, err := ParseGrant(x)
		if err != nil {
			return
		}
		if string(spki.Canonical(g.Sexp())) != string(spki.Canonical(x)) {
			t.Fatal("grant does not re-encode to its bytes")
		}
		_, _ = Accept(g, phoneKey, phoneEnc, t0)
	})
}

// FuzzParseRevocations: revocation lists never panic the parser; a list
// that verifies re-encodes to its bytes and answers consistently.
func FuzzParseRevocations(f *testing.F) {
	fx := newFixture(f)
	brokerPub := pub(f, fx.broker)
	l, err := SignRevocations(fx.broker, 3, t0, t0.Add(time.Hour), [][32]byte{{1}, {2}}, []spki.KeyHash{{3}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(spki.Canonical(l.Sexp()))
	f.Add(spki.Advanced(l.Sexp()))
	f.Fuzz(func(t *testing.T, in []byte) {
		x, err := spki.Parse(in)
		if err != nil {
			return
		}
		r, err := ParseRevocations(x, brokerPub)
		if err != nil {
			return
		}
		if string(spki.Canonical(r.Sexp())) != string(spki.Canonical(x)) {
			t.Fatal("list does not re-encode to its bytes")
		}
		for _, h := range r.Certs {
			if !r.CertRevoked(h) {
				t.Fatal("listed certificate not reported revoked")
			}
		}
	})
}

// FuzzParseDevice: device identities never panic the parser.
func FuzzParseDevice(f *testing.F) {
	d, _ := device(f, "phone", testKey("phone"))
	f.Add(spki.Canonical(d.Sexp()))
	f.Fuzz(func(t *testing.T, in []byte) {
		x, err := spki.Parse(in)
		if err != nil {
			return
		}
		if d, err := ParseDevice(x); err == nil {
			if string(spki.Canonical(d.Sexp())) != string(spki.Canonical(x)) {
				t.Fatal("device does not re-encode to its bytes")
			}
		}
	})
}
