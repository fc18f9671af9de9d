package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/payment"
	"github.com/ecoupons/ecoupons/wallet"
)

// schemeRecorder records the requests a wallet sends and the gate's
// answers, to tell which scheme each payment used.
type schemeRecorder struct {
	base http.RoundTripper
	// strip removes the gate's Payment challenges from its 402s (a gate
	// that speaks only ECoupon).
	strip bool
	mu    sync.Mutex
	sent  []http.Header
	got   []*http.Response
}

func (s *schemeRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.sent = append(s.sent, r.Header.Clone())
	s.mu.Unlock()
	resp, err := s.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if s.strip {
		var kept []string
		for _, v := range resp.Header.Values("WWW-Authenticate") {
			if !strings.HasPrefix(v, payment.Scheme+" ") {
				kept = append(kept, v)
			}
		}
		resp.Header["Www-Authenticate"] = kept
	}
	s.mu.Lock()
	s.got = append(s.got, resp)
	s.mu.Unlock()
	return resp, nil
}

// paid returns the requests that carried a payment, by scheme.
func (s *schemeRecorder) paid() (byPayment, byECoupon, opens int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.sent {
		a := h.Get("Authorization")
		switch {
		case strings.HasPrefix(a, payment.Scheme+" "), h.Get(payment.HeaderPaymentAuthorization) != "":
			byPayment++
		case strings.HasPrefix(a, coupons.Scheme+" "):
			byECoupon++
		}
		if h.Get("ECoupon-Open") != "" {
			opens++
		}
	}
	return
}

// TestWalletPaysWithPaymentScheme: against a real gate, which offers both
// schemes, the wallet sends Accept-Payment, pays each request once with a
// Payment credential (the lane's open inside it, no ECoupon-Open), in
// parallel on its lanes, records the TESLA receipt each Payment-Receipt
// carries, and handles a refusal in problem details: a payment lost in
// flight leaves the lane unknown to the gate (lane_not_open), and the
// wallet opens it again on the fresh Payment challenge.
func TestWalletPaysWithPaymentScheme(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g, _, _ := receiptGate(t, w)
	srv := gateServer(t, g)
	rec := &schemeRecorder{base: http.DefaultTransport}
	tr, err := wallet.NewTransport(w.owner)
	if err != nil {
		t.Fatal(err)
	}
	tr.Base = rec
	tr.Receipts = wallet.OpenReceiptLog(t.TempDir())
	c := &http.Client{Transport: tr}
	get := func() error {
		resp, err := c.Get(srv.URL + "/premium/a")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "paid content" {
			return errors.New(resp.Status + ": " + string(body))
		}
		if resp.Header.Get(payment.HeaderReceipt) == "" {
			return errors.New("no Payment-Receipt")
		}
		return nil
	}
	var wg sync.WaitGroup
	for k := 0; k < 4; k++ { // 4 lanes, 4 parallel requests
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := get(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for k := 0; k < 2; k++ {
		if err := get(); err != nil {
			t.Fatal(err)
		}
	}
	const requests = 6
	byPayment, byECoupon, opens := rec.paid()
	if byPayment != requests || byECoupon != 0 || opens != 0 || tr.Spent() != requests {
		t.Fatalf("%d requests: %d paid with Payment, %d with ECoupon, %d ECoupon-Open, %d coupons spent; want each paid once with Payment",
			requests, byPayment, byECoupon, opens, tr.Spent())
	}
	rec.mu.Lock()
	opened := 0
	for i, h := range rec.sent {
		if h.Get(payment.HeaderAcceptPayment) != "ecoupon/charge, ecoupon/session" {
			t.Errorf("request %d: Accept-Payment %q", i, h.Get(payment.HeaderAcceptPayment))
		}
		cr, _, err := payment.CredentialFromRequest(h)
		if err != nil {
			continue // the unpaid first request
		}
		if _, open, err := cr.ECoupon(); err != nil {
			t.Errorf("request %d: credential payload: %v", i, err)
		} else if open != nil {
			opened++ // a lane's first use carries its open
		}
	}
	var receipts []string
	for _, resp := range rec.got {
		if v := resp.Header.Get(payment.HeaderReceipt); v != "" {
			r, err := payment.ParseReceipt(v)
			if err != nil {
				t.Fatal(err)
			}
			tr, err := r.TESLA()
			if err != nil || tr == nil {
				t.Fatalf("Payment-Receipt without a TESLA receipt: %v", err)
			}
			receipts = append(receipts, tr.Header())
		}
	}
	rec.mu.Unlock()
	if opened != 4 {
		t.Errorf("%d credentials carried a lane open, want 4 (one per lane's first use)", opened)
	}
	recs, err := tr.Receipts.Records()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != requests || len(receipts) != requests {
		t.Fatalf("%d receipts recorded, %d received, want %d", len(recs), len(receipts), requests)
	}
	for _, r := range recs {
		if !containsString(receipts, r.Header) || r.Paid != 1 || r.Vendor != "news.example" {
			t.Errorf("recorded receipt %+v is not a Payment-Receipt's TESLA receipt of a 1-coupon payment", r)
		}
	}

	// A payment lost in flight: the open it carried never reached the
	// gate, whose refusal of the lane's next payment is a problem
	// (lane_not_open); the wallet opens the lane again and pays once more.
	// A book of its own (two transports must not share a lane); the
	// gate's broker key is the same.
	tr2, err := wallet.NewTransport(newWorld(t, "news.example", t0Later()).owner, 3)
	if err != nil {
		t.Fatal(err)
	}
	lost := &schemeRecorder{base: failPaid{http.DefaultTransport}}
	tr2.Base = lost
	c2 := &http.Client{Transport: tr2}
	if _, err := c2.Get(srv.URL + "/premium/b"); err == nil {
		t.Fatal("the failing network did not fail")
	}
	rec2 := &schemeRecorder{base: http.DefaultTransport}
	tr2.Base = rec2
	resp, err := c2.Get(srv.URL + "/premium/b")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("after the lost open: %s", resp.Status)
	}
	if pay, ec, _ := rec2.paid(); pay != 2 || ec != 0 {
		t.Fatalf("the re-open: %d Payment credentials, %d ECoupon payments", pay, ec)
	}
	rec2.mu.Lock()
	defer rec2.mu.Unlock()
	if len(rec2.got) != 3 || rec2.got[1].StatusCode != 402 || rec2.got[1].Header.Get("Content-Type") != payment.ContentTypeProblem {
		t.Fatalf("want 402, 402 lane_not_open as a problem, 200; got %d responses", len(rec2.got))
	}
	cr, _, err := payment.CredentialFromRequest(rec2.sent[2])
	if err != nil {
		t.Fatal(err)
	}
	if _, open, _ := cr.ECoupon(); open == nil {
		t.Fatal("the lane was not opened again in the credential")
	}
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestWalletFallsBackToECouponWhenNoPaymentChallenge: a gate whose 402s
// carry only the ECoupon challenge (the Payment one stripped on the way)
// is paid in the ECoupon scheme, the lane's open in ECoupon-Open; a
// wallet forced to the Payment scheme does not pay it.
func TestWalletFallsBackToECouponWhenNoPaymentChallenge(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 2)
	srv := gateServer(t, g)
	rec := &schemeRecorder{base: http.DefaultTransport, strip: true}
	tr, err := wallet.NewTransport(w.owner, 0)
	if err != nil {
		t.Fatal(err)
	}
	tr.Base = rec
	for k := 0; k < 2; k++ {
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/premium/a")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %s", k, resp.Status)
		}
	}
	if pay, ec, opens := rec.paid(); pay != 0 || ec != 2 || opens != 1 || tr.Spent() != 4 {
		t.Fatalf("%d Payment, %d ECoupon payments, %d opens, %d spent: want 0, 2, 1, 4", pay, ec, opens, tr.Spent())
	}
	forced, _ := wallet.NewTransport(w.owner, 1)
	forced.Base, forced.Scheme = &schemeRecorder{base: http.DefaultTransport, strip: true}, wallet.SchemePayment
	resp, err := (&http.Client{Transport: forced}).Get(srv.URL + "/premium/a")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 402 || forced.Spent() != 0 {
		t.Fatalf("forced to the Payment scheme at an ECoupon-only gate: %s, spent %d", resp.Status, forced.Spent())
	}
}

// TestWalletRefusesPaymentChallengeForAnotherVendor: the Payment
// challenge of a gate for another vendor than the book's is refused before
// any coupon leaves.
func TestWalletRefusesPaymentChallengeForAnotherVendor(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 2)
	srv := gateServer(t, g)
	other := newWorld(t, "other.example", t0Later())
	rec := &schemeRecorder{base: http.DefaultTransport}
	tr, _ := wallet.NewTransport(other.owner)
	tr.Base, tr.Scheme = rec, wallet.SchemePayment
	if _, err := (&http.Client{Transport: tr}).Get(srv.URL + "/premium/a"); !errors.Is(err, wallet.ErrWrongVendor) {
		t.Fatalf("a Payment challenge from another vendor: %v", err)
	}
	if pay, ec, _ := rec.paid(); pay+ec != 0 || tr.Spent() != 0 {
		t.Fatalf("paid %d times, spent %d", pay+ec, tr.Spent())
	}
}

// TestWalletResumesCouponSpentOverPayment: a real gate (bolt store, its
// default lease) refuses a coupon it has already taken as coupon_spent in
// problem details whose resume says where the lane goes on; the wallet,
// whose state went back two payments (restored from a copy), skips to
// there within the lease the Payment challenge advertises and pays again,
// over the Payment scheme throughout.
func TestWalletResumesCouponSpentOverPayment(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, fmt.Sprintf(`{"backend":"bolt","path":%q}`, filepath.Join(t.TempDir(), "spent.db")), 1)
	srv := gateServer(t, g)
	state := filepath.Join(t.TempDir(), "lanes.json")
	get := func(tr *wallet.Transport) (*http.Response, error) {
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/premium/a")
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	tr, err := wallet.OpenTransport(w.owner, state, 0)
	if err != nil {
		t.Fatal(err)
	}
	var saved []byte
	for k := 0; k < 3; k++ {
		if resp, err := get(tr); err != nil || resp.StatusCode != 200 {
			t.Fatalf("payment %d: %v %v", k, resp, err)
		}
		if k == 0 {
			if saved, err = os.ReadFile(state); err != nil {
				t.Fatal(err)
			}
		}
	}
	tr.Close()
	if err := os.WriteFile(state, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err = wallet.OpenTransport(w.owner, state, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	rec := &schemeRecorder{base: http.DefaultTransport}
	tr.Base = rec
	resp, err := get(tr)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the rollback: %v %v", resp, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) != 3 || rec.got[1].Header.Get("Content-Type") != payment.ContentTypeProblem {
		t.Fatalf("want 402, 402 coupon_spent as a problem, 200: %d responses", len(rec.got))
	}
	var indexes []uint32
	for _, h := range rec.sent[1:] {
		cr, _, err := payment.CredentialFromRequest(h)
		if err != nil {
			t.Fatal(err)
		}
		p, _, err := cr.ECoupon()
		if err != nil {
			t.Fatal(err)
		}
		indexes = append(indexes, p.Index)
	}
	if len(indexes) != 2 || indexes[0] != 2 || indexes[1] != 4 {
		t.Fatalf("coupons paid %v, want [2 4] (2 spent already, the lane resumes at 4)", indexes)
	}
}
