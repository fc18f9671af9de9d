package wallet

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/internal/testutil"
	"github.com/ecoupons/ecoupons/spki"
)

// fakeGate answers 402 to unpaid requests and 200 to paid ones, for any
// host, counting the paid ones.
type fakeGate struct{ paid []string }

func (f *fakeGate) RoundTrip(r *http.Request) (*http.Response, error) {
	resp := &http.Response{Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}")), Request: r}
	if r.Header.Get("Authorization") != "" {
		f.paid = append(f.paid, r.URL.Host)
		resp.StatusCode = 200
		return resp, nil
	}
	resp.StatusCode = 402
	resp.Header.Set("WWW-Authenticate", `ECoupon realm="news.example", vendor="news.example", price=1, unit="0.001", currency="EUR", nonce="AAAAAAAAAAAAAAAAAAAAAA"`)
	return resp, nil
}

// newTestTransport is a transport over a fresh book of alice's for
// news.example (2 lanes of 64 coupons of 0.001 EUR).
func newTestTransport(t testing.TB) *Transport {
	owner := testutil.Key("alice")
	op, _ := spki.NewPublicKey(owner.Public())
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: op.Hash(), Owner: op.Hash(),
		Lanes: 2, Length: 64, Currency: "EUR", Unit: 1_000_000, NotAfter: time.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := bk.Sign(owner)
	user, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(op), Subject: spki.KeyPrincipal(op), Tag: coupons.UserTag("a", "EUR")}, owner)
	if err != nil {
		t.Fatal(err)
	}
	h, err := delegation.NewOwner(sb, user, sec, anchors, owner)
	if err != nil {
		t.Fatal(err)
	}
	if h.Funding, err = coupons.SignFunding(sb.Book, owner, time.Time{}); err != nil {
		t.Fatal(err)
	}
	tr, err := NewTransport(h)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestTransportPaysOnlyTheVendorsHosts: a 402 naming the book's vendor is
// paid for a request to the vendor's name, its subdomains, loopback and
// the hosts listed in Hosts, and refused (nothing revealed) elsewhere.
func TestTransportPaysOnlyTheVendorsHosts(t *testing.T) {
	tr := newTestTransport(t)
	gate := &fakeGate{}
	tr.Base = gate
	get := func(url string) error {
		resp, err := (&http.Client{Transport: tr}).Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	for _, u := range []string{"http://evil.example/x", "http://news.example.evil.example/x", "http://example/x"} {
		if err := get(u); !errors.Is(err, ErrWrongVendor) {
			t.Errorf("%s: %v, want ErrWrongVendor", u, err)
		}
	}
	// A Host header naming the vendor does not make another host the vendor.
	req, _ := http.NewRequest("GET", "http://evil.example/x", nil)
	req.Host = "news.example"
	if _, err := (&http.Client{Transport: tr}).Do(req); !errors.Is(err, ErrWrongVendor) {
		t.Errorf("evil.example with Host: news.example: %v", err)
	}
	if tr.Spent() != 0 || len(gate.paid) != 0 {
		t.Fatalf("coupons revealed to other hosts: %d, %v", tr.Spent(), gate.paid)
	}
	for _, u := range []string{"http://news.example/x", "https://www.news.example:8443/x", "http://127.0.0.1:8480/x", "http://[::1]/x", "http://localhost/x"} {
		if err := get(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	tr.Hosts = []string{"CDN.example.net."}
	if err := get("http://CDN.example.net/x"); err != nil {
		t.Errorf("a listed host: %v", err)
	}
	if len(gate.paid) != 6 {
		t.Errorf("paid %v", gate.paid)
	}
}

// raisingGate answers every payment with lane_not_open and a challenge
// asking 500 coupons.
type raisingGate struct{ paid int }

func (f *raisingGate) RoundTrip(r *http.Request) (*http.Response, error) {
	resp := &http.Response{StatusCode: 402, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(`{"error":"lane_not_open"}`)), Request: r}
	price := 1
	if r.Header.Get("Authorization") != "" {
		f.paid++
		price = 500
	}
	resp.Header.Set("WWW-Authenticate", fmt.Sprintf(`ECoupon realm="news.example", vendor="news.example", price=%d, unit="0.001", currency="EUR", nonce="AAAAAAAAAAAAAAAAAAAAAA"`, price))
	return resp, nil
}

// TestTransportChecksRetryChallenges: the challenge a gate sends with a
// refusal passes the same checks as the first: a price raised past the
// limit on the retry is refused.
func TestTransportChecksRetryChallenges(t *testing.T) {
	tr := newTestTransport(t)
	gate := &raisingGate{}
	tr.Base = gate
	resp, err := (&http.Client{Transport: tr}).Get("http://news.example/x")
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, ErrPriceLimit) || gate.paid != 1 || tr.Spent() != 1 {
		t.Fatalf("retry asking 500 coupons: %v, %d paid requests, %d spent", err, gate.paid, tr.Spent())
	}
}
