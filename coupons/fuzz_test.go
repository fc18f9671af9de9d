package coupons

import (
	"testing"

	"github.com/ecoupons/ecoupons/spki"
)

// FuzzParsePayment: the header parser never panics, and whatever it
// accepts re-encodes to a header that parses to the same payment.
func FuzzParsePayment(f *testing.F) {
	w := newWorld(f)
	pp := w.payer(1)
	for i := uint32(1); i <= 3; i++ {
		p, _ := pp.pay(i, "/x")
		f.Add(p.Header())
	}
	f.Add("ECoupon lane=\"AAAA\", i=1, w=x")
	f.Add("ecoupon i=1,w=,m=,lane=")
	f.Add("ECoupon lane=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.0, i=01, w=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("ECoupon lane=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.7, i=1, w=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA, m=AAAAAAAAAAAAAAAAAAAAAA ")
	f.Fuzz(func(t *testing.T, h string) {
		// The canonical form's parser takes only what the general one
		// takes, as the same payment.
		var c, g Payment
		if parseCanonical(h, &c) {
			if err := parseParams(h, &g); err != nil || g != c {
				t.Fatalf("%q: canonical parse %+v, general %+v %v", h, c, g, err)
			}
		}
		var p Payment
		if err := ParsePayment(h, &p); err != nil {
			return
		}
		if !parseCanonical(p.Header(), &c) || c != p {
			t.Fatalf("the header AppendHeader writes, %q, is not parsed as canonical", p.Header())
		}
		var q Payment
		if err := ParsePayment(p.Header(), &q); err != nil || q != p {
			t.Fatalf("re-encoded header %q does not round-trip: %v", p.Header(), err)
		}
	})
}

// FuzzParseOpen: lane-open documents (and the books, certificates and
// signatures inside) never make the parser or the verifier panic; a
// parsed document re-encodes to the same canonical bytes.
func FuzzParseOpen(f *testing.F) {
	w := newWorld(f)
	toPhone := w.grant(f, w.alice, w.phone, 0, 1, 1000, true)
	portion := w.open(f, w.phone, 1, toPhone)
	portion.End = 5
	if err := portion.SignOpen(w.phone, "nonce-1"); err != nil {
		f.Fatal(err)
	}
	noUser := w.open(f, w.alice, 2)
	noUser.User = nil
	for _, o := range []*Open{w.open(f, w.alice, 0), w.open(f, w.phone, 1, toPhone), portion, noUser, anonymousOpen(f, w)} {
		f.Add(spki.Canonical(o.Sexp()))
		f.Add(spki.Transport(o.Sexp()))
	}
	f.Add(spki.Canonical(w.book.Sexp()))
	f.Fuzz(func(t *testing.T, in []byte) {
		x, err := spki.Parse(in)
		if err != nil {
			return
		}
		_, _ = ParseSignedBook(x)
		o, err := ParseOpen(x)
		if err != nil {
			return
		}
		if got := spki.Canonical(o.Sexp()); string(got) != string(spki.Canonical(x)) {
			t.Fatalf("lane open does not re-encode to its bytes")
		}
		_, _ = VerifyOpen(o, w.policy)
	})
}

// FuzzParseReceipt: receipt headers and commitments never panic their
// parsers; accepted headers re-encode to equivalent headers.
func FuzzParseReceipt(f *testing.F) {
	f.Add("c=AAAAAAAAAAAAAAAA, t=5, m=AAAAAAAAAAAAAAAAAAAAAA, d=3, k=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("c=x,t=1")
	f.Fuzz(func(t *testing.T, h string) {
		r, err := ParseReceipt(h)
		if err != nil {
			return
		}
		back, err := ParseReceipt(r.Header())
		if err != nil || back.Commitment != r.Commitment || back.Packet.Interval != r.Packet.Interval ||
			back.Packet.MAC != r.Packet.MAC || back.Packet.DisclosedKey != r.Packet.DisclosedKey || back.Packet.DisclosedIndex != r.Packet.DisclosedIndex {
			t.Fatalf("receipt does not round-trip: %v", err)
		}
		if x, err := spki.Parse([]byte(h)); err == nil {
			_, _ = ParseReceiptCommitment(x)
		}
	})
}
