package payment

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWriteChallenge(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("WWW-Authenticate", `ECoupon realm="news.example", nonce=abc`)
	c := goldenChallenge(t)
	p := NewProblem("payment_required", "pay")
	WriteChallenge(rec, p, c)
	res := rec.Result()
	if res.StatusCode != 402 || res.Header.Get("Cache-Control") != "no-store" || res.Header.Get("Content-Type") != ContentTypeProblem {
		t.Fatalf("%d %v", res.StatusCode, res.Header)
	}
	if v := res.Header.Values("WWW-Authenticate"); len(v) != 2 || v[1] != c.String() {
		t.Errorf("WWW-Authenticate %q", v)
	}
	cs, err := ChallengesFromResponse(res.Header)
	if err != nil || len(cs) != 1 || cs[0] != *c {
		t.Errorf("challenges %+v %v", cs, err)
	}
	got, err := ProblemFromResponse(res)
	if err != nil || got.ChallengeID != c.ID || got.Type != ProblemPaymentRequired {
		t.Errorf("problem %+v %v", got, err)
	}
	plain := &http.Response{Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(nil))}
	if p, err := ProblemFromResponse(plain); p != nil || err != nil {
		t.Errorf("plain JSON: %v %v", p, err)
	}
}

func TestSetReceipt(t *testing.T) {
	r := NewReceipt(goldenPayment().Lane, 1, nil, goldenNow)
	for in, want := range map[string]string{
		"":                             "private",
		"public, max-age=60":           "max-age=60, private",
		"private, no-cache":            "private, no-cache",
		"Public,s-maxage=5,,immutable": "s-maxage=5, immutable, private",
	} {
		h := http.Header{}
		if in != "" {
			h.Set("Cache-Control", in)
		}
		SetReceipt(h, r)
		if got := h.Get("Cache-Control"); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
		if back, err := ParseReceipt(h.Get(HeaderReceipt)); err != nil || *back != *r {
			t.Errorf("receipt %+v %v", back, err)
		}
	}
}

func TestCredentialSetHeader(t *testing.T) {
	cr := goldenCredential(t)
	h := http.Header{"Authorization": {"Bearer login"}}
	cr.Challenge.Header = HeaderPaymentAuthorization
	if err := cr.SetHeader(h); err != nil {
		t.Fatal(err)
	}
	if h.Get("Authorization") != "Bearer login" {
		t.Error("the login was replaced")
	}
	if _, field, err := CredentialFromRequest(h); err != nil || field != HeaderPaymentAuthorization {
		t.Errorf("%q %v", field, err)
	}
}

func TestOfferAndSpeaksPayment(t *testing.T) {
	cs := []Challenge{{ID: "1", Method: "ecoupon", Intent: "session"}, {ID: "2", Method: "ecoupon", Intent: "charge"}}
	for name, tc := range map[string]struct {
		h    http.Header
		want string
	}{
		"absent":    {http.Header{}, "12"},
		"ordered":   {http.Header{"Accept-Payment": {"ecoupon/session;q=0.5", "ecoupon/charge"}}, "21"},
		"filtered":  {http.Header{"Accept-Payment": {"ecoupon/charge, */session;q=0"}}, "2"},
		"malformed": {http.Header{"Accept-Payment": {"ecoupon"}}, "12"},
	} {
		var ids string
		for _, c := range Offer(tc.h, cs) {
			ids += c.ID
		}
		if ids != tc.want {
			t.Errorf("%s: %s, want %s", name, ids, tc.want)
		}
	}
	for h, want := range map[string]bool{"Accept-Payment": true, "Payment-Authorization": true, "Authorization": true, "X-Other": false} {
		v := "Payment e30"
		if h == "Accept-Payment" {
			v = "ecoupon/charge"
		}
		if got := SpeaksPayment(http.Header{h: {v}}); got != want {
			t.Errorf("%s: %v", h, got)
		}
	}
	if SpeaksPayment(http.Header{"Authorization": {"ECoupon lane=x"}}) {
		t.Error("an ECoupon payment speaks Payment")
	}
}
