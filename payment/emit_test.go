package payment

import (
	"bytes"
	"encoding/json"
	"testing"
)

// genericJCS is the slow path the emitters replace: encoding/json, then
// Canonicalize.
func genericJCS(t testing.TB, v any) []byte {
	t.Helper()
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Canonicalize(j)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEmittersAreCanonical: each direct emitter writes what encoding/json
// followed by Canonicalize writes, for awkward strings too.
func TestEmittersAreCanonical(t *testing.T) {
	odd := "q\"b\\s\x01\x1f\t\n<>&\u2028é😀\x7f\xff\xe2\x82"
	r := testRequest()
	r.Description, r.Store, r.Broker = odd, odd, ""
	c := goldenChallenge(t)
	c.Description, c.Digest, c.Opaque, c.Header, c.Realm = odd, "sha-256=:AA==:", "e30", HeaderPaymentAuthorization, odd
	pl := ECouponPayload{Lane: odd, Index: 1<<32 - 1, Value: odd, Open: odd}
	cr := goldenCredential(t)
	cr.Source = odd
	rc := NewReceipt(goldenPayment().Lane, 7, nil, goldenNow)
	rc.Reference = odd
	p := NewProblem("coupon_spent", odd)
	p.Hint, p.Resume, p.ChallengeID = odd, 9, odd

	check := func(name string, got, want []byte) {
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
	wire := requestWire{Amount: "2", Currency: "eur", Recipient: r.Vendor, Description: odd,
		MethodDetails: &detailsWire{Unit: r.Unit, Nonce: r.Nonce, Store: odd, Lease: r.Lease}}
	check("request", appendRequestJCS(nil, r), genericJCS(t, &wire))
	check("challenge", appendChallengeJCS(nil, c), genericJCS(t, c))
	check("payload", appendPayloadJCS(nil, &pl), genericJCS(t, &pl))
	j, err := cr.JSON()
	if err != nil {
		t.Fatal(err)
	}
	check("credential", j, genericJCS(t, cr))
	check("receipt", rc.JSON(), genericJCS(t, rc))
	check("problem", p.JSON(), genericJCS(t, p))
}
