package wallet

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/payment"
)

// paymentGate speaks only the Payment scheme (method ecoupon, intent
// charge) for news.example, one coupon a request. With resume set, it
// refuses the first payment on each lane as coupon_spent in problem
// details saying the lane resumes there (lease advertised: lease), then
// accepts payments from there. It records the coupon index of each
// credential it verified.
type paymentGate struct {
	t              *testing.T
	binder         *payment.Binder
	lease, resume  uint32
	refused        bool
	indexes        []uint32
	opens          int
	paymentAuthHdr bool // ask for the credential in Payment-Authorization
}

func newPaymentGate(t *testing.T) *paymentGate {
	secret := sha256.Sum256([]byte("test secret"))
	b, err := payment.NewBinder(secret[:])
	if err != nil {
		t.Fatal(err)
	}
	return &paymentGate{t: t, binder: b}
}

func (g *paymentGate) route() *payment.ECouponRequest {
	return &payment.ECouponRequest{Vendor: "news.example", Price: 1, Unit: "0.001", Currency: "EUR", Nonce: "AAAAAAAAAAAAAAAAAAAAAA", Lease: g.lease}
}

func (g *paymentGate) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	refuse := func(code, detail string, resume uint32) (*http.Response, error) {
		c, err := g.binder.Issue("news.example", payment.IntentCharge, g.route(), time.Now().Add(time.Minute), g.paymentAuthHdr)
		if err != nil {
			return nil, err
		}
		p := payment.NewProblem(code, detail)
		p.Resume = resume
		payment.WriteChallenge(rec, p, c)
		return rec.Result(), nil
	}
	cr, _, err := payment.CredentialFromRequest(r.Header)
	if errors.Is(err, payment.ErrNoCredential) {
		if r.Header.Get(payment.HeaderAcceptPayment) != "ecoupon/charge, ecoupon/session" {
			g.t.Errorf("Accept-Payment %q", r.Header.Get(payment.HeaderAcceptPayment))
		}
		return refuse(coupons.CodePaymentRequired, "pay", 0)
	}
	if err != nil {
		return nil, err
	}
	if g.paymentAuthHdr && r.Header.Get(payment.HeaderPaymentAuthorization) == "" {
		g.t.Error("the credential is not in Payment-Authorization, which the challenge asked for")
	}
	_, p, open, err := g.binder.VerifyECoupon(cr, g.route(), time.Now())
	if err != nil {
		return nil, err
	}
	if open != nil {
		g.opens++
	}
	g.indexes = append(g.indexes, p.Index)
	if g.resume > 0 && (!g.refused || p.Index < g.resume) {
		g.refused = true
		return refuse(coupons.CodeCouponSpent, "spent", g.resume)
	}
	payment.SetReceipt(rec.Header(), payment.NewReceipt(p.Lane, p.Index, nil, time.Now()))
	rec.WriteHeader(200)
	return rec.Result(), nil
}

// TestWalletResumesOnCouponSpentOverPayment: a gate that restarted within
// its lease refuses the wallet's next coupon as spent in problem details
// whose resume says where the lane resumes; the wallet skips there
// (within the lease the Payment challenge's request advertises) and pays
// with a Payment credential. A resume beyond the lease is refused.
func TestWalletResumesOnCouponSpentOverPayment(t *testing.T) {
	tr := newTestTransport(t)
	gate := newPaymentGate(t)
	gate.lease, gate.resume = 8, 9
	tr.Base = gate
	resp, err := get(t, tr)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the gate's restart: %v %v", resp, err)
	}
	if len(gate.indexes) != 2 || gate.indexes[0] != 1 || gate.indexes[1] != 9 {
		t.Fatalf("coupons paid %v, want [1 9]", gate.indexes)
	}
	if tr.Spent() != 9 || gate.opens != 1 {
		t.Fatalf("spent %d, want 9 (1, 7 skipped, 9); %d opens, want 1", tr.Spent(), gate.opens)
	}

	tr = newTestTransport(t)
	gate = newPaymentGate(t)
	gate.lease, gate.resume = 8, 11
	tr.Base = gate
	if _, err := get(t, tr); !errors.Is(err, ErrResumeRefused) {
		t.Fatalf("a resume 9 coupons past the wallet's, lease 8: %v", err)
	}
	if tr.Spent() != 1 {
		t.Fatalf("spent %d: the hostile resume cost more than the refused coupon", tr.Spent())
	}
}

// TestWalletPaysPaymentChallengeInPaymentAuthorization: a challenge with
// header="Payment-Authorization" gets its credential there, and the
// request's own Authorization is left as it was.
func TestWalletPaysPaymentChallengeInPaymentAuthorization(t *testing.T) {
	tr := newTestTransport(t)
	gate := newPaymentGate(t)
	gate.paymentAuthHdr = true
	var sent http.Header
	tr.Base = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent = r.Header.Clone()
		return gate.RoundTrip(r)
	})
	req, _ := http.NewRequest("GET", "http://news.example/x", nil)
	req.Header.Set("Authorization", "Bearer login")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	if sent.Get("Authorization") != "Bearer login" || !strings.HasPrefix(sent.Get(payment.HeaderPaymentAuthorization), "Payment ") {
		t.Fatalf("Authorization %q, Payment-Authorization %q", sent.Get("Authorization"), sent.Get(payment.HeaderPaymentAuthorization))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestWalletRefusesPaymentChallengeFromAnotherHost: a Payment challenge
// naming the book's vendor, sent by a host that is not the vendor's, is
// refused before any coupon leaves, as an ECoupon one is.
func TestWalletRefusesPaymentChallengeFromAnotherHost(t *testing.T) {
	tr := newTestTransport(t)
	gate := newPaymentGate(t)
	tr.Base = gate
	if _, err := (&http.Client{Transport: tr}).Get("http://relay.example/x"); !errors.Is(err, ErrWrongVendor) {
		t.Fatalf("a Payment challenge from relay.example: %v", err)
	}
	if tr.Spent() != 0 || len(gate.indexes) != 0 {
		t.Fatalf("spent %d, paid %v", tr.Spent(), gate.indexes)
	}
}

// TestChallengeFromResponseSchemes: the scheme chosen from a 402 offering
// both, one, or a forced one; an unknown scheme is an error.
func TestChallengeFromResponseSchemes(t *testing.T) {
	gate := newPaymentGate(t)
	req := httptest.NewRequest("GET", "http://news.example/x", nil)
	req.Header.Set(payment.HeaderAcceptPayment, acceptPayment)
	resp, err := gate.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	h := resp.Header
	both := h.Clone()
	both.Add("WWW-Authenticate", `ECoupon realm="news.example", vendor="news.example", price=1, unit="0.001", currency="EUR", nonce="AAAAAAAAAAAAAAAAAAAAAA"`)
	for _, c := range []struct {
		h      http.Header
		scheme string
		want   string // scheme name, or "" for an error
	}{
		{both, SchemeAuto, "Payment"}, {both, SchemeECoupon, "ECoupon"}, {both, SchemePayment, "Payment"},
		{h, SchemeECoupon, ""}, {h, SchemeAuto, "Payment"},
	} {
		ch, err := ChallengeFromResponse(c.h, c.scheme)
		switch {
		case c.want == "" && !errors.Is(err, ErrBadChallenge):
			t.Errorf("scheme %q: %v", c.scheme, err)
		case c.want != "" && (err != nil || ch.SchemeName() != c.want || ch.Vendor != "news.example" || ch.Price != 1):
			t.Errorf("scheme %q: %+v %v, want %s", c.scheme, ch, err, c.want)
		}
	}
	if _, err := ChallengeFromResponse(both, "L402"); !errors.Is(err, ErrUnknownScheme) {
		t.Errorf("unknown scheme: %v", err)
	}
}
