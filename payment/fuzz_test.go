package payment

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzParseChallenge: WWW-Authenticate values never panic the parsers, and
// each Payment challenge they accept formats to a value that parses back
// to it alone.
func FuzzParseChallenge(f *testing.F) {
	f.Add(goldenChallenge(f).String())
	f.Add(`Basic realm="x", Payment id="a", realm="r \"q\" \\", method=ecoupon, intent=charge, request=eyJ9, Bearer abc==`)
	f.Add(`Payment id=a, realm=r, method=ecoupon, intent=session, request=eyJ9, expires="2026-12-03T06:05:00Z", header="Payment-Authorization", opaque=e30, digest="sha-256=:AA==:", description="été"`)
	f.Add(`Negotiate, Payment, Payment x==`)
	f.Fuzz(func(t *testing.T, h string) {
		_, _ = ParseAuthChallenges(h)
		cs, _ := ParseChallenges(h)
		for _, c := range cs {
			back, err := ParseChallenges(c.String())
			if err != nil || len(back) != 1 || back[0] != c {
				t.Fatalf("%+v formats to %q, which parses to %+v, %v", c, c.String(), back, err)
			}
			_, _ = DecodeRequest(c.Request)
			if got, want := appendChallengeJCS(nil, &c), genericJCS(t, &c); !bytes.Equal(got, want) {
				t.Fatalf("emitted %s, canonical %s", got, want)
			}
		}
	})
}

// FuzzParseCredential: credential values never panic the parser or the
// payload decoder; what they accept encodes to a credential that parses
// to the same challenge and payment. The second input is the credential's
// JSON, base64-encoded by the target, so mutations reach the JSON.
func FuzzParseCredential(f *testing.F) {
	cr := goldenCredential(f)
	h, _ := cr.Header()
	j, _ := cr.JSON()
	f.Add(h, j)
	f.Add("Payment e30", []byte(`{"challenge":{"id":"x","realm":"r","method":"ecoupon","intent":"charge","request":"eyJ9"},"payload":{"lane":"-8z1wab31vQQfzf0Ay5E-Z4K3v244c6bUIK2ACFrlms.1","index":1,"value":"H_-H04zq06o_d1hWTYzIUVTy7H7EXH-DktZHafbEkaQ"}}`))
	f.Fuzz(func(t *testing.T, h string, j []byte) {
		checkCredential(t, h)
		checkCredential(t, "Payment "+b64.EncodeToString(j))
	})
}

func checkCredential(t *testing.T, h string) {
	t.Helper()
	cr, err := ParseCredential(h)
	if err != nil {
		return
	}
	p, open, err := cr.ECoupon()
	if again, err := cr.Header(); err == nil {
		back, err := ParseCredential(again)
		if err != nil || back.Challenge != cr.Challenge {
			t.Fatalf("re-encoded credential: %+v, %v", back, err)
		}
	}
	if err != nil {
		return
	}
	cr2, err := NewCredential(&cr.Challenge, p, open)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := cr2.Header()
	if err != nil {
		return // a large open document may not fit twice
	}
	back, err := ParseCredential(h2)
	if err != nil {
		t.Fatal(err)
	}
	p2, open2, err := back.ECoupon()
	if err != nil || *p2 != *p || !bytes.Equal(open, open2) {
		t.Fatalf("payment %+v became %+v, %v", p, p2, err)
	}
}

// FuzzAcceptPayment: Accept-Payment values never panic the parser, weights
// stay in 0…1000, and what it accepts formats to a value that parses back
// to the same ranges.
func FuzzAcceptPayment(f *testing.F) {
	f.Add("ecoupon/charge, ecoupon/session;q=0, lightning/*;q=0.5, */*;q=0.001")
	f.Add("tempo/charge;Q=1.000,,*/session ; q=0.25")
	f.Fuzz(func(t *testing.T, h string) {
		a, err := ParseAcceptPayment(h)
		if err != nil {
			return
		}
		for _, r := range a {
			if r.Q < 0 || r.Q > 1000 {
				t.Fatalf("weight %d", r.Q)
			}
		}
		back, err := ParseAcceptPayment(a.String())
		if err != nil || len(back) != len(a) {
			t.Fatalf("%q formats to %q: %v", h, a.String(), err)
		}
		for i := range a {
			if a[i] != back[i] {
				t.Fatalf("%+v became %+v", a[i], back[i])
			}
		}
		_ = a.Order([]Challenge{{Method: "ecoupon", Intent: "charge"}})
	})
}

// FuzzCanonicalize: JCS output is valid JSON and its own canonical form.
func FuzzCanonicalize(f *testing.F) {
	f.Add([]byte(`{"b":[1,2e3,-0.5,"\u00e9\n"],"a":{"z":null,"y":true}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Canonicalize(in)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("%q canonicalised to invalid JSON %q", in, out)
		}
		again, err := Canonicalize(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q then %q, %v", out, again, err)
		}
	})
}

// FuzzDecodeRequest: request JSON never panics the decoder, and what it
// accepts encodes to a request that decodes to the same terms.
func FuzzDecodeRequest(f *testing.F) {
	s, _ := EncodeRequest(testRequest())
	j, _ := b64.DecodeString(s)
	f.Add(j)
	f.Fuzz(func(t *testing.T, j []byte) {
		r, err := DecodeRequest(b64.EncodeToString(j))
		if err != nil {
			return
		}
		s, err := EncodeRequest(r)
		if err != nil {
			return // too large once re-encoded
		}
		back, err := DecodeRequest(s)
		if err != nil || *back != *r {
			t.Fatalf("%+v became %+v, %v", r, back, err)
		}
	})
}

// FuzzParseReceipt: receipt JSON never panics the parser, and what it
// accepts formats to a receipt that parses back to it.
func FuzzParseReceipt(f *testing.F) {
	f.Add(NewReceipt(goldenPayment().Lane, 1, goldenTESLA(), goldenNow).JSON())
	f.Fuzz(func(t *testing.T, j []byte) {
		r, err := ParseReceipt(b64.EncodeToString(j))
		if err != nil {
			return
		}
		_, _ = r.TESLA()
		back, err := ParseReceipt(r.Header())
		if err != nil || *back != *r {
			t.Fatalf("%+v became %+v, %v", r, back, err)
		}
	})
}
