package payment_test

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/payment"
)

// The whole exchange: the gate's 402, the wallet's credential, the gate's
// checks and its receipt. The payment itself is verified by the gate as
// for the ECoupon scheme, between VerifyECoupon and SetReceipt.
func Example() {
	now := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	secret := sha256.Sum256([]byte("example secret"))
	binder, _ := payment.NewBinder(secret[:])
	route := &payment.ECouponRequest{Vendor: "news.example", Price: 2, Unit: "0.001", Currency: "EUR", Nonce: "nonce-1"}

	// Gate: no credential, so 402 with a challenge.
	rec := httptest.NewRecorder()
	c, _ := binder.Issue("news.example", payment.IntentCharge, route, now.Add(5*time.Minute), false)
	payment.WriteChallenge(rec, payment.NewProblem(coupons.CodePaymentRequired, "this route costs 2 coupons"), c)
	fmt.Println(rec.Code, rec.Header().Get("Cache-Control"))

	// Wallet: pick the ecoupon challenge, read its terms, pay.
	cs, _ := payment.ChallengesFromResponse(rec.Header())
	chosen := payment.SelectECoupon(cs, payment.IntentCharge)
	terms, _ := chosen.ECouponRequest()
	fmt.Println(terms.Price, "coupons of", terms.Unit, terms.Currency, "to", terms.Vendor)
	p := &coupons.Payment{Lane: coupons.LaneID{Lane: 1}, Index: 2}
	cr, _ := payment.NewCredential(chosen, p, nil)
	req := httptest.NewRequest("GET", "https://news.example/premium/a", nil)
	_ = cr.SetHeader(req.Header)

	// Gate: read and check the credential, then verify the payment.
	got, field, _ := payment.CredentialFromRequest(req.Header)
	echoed, paid, open, err := binder.VerifyECoupon(got, route, now.Add(time.Second))
	fmt.Println(field, echoed.Nonce, paid.Index, open == nil, err)

	// Gate: served, with a receipt.
	h := http.Header{}
	payment.SetReceipt(h, payment.NewReceipt(paid.Lane, paid.Index, nil, now.Add(time.Second)))
	r, _ := payment.ParseReceipt(h.Get(payment.HeaderReceipt))
	fmt.Println(h.Get("Cache-Control"), r.Status, r.Index)

	// Output:
	// 402 no-store
	// 2 coupons of 0.001 EUR to news.example
	// Authorization nonce-1 2 true <nil>
	// private success 2
}
