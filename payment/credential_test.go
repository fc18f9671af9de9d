package payment

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCredentialRoundTrip(t *testing.T) {
	cr := goldenCredential(t)
	h, err := cr.Header()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{h, "payment  " + h[len("Payment "):] + " "} {
		back, err := ParseCredential(v)
		if err != nil {
			t.Fatalf("%.30q: %v", v, err)
		}
		if back.Challenge != cr.Challenge {
			t.Errorf("challenge %+v", back.Challenge)
		}
		b, _ := NewBinder(goldenSecret[:])
		if err := b.Verify(&back.Challenge, goldenNow); err != nil {
			t.Errorf("echoed challenge: %v", err)
		}
	}
	// Without an open document or a binding (a lane's last coupon).
	p := goldenPayment()
	p.HasMAC, p.MAC = false, [16]byte{}
	cr, _ = NewCredential(goldenChallenge(t), p, nil)
	h, _ = cr.Header()
	back, _ := ParseCredential(h)
	q, open, err := back.ECoupon()
	if err != nil || *q != *p || open != nil {
		t.Errorf("%+v %q %v", q, open, err)
	}
}

func TestParseCredentialRefuses(t *testing.T) {
	enc := func(s string) string { return "Payment " + b64.EncodeToString([]byte(s)) }
	ch := `{"id":"x","realm":"r","method":"ecoupon","intent":"charge","request":"eyJ9"}`
	for name, h := range map[string]string{
		"scheme":       "Bearer abc",
		"no token":     "Payment ",
		"padded":       "Payment eyJ9fQ==",
		"std base64":   "Payment ey+/",
		"not json":     enc("nope"),
		"no payload":   enc(`{"challenge":` + ch + `}`),
		"payload list": enc(`{"challenge":` + ch + `,"payload":[]}`),
		"no id":        enc(`{"challenge":{"realm":"r","method":"ecoupon","intent":"charge","request":"eyJ9"},"payload":{}}`),
		"bad method":   enc(`{"challenge":{"id":"x","realm":"r","method":"E","intent":"charge","request":"eyJ9"},"payload":{}}`),
		"oversized":    "Payment " + strings.Repeat("A", MaxCredentialLen),
	} {
		if _, err := ParseCredential(h); !errors.Is(err, ErrBadCredential) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ParseCredential("Payment " + strings.Repeat("A", MaxCredentialLen)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized: %v", err)
	}
}

func TestECouponPayloadRefuses(t *testing.T) {
	base := goldenCredential(t)
	for name, payload := range map[string]string{
		"lane":    `{"lane":"x.1","index":1,"value":"H_-H04zq06o_d1hWTYzIUVTy7H7EXH-DktZHafbEkaQ"}`,
		"index":   `{"lane":"-8z1wab31vQQfzf0Ay5E-Z4K3v244c6bUIK2ACFrlms.1","index":0,"value":"H_-H04zq06o_d1hWTYzIUVTy7H7EXH-DktZHafbEkaQ"}`,
		"value":   `{"lane":"-8z1wab31vQQfzf0Ay5E-Z4K3v244c6bUIK2ACFrlms.1","index":1,"value":"H_-H04zq06o"}`,
		"binding": `{"lane":"-8z1wab31vQQfzf0Ay5E-Z4K3v244c6bUIK2ACFrlms.1","index":1,"value":"H_-H04zq06o_d1hWTYzIUVTy7H7EXH-DktZHafbEkaQ","binding":"AA"}`,
		"open":    `{"lane":"-8z1wab31vQQfzf0Ay5E-Z4K3v244c6bUIK2ACFrlms.1","index":1,"value":"H_-H04zq06o_d1hWTYzIUVTy7H7EXH-DktZHafbEkaQ","open":"a+b"}`,
		"type":    `{"lane":1}`,
	} {
		cr := *base
		cr.Payload = []byte(payload)
		if _, _, err := cr.ECoupon(); !errors.Is(err, ErrBadCredential) {
			t.Errorf("%s: %v", name, err)
		}
	}
	cr := *base
	cr.Challenge.Method = "lightning"
	if _, _, err := cr.ECoupon(); !errors.Is(err, ErrMethodUnsupported) {
		t.Errorf("other method: %v", err)
	}
}

func TestCredentialFromRequest(t *testing.T) {
	h, _ := goldenCredential(t).Header()
	for name, tc := range map[string]struct {
		hdr   http.Header
		field string
		err   error
	}{
		"authorization":         {http.Header{"Authorization": {h}}, "Authorization", nil},
		"payment-authorization": {http.Header{"Authorization": {"Bearer tok"}, "Payment-Authorization": {h}}, HeaderPaymentAuthorization, nil},
		"bare token":            {http.Header{"Payment-Authorization": {h[len("Payment "):]}}, HeaderPaymentAuthorization, nil},
		"none":                  {http.Header{"Authorization": {"Bearer tok"}}, "", ErrNoCredential},
		"two":                   {http.Header{"Authorization": {h}, "Payment-Authorization": {h}}, "", ErrBadCredential},
	} {
		_, field, err := CredentialFromRequest(tc.hdr)
		if field != tc.field || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s: %q, %v", name, field, err)
		}
	}
}

func TestVerifyECoupon(t *testing.T) {
	b, _ := NewBinder(goldenSecret[:])
	cr := goldenCredential(t)
	route := testRequest()
	req, p, open, err := b.VerifyECoupon(cr, route, goldenNow)
	if err != nil || req.Nonce != route.Nonce || *p != *goldenPayment() || string(open) != string(goldenOpen) {
		t.Fatalf("%+v %+v %q %v", req, p, open, err)
	}
	for name, change := range map[string]func(r *ECouponRequest){
		"vendor":   func(r *ECouponRequest) { r.Vendor = "other.example" },
		"price":    func(r *ECouponRequest) { r.Price = 3 },
		"unit":     func(r *ECouponRequest) { r.Unit = "0.01" },
		"currency": func(r *ECouponRequest) { r.Currency = "USD" },
	} {
		other := *route
		change(&other)
		if _, _, _, err := b.VerifyECoupon(cr, &other, goldenNow); !errors.Is(err, ErrInvalidChallenge) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, _, _, err := b.VerifyECoupon(cr, route, goldenNow.Add(time.Hour)); !errors.Is(err, ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	x := *cr
	x.Challenge.Method = "lightning"
	if _, _, _, err := b.VerifyECoupon(&x, route, goldenNow); !errors.Is(err, ErrMethodUnsupported) {
		t.Errorf("method: %v", err)
	}
	c := goldenChallenge(t)
	if r, err := c.ECouponRequest(); err != nil || *r != *route {
		t.Errorf("ECouponRequest: %+v %v", r, err)
	}
	if c.Expired(goldenNow) || !c.Expired(goldenNow.Add(5*time.Minute)) {
		t.Error("Expired")
	}
}
