package caddymodule

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/payment"
	"github.com/ecoupons/ecoupons/spki"
	"go.uber.org/zap"
)

// acceptECoupon is the Accept-Payment of a client of the Payment scheme.
var acceptECoupon = http.Header{"Accept-Payment": {"ecoupon/charge"}}

// paymentChallenge returns the ecoupon charge challenge of a 402.
func paymentChallenge(t testing.TB, rec *httptest.ResponseRecorder) *payment.Challenge {
	t.Helper()
	if rec.Code != http.StatusPaymentRequired {
		t.Fatalf("want a 402, got %d %s", rec.Code, rec.Body)
	}
	cs, err := payment.ChallengesFromResponse(rec.Header())
	if err != nil {
		t.Fatalf("challenges %q: %v", rec.Header().Values("WWW-Authenticate"), err)
	}
	c := payment.SelectECoupon(cs, payment.IntentCharge)
	if c == nil {
		t.Fatalf("no Payment challenge of method ecoupon in %q", rec.Header().Values("WWW-Authenticate"))
	}
	return c
}

// payClient returns an ECoupon client of lane whose nonce is that of the
// Payment challenge of g's 402, and that challenge.
func payClient(t testing.TB, g *Gate, w *world, lane uint32) (*client, *payment.Challenge) {
	t.Helper()
	ch := paymentChallenge(t, serve(g, "GET", "/premium/x", acceptECoupon))
	terms, err := ch.ECouponRequest()
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, nil, w.owner, lane)
	c.nonce = terms.Nonce
	return c, ch
}

// asPayment turns the headers of an ECoupon payment (c.payment) into a
// credential answering ch, in the header ch asks for.
func asPayment(t testing.TB, h http.Header, ch *payment.Challenge) http.Header {
	t.Helper()
	var p coupons.Payment
	if err := coupons.ParsePayment(h.Get("Authorization"), &p); err != nil {
		t.Fatal(err)
	}
	var open []byte
	if doc := h.Get(HeaderOpen); doc != "" {
		open = []byte(doc)
	}
	cr, err := payment.NewCredential(ch, &p, open)
	if err != nil {
		t.Fatal(err)
	}
	out := h.Clone()
	out.Del("Authorization")
	out.Del(HeaderOpen)
	if err := cr.SetHeader(out); err != nil {
		t.Fatal(err)
	}
	return out
}

// wantProblem checks that rec is a problem of type typ with status and,
// when code is not "", reason code; it returns the problem.
func wantProblem(t testing.TB, rec *httptest.ResponseRecorder, status int, typ, code string) *payment.Problem {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != payment.ContentTypeProblem {
		t.Fatalf("Content-Type %q, want %s: %d %s", ct, payment.ContentTypeProblem, rec.Code, rec.Body)
	}
	p, err := payment.ParseProblem(rec.Body.Bytes())
	if err != nil {
		t.Fatalf("problem %s: %v", rec.Body, err)
	}
	if rec.Code != status || p.Status != status || p.Type != payment.ProblemBase+typ && p.Type != typ || (code != "" && p.Code != code) {
		t.Fatalf("got %d %s, want %d %s %s", rec.Code, rec.Body, status, typ, code)
	}
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q on a refusal, want no-store", rec.Header().Get("Cache-Control"))
	}
	if status == http.StatusPaymentRequired {
		c := paymentChallenge(t, rec)
		if p.ChallengeID != c.ID {
			t.Errorf("the problem names challenge %q, the 402 carries %q", p.ChallengeID, c.ID)
		}
		if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "ECoupon ") {
			t.Errorf("a 402 without the ECoupon challenge: %q", rec.Header().Values("WWW-Authenticate"))
		}
	}
	return p
}

// TestPaymentSchemePaysEndToEnd: a client of the Payment scheme reads the
// ecoupon challenge of a 402, opens a lane with its first credential and
// pays with the next ones; each paid response carries a Payment-Receipt
// whose reference is the gate's TESLA receipt. A client of the ECoupon
// scheme gets the same 402 with both challenges and the ECoupon JSON.
func TestPaymentSchemePaysEndToEnd(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g, _, _ := receiptGate(t, w)

	// An ECoupon client: both challenges, the JSON body, no-store.
	rec := serve(g, "GET", "/premium/x", nil)
	wantRefusal(t, rec, 402, coupons.CodePaymentRequired)
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("402 Cache-Control %q", rec.Header().Get("Cache-Control"))
	}
	ecoupon := nonceRe.FindStringSubmatch(rec.Header().Get("WWW-Authenticate"))[1]
	ch := paymentChallenge(t, rec)
	terms, err := ch.ECouponRequest()
	if err != nil {
		t.Fatal(err)
	}
	if terms.Nonce != ecoupon || terms.Vendor != "news.example" || terms.Price != 1 || terms.Unit != "0.001" || terms.Currency != "EUR" {
		t.Fatalf("the Payment challenge's terms %+v differ from the ECoupon challenge's (nonce %s)", terms, ecoupon)
	}
	if exp, now := ch.ExpiresAt(), g.now(); !exp.After(now) || exp.After(now.Add(2*time.Duration(g.NonceTTL))) {
		t.Errorf("challenge expires at %v, now %v, nonce ttl %v", exp, now, time.Duration(g.NonceTTL))
	}

	// A Payment client: a problem, payment-required, naming the challenge.
	p := wantProblem(t, serve(g, "GET", "/premium/x", acceptECoupon), 402, "payment-required", coupons.CodePaymentRequired)
	if p.Hint == "" || p.Detail == "" {
		t.Errorf("the problem says neither why nor what to do: %+v", p)
	}

	c, ch := payClient(t, g, w, 0)
	for k := 1; k <= 5; k++ {
		h := asPayment(t, c.payment("GET", "/premium/x", 1), ch)
		if k == 1 && !strings.Contains(string(mustCredentialJSON(t, h)), `"open"`) {
			t.Fatal("the first credential carries no open document")
		}
		rec := serve(g, "GET", "/premium/x", h)
		if rec.Code != 200 || rec.Body.String() != "paid content" {
			t.Fatalf("payment %d: %d %s", k, rec.Code, rec.Body)
		}
		r, err := payment.ParseReceipt(rec.Header().Get(payment.HeaderReceipt))
		if err != nil {
			t.Fatalf("payment %d: receipt %q: %v", k, rec.Header().Get(payment.HeaderReceipt), err)
		}
		if r.Index != uint32(k) || r.Lane != c.lane.String() || r.Method != payment.Method {
			t.Errorf("payment %d: receipt %+v", k, r)
		}
		tesla, err := r.TESLA()
		if err != nil || tesla == nil || tesla.Header() != rec.Header().Get(HeaderReceipt) {
			t.Errorf("payment %d: the receipt's reference %q is not the TESLA receipt %q (%v)", k, r.Reference, rec.Header().Get(HeaderReceipt), err)
		}
		if !strings.Contains(rec.Header().Get("Cache-Control"), "private") {
			t.Errorf("payment %d: a paid response with Cache-Control %q", k, rec.Header().Get("Cache-Control"))
		}
		if got := rec.Header().Get(HeaderBalance); (k == 1) != (got != "") {
			t.Errorf("payment %d: %s %q (sent with the lane's open only, far from its end)", k, HeaderBalance, got)
		}
	}
}

func mustCredentialJSON(t testing.TB, h http.Header) []byte {
	t.Helper()
	cr, _, err := payment.CredentialFromRequest(h)
	if err != nil {
		t.Fatal(err)
	}
	j, err := cr.JSON()
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// reencode returns ch with its request changed by edit, its id kept.
func reencode(t *testing.T, ch *payment.Challenge, edit func(*payment.ECouponRequest)) *payment.Challenge {
	t.Helper()
	r, err := ch.ECouponRequest()
	if err != nil {
		t.Fatal(err)
	}
	edit(r)
	out := *ch
	if out.Request, err = payment.EncodeRequest(r); err != nil {
		t.Fatal(err)
	}
	return &out
}

// TestPaymentSchemeRefusesForgedChallenge: a credential whose challenge
// the gate did not bind as echoed — its id forged, its price lowered or
// its vendor changed under the gate's id, or a challenge another route of
// the same secret bound with other terms (a cheaper price, another vendor)
// — is refused 402 invalid-challenge with a fresh challenge, before any
// coupon is accepted: the coupon then pays with the gate's own challenge.
func TestPaymentSchemeRefusesForgedChallenge(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 2)
	cheap := newGate(t, w, `{"backend":"memory"}`, 1) // same secret file
	other := newGateWith(t, w, `{"backend":"memory"}`, 2, func(g *Gate) { g.Vendor = "other.example" })
	c, ch := payClient(t, g, w, 0)
	first := c.payment("GET", "/premium/x", 2)

	forgedID := *ch
	forgedID.ID = strings.Repeat("A", len(ch.ID)-1) + "g"
	cheaper := paymentChallenge(t, serve(cheap, "GET", "/premium/x", acceptECoupon))
	elsewhere := paymentChallenge(t, serve(other, "GET", "/premium/x", acceptECoupon))
	mac, err := payment.NewBinder(make([]byte, 32)) // an attacker's own binding
	if err != nil {
		t.Fatal(err)
	}
	terms, _ := ch.ECouponRequest()
	terms.Price = 1
	selfBound, err := mac.Issue("news.example", payment.IntentCharge, terms, ch.ExpiresAt(), false)
	if err != nil {
		t.Fatal(err)
	}
	for name, forged := range map[string]*payment.Challenge{
		"forged id":                &forgedID,
		"price lowered":            reencode(t, ch, func(r *payment.ECouponRequest) { r.Price = 1 }),
		"other vendor":             reencode(t, ch, func(r *payment.ECouponRequest) { r.Vendor = "other.example" }),
		"other unit":               reencode(t, ch, func(r *payment.ECouponRequest) { r.Unit = "0.0001" }),
		"bound by another route":   cheaper,
		"bound for another vendor": elsewhere,
		"bound under another key":  selfBound,
		"expiry moved":             func() *payment.Challenge { x := *ch; x.Expires = "2099-01-01T00:00:00Z"; return &x }(),
		"header parameter added":   func() *payment.Challenge { x := *ch; x.Header = payment.HeaderPaymentAuthorization; return &x }(),
		"other realm":              func() *payment.Challenge { x := *ch; x.Realm = "other.example"; return &x }(),
	} {
		t.Run(name, func(t *testing.T) {
			p := wantProblem(t, serve(g, "GET", "/premium/x", asPayment(t, first, forged)), 402, "invalid-challenge", coupons.CodeBadNonce)
			if p.Detail == "" {
				t.Errorf("no detail")
			}
		})
	}
	renamed := *ch
	renamed.Method = "ecoupons"
	wantProblem(t, serve(g, "GET", "/premium/x", asPayment(t, first, &renamed)), 400, "method-unsupported", "")
	// Nothing was accepted: the coupons pay with the gate's challenge.
	if rec := serve(g, "GET", "/premium/x", asPayment(t, first, ch)); rec.Code != 200 {
		t.Fatalf("after the forgeries, the honest payment: %d %s", rec.Code, rec.Body)
	}
}

// TestPaymentSchemeRefusesExpiredChallenge: a credential answering a
// challenge past its expires (the end of its nonce's validity) is refused
// 402 payment-expired, with a fresh challenge that pays.
func TestPaymentSchemeRefusesExpiredChallenge(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g, clock, _ := receiptGate(t, w)
	c, ch := payClient(t, g, w, 0)
	h := c.payment("GET", "/premium/x", 1)
	clock.add(ch.ExpiresAt().Sub(clock.now()))
	rec := serve(g, "GET", "/premium/x", asPayment(t, h, ch))
	wantProblem(t, rec, 402, "payment-expired", coupons.CodeBadNonce)
	fresh := paymentChallenge(t, rec)
	if !fresh.ExpiresAt().After(clock.now()) {
		t.Fatalf("the fresh challenge expires at %s, now %s", fresh.Expires, clock.now())
	}
	// The open answers the old nonce, expired too: a fresh start pays.
	c, fresh = payClient(t, g, w, 0)
	if rec := serve(g, "GET", "/premium/x", asPayment(t, c.payment("GET", "/premium/x", 1), fresh)); rec.Code != 200 {
		t.Fatalf("with the fresh challenge: %d %s", rec.Code, rec.Body)
	}
}

// TestPaymentSchemeReplayIsCouponSpent: a coupon sent again over the
// Payment scheme is refused coupon_spent, as over ECoupon, as a problem
// (verification-failed) with its resume point and a hint.
func TestPaymentSchemeReplayIsCouponSpent(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	c, ch := payClient(t, g, w, 0)
	pay1 := asPayment(t, c.payment("GET", "/premium/x", 1), ch)
	pay2 := asPayment(t, c.payment("GET", "/premium/x", 1), ch)
	for _, h := range []http.Header{pay1, pay2} {
		if rec := serve(g, "GET", "/premium/x", h); rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	p := wantProblem(t, serve(g, "GET", "/premium/x", pay2), 402, "verification-failed", coupons.CodeCouponSpent)
	if p.Hint == "" {
		t.Errorf("coupon_spent without a hint: %+v", p)
	}
	// The same replay over ECoupon gives the same code.
	ec := newClient(t, nil, w.owner, 1)
	ec.nonce = gateNonce(g)
	h := ec.payment("GET", "/premium/x", 1)
	if rec := serve(g, "GET", "/premium/x", h); rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	wantRefusal(t, serve(g, "GET", "/premium/x", http.Header{"Authorization": h["Authorization"]}), 402, coupons.CodeCouponSpent)
}

// TestPaymentSchemeAndECouponSpendOnce: one coupon sent over both schemes,
// in either order, is accepted once; the open sent over one scheme serves
// the lane's payments over the other.
func TestPaymentSchemeAndECouponSpendOnce(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	c, ch := payClient(t, g, w, 0)
	// ECoupon first (with the open), then the same coupon over Payment.
	h := c.payment("GET", "/premium/x", 1)
	if rec := serve(g, "GET", "/premium/x", h); rec.Code != 200 {
		t.Fatalf("over ECoupon: %d %s", rec.Code, rec.Body)
	}
	wantProblem(t, serve(g, "GET", "/premium/x", asPayment(t, h, ch)), 402, "verification-failed", coupons.CodeCouponSpent)
	// Payment first, then the same coupon over ECoupon.
	h = c.payment("GET", "/premium/x", 1)
	if rec := serve(g, "GET", "/premium/x", asPayment(t, h, ch)); rec.Code != 200 {
		t.Fatalf("over Payment: %d %s", rec.Code, rec.Body)
	}
	wantRefusal(t, serve(g, "GET", "/premium/x", h), 402, coupons.CodeCouponSpent)
	// The next coupon over ECoupon goes on from there.
	if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("next over ECoupon: %d %s", rec.Code, rec.Body)
	}
}

// TestPaymentSchemeAcceptPayment: a client whose Accept-Payment refuses
// ecoupon (q=0) is offered no Payment challenge (only ECoupon's); one that
// names only other methods is offered it anyway (the draft lets a server
// ignore a field that accepts none of its methods); an Accept-Payment that
// does not parse is ignored.
func TestPaymentSchemeAcceptPayment(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	for _, tc := range []struct {
		accept string
		offer  bool
	}{
		{"ecoupon/charge;q=0", false},
		{"ecoupon/*;q=0, lightning/charge", false},
		{"*/*;q=0", false},
		{"ecoupon/charge", true},
		{"lightning/charge, ecoupon/charge;q=0.5", true},
		{"lightning/charge", true},
		{"!!", true},
	} {
		rec := serve(g, "GET", "/premium/x", http.Header{"Accept-Payment": {tc.accept}})
		wantProblemNoChallengeCheck(t, rec, tc.accept)
		cs, err := payment.ChallengesFromResponse(rec.Header())
		if err != nil {
			t.Fatal(err)
		}
		if got := payment.SelectECoupon(cs, payment.IntentCharge) != nil; got != tc.offer {
			t.Errorf("Accept-Payment %q: Payment challenge offered %v, want %v (%q)", tc.accept, got, tc.offer, rec.Header().Values("WWW-Authenticate"))
		}
		if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "ECoupon ") {
			t.Errorf("Accept-Payment %q: no ECoupon challenge", tc.accept)
		}
	}
}

// wantProblemNoChallengeCheck checks a 402 payment-required problem that
// may carry no Payment challenge.
func wantProblemNoChallengeCheck(t *testing.T, rec *httptest.ResponseRecorder, what string) {
	t.Helper()
	p, err := payment.ParseProblem(rec.Body.Bytes())
	if err != nil || rec.Code != 402 || p.Code != coupons.CodePaymentRequired || rec.Header().Get("Content-Type") != payment.ContentTypeProblem ||
		rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("%s: %d %v %s", what, rec.Code, rec.Header(), rec.Body)
	}
}

// TestPaymentSchemeMalformedCredential: credentials that do not decode
// are refused with a problem, never a 500 nor a panic: 402
// malformed-credential with fresh challenges (docs/payment-method-ecoupon.md
// §6: the draft answers a bad credential with a new challenge), 400
// method-unsupported for another method.
func TestPaymentSchemeMalformedCredential(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	c, ch := payClient(t, g, w, 0)
	ecGood := c.payment("GET", "/premium/x", 1)
	good := asPayment(t, ecGood, ch)
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	chJSON, _ := json.Marshal(ch)
	withPayload := func(payload string) string {
		return "Payment " + b64(`{"challenge":`+string(chJSON)+`,"payload":`+payload+`}`)
	}
	other := *ch
	other.Method = "lightning"
	otherJSON, _ := json.Marshal(&other)
	for name, tc := range map[string]struct {
		h      http.Header
		status int
		typ    string
	}{
		"not base64":           {http.Header{"Authorization": {"Payment !!!"}}, 402, "malformed-credential"},
		"padded base64":        {http.Header{"Authorization": {"Payment " + b64("{}") + "=="}}, 402, "malformed-credential"},
		"not JSON":             {http.Header{"Authorization": {"Payment " + b64("challenge")}}, 402, "malformed-credential"},
		"empty object":         {http.Header{"Authorization": {"Payment " + b64("{}")}}, 402, "malformed-credential"},
		"empty":                {http.Header{"Authorization": {"Payment  "}}, 402, "malformed-credential"},
		"too large":            {http.Header{"Authorization": {"Payment " + strings.Repeat("A", payment.MaxCredentialLen)}}, 402, "malformed-credential"},
		"payload not object":   {http.Header{"Authorization": {withPayload(`[1]`)}}, 402, "malformed-credential"},
		"index 0":              {http.Header{"Authorization": {withPayload(`{"lane":"` + c.lane.String() + `","index":0,"value":"` + b64(strings.Repeat("x", 32)) + `"}`)}}, 402, "malformed-credential"},
		"short value":          {http.Header{"Authorization": {withPayload(`{"lane":"` + c.lane.String() + `","index":1,"value":"AAAA"}`)}}, 402, "malformed-credential"},
		"bad lane":             {http.Header{"Authorization": {withPayload(`{"lane":"x","index":1,"value":"AAAA"}`)}}, 402, "malformed-credential"},
		"open not base64":      {http.Header{"Authorization": {withPayload(`{"lane":"` + c.lane.String() + `","index":1,"value":"` + b64(strings.Repeat("x", 32)) + `","open":"!!"}`)}}, 402, "malformed-credential"},
		"two credentials":      {http.Header{"Authorization": good["Authorization"], "Payment-Authorization": good["Authorization"]}, 402, "malformed-credential"},
		"another method":       {http.Header{"Authorization": {"Payment " + b64(`{"challenge":`+string(otherJSON)+`,"payload":{}}`)}}, 400, "method-unsupported"},
		"open not a document":  {asPayment(t, http.Header{"Authorization": ecGood["Authorization"], keyOpen: {"(not an open"}}, ch), 402, "malformed-credential"},
		"Payment-Auth garbage": {http.Header{"Payment-Authorization": {"%%%"}}, 402, "malformed-credential"},
	} {
		t.Run(name, func(t *testing.T) {
			var rec *httptest.ResponseRecorder
			func() {
				defer func() {
					if v := recover(); v != nil {
						t.Fatalf("panic: %v", v)
					}
				}()
				rec = serve(g, "GET", "/premium/x", tc.h)
			}()
			wantProblem(t, rec, tc.status, tc.typ, "")
		})
	}
	// None of it spent the coupon.
	if rec := serve(g, "GET", "/premium/x", good); rec.Code != 200 {
		t.Fatalf("the good credential after the bad ones: %d %s", rec.Code, rec.Body)
	}
}

// TestPaymentSchemeBothHeaders: a credential pays in Authorization, in
// Payment-Authorization (with or without the scheme name), and beside an
// Authorization of another scheme (the client's login), whose 402 asks for
// the credential in Payment-Authorization.
func TestPaymentSchemeBothHeaders(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	c, ch := payClient(t, g, w, 0)
	tok := func(h http.Header) string { return h.Get("Authorization") }
	steps := []func(string) http.Header{
		func(v string) http.Header { return http.Header{"Authorization": {v}} },
		func(v string) http.Header { return http.Header{"Payment-Authorization": {v}} },
		func(v string) http.Header {
			return http.Header{"Payment-Authorization": {strings.TrimPrefix(v, "Payment ")}}
		},
		func(v string) http.Header {
			return http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}, "Payment-Authorization": {v}}
		},
	}
	for k, mk := range steps {
		h := asPayment(t, c.payment("GET", "/premium/x", 1), ch)
		if rec := serve(g, "GET", "/premium/x", mk(tok(h))); rec.Code != 200 || rec.Header().Get(payment.HeaderReceipt) == "" {
			t.Fatalf("header form %d: %d %v %s", k, rec.Code, rec.Header(), rec.Body)
		}
	}
	rec := serve(g, "GET", "/premium/x", http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}, "Accept-Payment": {"ecoupon/charge"}})
	if got := paymentChallenge(t, rec); got.CredentialHeader() != payment.HeaderPaymentAuthorization {
		t.Errorf("a client with its own Authorization is asked for the credential in %s", got.CredentialHeader())
	}
	// The credential in the header the challenge names pays.
	ch2 := paymentChallenge(t, rec)
	h := asPayment(t, c.payment("GET", "/premium/x", 1), ch2)
	h.Set("Authorization", "Basic YWxpY2U6c2VjcmV0")
	if rec := serve(g, "GET", "/premium/x", h); rec.Code != 200 {
		t.Fatalf("credential in Payment-Authorization beside Basic: %d %s", rec.Code, rec.Body)
	}
}

// TestPaymentSchemeRefusalsAreProblems: refusals that are not about the
// credential keep their status under about:blank (a body without its
// Content-Digest: 400), and an underpayment is 402 payment-insufficient.
func TestPaymentSchemeRefusalsAreProblems(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 2)
	c, ch := payClient(t, g, w, 0)
	if rec := serve(g, "GET", "/premium/x", asPayment(t, c.payment("GET", "/premium/x", 2), ch)); rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	wantProblem(t, serve(g, "GET", "/premium/x", asPayment(t, c.payment("GET", "/premium/x", 1), ch)), 402, "payment-insufficient", coupons.CodeInsufficientPayment)

	h := asPayment(t, c.payment("POST", "/premium/x", 1), ch)
	r := httptest.NewRequest("POST", "http://localhost:9080/premium/x", strings.NewReader("a body"))
	for k, v := range h {
		r.Header[k] = v
	}
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, r, okHandler); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, rec, 400, payment.ProblemAboutBlank, coupons.CodeContentDigestRequired)
}

// benchSteadyPayment is benchSteady over the Payment scheme: one coupon
// per request on lane 0 of a device, each payment a credential answering
// the gate's challenge.
func benchSteadyPayment(b *testing.B, w *world, g *Gate) {
	c := newClient(b, nil, benchDevice(b, w), 0)
	ch := paymentChallenge(b, serve(g, "GET", "/premium/x", acceptECoupon))
	terms, err := ch.ECouponRequest()
	if err != nil {
		b.Fatal(err)
	}
	c.nonce = terms.Nonce
	if rec := serve(g, "GET", "/premium/x", asPayment(b, c.payment("GET", "/premium/x", 1), ch)); rec.Code != 200 {
		b.Fatalf("open: %d %s", rec.Code, rec.Body)
	}
	const batch = 256 // as benchSteady's
	reqs := make([]*http.Request, batch)
	tmpl := httptest.NewRequest("GET", "http://localhost:9080/premium/x", nil)
	fill := func() {
		for k := range reqs {
			if c.cursor.Remaining() == 0 {
				reqs[k] = reqs[0]
				continue
			}
			reqs[k] = tmpl.Clone(tmpl.Context())
			reqs[k].Header.Set("Authorization", asPayment(b, c.payment("GET", "/premium/x", 1), ch).Get("Authorization"))
		}
	}
	fill()
	rw := new(wireWriter)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%batch == 0 {
			b.StopTimer()
			fill()
			b.StartTimer()
		}
		rw.reset()
		if err := g.ServeHTTP(rw, reqs[i%batch], okHandler); err != nil || rw.status != http.StatusOK {
			b.Fatalf("payment %d: %v %d %s", i, err, rw.status, rw.buf.Bytes())
		}
	}
}

// TestPaymentSchemeReceiptStaysPrivate: an upstream that marks its
// response public cannot make a response paid in the Payment scheme
// cacheable by shared caches (a cache would serve it to others unpaid):
// it keeps Payment-Receipt and Cache-Control: private, its own directives
// but public kept. A client that sends Accept-Payment and pays with
// Authorization: ECoupon is answered in the ECoupon scheme.
func TestPaymentSchemeReceiptStaysPrivate(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	c, ch := payClient(t, g, w, 0)
	public := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Del(payment.HeaderReceipt)
		_, err := w.Write([]byte("paid content"))
		return err
	})
	r := httptest.NewRequest("GET", "http://localhost:9080/premium/x", nil)
	for k, v := range asPayment(t, c.payment("GET", "/premium/x", 1), ch) {
		r.Header[k] = v
	}
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, r, public); err != nil || rec.Code != 200 {
		t.Fatalf("%v %d %s", err, rec.Code, rec.Body)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "max-age=3600, private" {
		t.Errorf("Cache-Control %q, want max-age=3600, private", cc)
	}
	if rec.Header().Get(payment.HeaderReceipt) == "" {
		t.Error("the upstream removed Payment-Receipt")
	}
	h := c.payment("GET", "/premium/x", 1)
	h.Set("Accept-Payment", "ecoupon/charge")
	if rec := serve(g, "GET", "/premium/x", h); rec.Code != 200 || rec.Header().Get(payment.HeaderReceipt) != "" {
		t.Fatalf("ECoupon payment with Accept-Payment: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	// Its refusal is the ECoupon scheme's, with both challenges.
	rec = serve(g, "GET", "/premium/x", h)
	wantRefusal(t, rec, 402, coupons.CodeCouponSpent)
	paymentChallenge(t, rec)
}

// TestPaymentSchemeProvisionRefusesUnbindableRealm: a vendor name that
// would make the challenge binding ambiguous ('|' separates its slots) is
// refused by Validate (and newPaymentScheme), not at every 402.
func TestPaymentSchemeProvisionRefusesUnbindableRealm(t *testing.T) {
	c := &challenge{Realm: "news|example", Vendor: "news|example", Price: 1, Unit: "0.001", Currency: "EUR"}
	if _, err := newPaymentScheme(make([]byte, 32), c, time.Minute, zap.NewNop()); err == nil {
		t.Fatal("a realm with '|' was accepted")
	}
	c.Realm, c.Vendor = "news.example", "news.example"
	if _, err := newPaymentScheme(make([]byte, 32), c, time.Minute, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	// Validate refuses such a vendor before anything is opened.
	g := &Gate{Vendor: "news|example", BrokerKeys: []string{"broker.pub"}}
	g.defaults()
	if err := g.Validate(); err == nil || !strings.Contains(err.Error(), "vendor") {
		t.Fatalf("vendor news|example: %v", err)
	}
}

// TestPaymentSchemeThroughCaddy: a Payment client pays through a real
// Caddy in front of reverse_proxy, its lane open in canonical form (binary
// bytes no header could carry) inside the credential: the upstream gets
// the request as sent (the credential, no ECoupon-Open), the client gets
// the upstream's answer with a Payment-Receipt; an upstream 5xx credits
// the price back to the lane, as over ECoupon.
func TestPaymentSchemeThroughCaddy(t *testing.T) {
	w := newWorld(t, "news.example", time.Now().Add(24*time.Hour))
	var seenOpen, seenAuth atomic.Value
	upstream := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		seenOpen.Store(r.Header.Get(HeaderOpen))
		seenAuth.Store(r.Header.Get("Authorization"))
		if r.URL.Path == "/premium/fail" {
			http.Error(rw, "down", 503)
			return
		}
		_, _ = rw.Write([]byte("upstream content"))
	}))
	defer upstream.Close()
	tc := caddytest.NewTester(t)
	tc.InitServer(strings.Replace(testCaddyfile(w, ""), `respond /premium/fail "upstream down" 503
	respond /premium/* "premium content" 200`, "reverse_proxy /premium/* "+strings.TrimPrefix(upstream.URL, "http://"), 1), "caddyfile")

	resp, body := do(t, tc, "GET", "/premium/a", acceptECoupon)
	if resp.StatusCode != 402 || resp.Header.Get("Content-Type") != payment.ContentTypeProblem || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("402: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	cs, err := payment.ChallengesFromResponse(resp.Header)
	if err != nil {
		t.Fatal(err)
	}
	ch := payment.SelectECoupon(cs, payment.IntentCharge)
	terms, err := ch.ECouponRequest()
	if err != nil || terms.Price != 2 {
		t.Fatalf("terms %+v: %v", terms, err)
	}
	c := newClient(t, tc, w.owner, 0)
	c.nonce = terms.Nonce
	canonical := func(h http.Header) http.Header {
		if doc := h.Get(HeaderOpen); doc != "" {
			x, err := spki.DefaultLimits.Parse([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			h.Set(HeaderOpen, string(spki.Canonical(x)))
		}
		return h
	}
	for k := 0; k < 3; k++ {
		h := asPayment(t, canonical(c.payment("GET", "/premium/a", 2)), ch)
		resp, body := do(t, tc, "GET", "/premium/a", http.Header{"Payment-Authorization": h["Authorization"]})
		if resp.StatusCode != 200 || body != "upstream content" || resp.Header.Get(payment.HeaderReceipt) == "" {
			t.Fatalf("payment %d: %d %v %s", k, resp.StatusCode, resp.Header, body)
		}
		if seenOpen.Load() != "" {
			t.Errorf("payment %d: the upstream got an ECoupon-Open the client did not send", k)
		}
	}
	h := asPayment(t, c.payment("GET", "/premium/fail", 2), ch)
	if resp, _ := do(t, tc, "GET", "/premium/fail", h); resp.StatusCode != 503 {
		t.Fatalf("failing upstream: %d", resp.StatusCode)
	}
	if got := seenAuth.Load(); got != h.Get("Authorization") {
		t.Errorf("the upstream got Authorization %q, the client sent the credential", got)
	}
	h = asPayment(t, c.payment("GET", "/premium/c", 1), ch)
	if resp, body := do(t, tc, "GET", "/premium/c", h); resp.StatusCode != 200 || resp.Header.Get(HeaderCredit) != "1" {
		t.Errorf("after the refund, one coupon pays: %d %s credit %q", resp.StatusCode, body, resp.Header.Get(HeaderCredit))
	}
}

// FuzzGatePaymentScheme: any credential JSON (sent base64url-encoded in
// Authorization: Payment or Payment-Authorization) and any Accept-Payment
// is answered with a 4xx problem (or served, when it really pays), never
// a 5xx nor a panic.
func FuzzGatePaymentScheme(f *testing.F) {
	w := newWorld(f, "news.example", t0Later())
	g := newGate(f, w, `{"backend":"memory"}`, 1)
	c, ch := payClient(f, g, w, 0)
	first := mustCredentialJSON(f, asPayment(f, c.payment("GET", "/premium/x", 1), ch))
	next := mustCredentialJSON(f, asPayment(f, c.payment("GET", "/premium/x", 1), ch))
	f.Add(first, "ecoupon/charge", false)
	f.Add(next, "", true)
	f.Add([]byte(`{"challenge":{},"payload":{}}`), "*/*;q=0", false)
	f.Fuzz(func(t *testing.T, credential []byte, accept string, paymentAuthorization bool) {
		hdr := http.Header{}
		v := "Payment " + base64.RawURLEncoding.EncodeToString(credential)
		if paymentAuthorization {
			hdr.Set("Payment-Authorization", v)
		} else {
			hdr.Set("Authorization", v)
		}
		if accept != "" {
			hdr.Set("Accept-Payment", accept)
		}
		rec := serve(g, "GET", "/premium/x", hdr)
		if rec.Code >= 500 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		if rec.Code != 200 {
			if _, err := payment.ParseProblem(rec.Body.Bytes()); err != nil || rec.Header().Get("Content-Type") != payment.ContentTypeProblem {
				t.Fatalf("%d %s: not a problem (%v)", rec.Code, rec.Body, err)
			}
		}
	})
}
