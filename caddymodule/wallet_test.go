package caddymodule

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/wallet"
)

// gateServer serves g in front of okHandler over real HTTP.
func gateServer(t *testing.T, g *Gate) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			if r.URL.Path == "/premium/fail" {
				w.WriteHeader(502)
				return nil
			}
			return okHandler(w, r)
		})); err != nil {
			http.Error(w, err.Error(), 500)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestWalletTransport: the wallet answers 402s, pays on a lane per
// in-flight request, refuses prices above its limit and challenges from
// another vendor, and uses the credit a failed upstream left.
func TestWalletTransport(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 2)
	srv := gateServer(t, g)
	tr, err := wallet.NewTransport(w.owner)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for k := 0; k < 4; k++ { // 4 lanes, 4 parallel requests
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(srv.URL + "/premium/a")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[200] != 4 || tr.Spent() != 8 {
		t.Fatalf("parallel requests: %v, spent %d", codes, tr.Spent())
	}
	// A failed upstream leaves the price as credit; the next request on
	// that lane pays only one coupon (the minimum), using the credit.
	resp, err := c.Get(srv.URL + "/premium/fail")
	if err != nil || resp.StatusCode != 502 {
		t.Fatalf("failing upstream: %v %v", err, resp)
	}
	resp.Body.Close()
	before := tr.Spent()
	resp, err = c.Get(srv.URL + "/premium/a")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the refund: %v %v", err, resp)
	}
	resp.Body.Close()
	if tr.Spent()-before > 2 {
		t.Errorf("spent %d coupons after a refund", tr.Spent()-before)
	}
	// Limits.
	tr2, _ := wallet.NewTransport(w.owner, 3)
	tr2.MaxPrice = 1
	if _, err := (&http.Client{Transport: tr2}).Get(srv.URL + "/premium/a"); !errors.Is(err, wallet.ErrPriceLimit) {
		t.Errorf("price above the limit: %v", err)
	}
	other := newWorld(t, "other.example", t0Later())
	tr3, _ := wallet.NewTransport(other.owner)
	if _, err := (&http.Client{Transport: tr3}).Get(srv.URL + "/premium/a"); !errors.Is(err, wallet.ErrWrongVendor) {
		t.Errorf("challenge from another vendor: %v", err)
	}
}

type failPaid struct{ base http.RoundTripper }

func (f failPaid) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") != "" {
		return nil, errors.New("network down")
	}
	return f.base.RoundTrip(r)
}

// TestWalletState: the wallet's lanes survive a restart (no coupon is
// revealed twice), the state is locked against a second process, and a
// payment lost in flight after the state was saved only skips coupons.
func TestWalletState(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	srv := gateServer(t, g)
	path := filepath.Join(t.TempDir(), "wallet", "lanes.json")
	get := func(tr http.RoundTripper) (int, error) {
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/premium/a")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	tr, err := wallet.OpenTransport(w.owner, path, 0)
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 3; k++ {
		if code, err := get(tr); code != 200 {
			t.Fatalf("payment %d: %d %v", k, code, err)
		}
	}
	wallet.SetLockWait(100 * time.Millisecond)
	if _, err := wallet.OpenTransport(w.owner, path, 0); !errors.Is(err, wallet.ErrLocked) {
		t.Fatalf("second process on the same state: %v", err)
	}
	// A payment lost in flight: the state moved on before it was sent.
	tr.Base = failPaid{http.DefaultTransport}
	if _, err := get(tr); err == nil {
		t.Fatal("the failing network did not fail")
	}
	tr.Close()

	tr2, err := wallet.OpenTransport(w.owner, path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	for k := 0; k < 3; k++ {
		if code, err := get(tr2); code != 200 {
			t.Fatalf("payment %d after the restart: %d %v (a coupon revealed twice would be refused)", k, code, err)
		}
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("state file mode: %v %v", info.Mode(), err)
	}
}

// TestWalletBudget: a spending limit shared by two transports (two books'
// worth of lanes, as two processes would have) refuses the payment that
// would pass it before any coupon leaves, and the lane keeps working once
// the window resets.
func TestWalletBudget(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 2)
	srv := gateServer(t, g)
	now := time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC)
	budget, err := wallet.OpenBudget(filepath.Join(t.TempDir(), "limits.json"))
	if err != nil {
		t.Fatal(err)
	}
	budget.Now = func() time.Time { return now }
	b := w.owner.Book.Book
	perRequest := 2 * b.Unit
	if err := budget.Set(wallet.Limit{Host: "127.0.0.1", Currency: b.Currency, Max: 3 * perRequest, Period: time.Hour}); err != nil {
		t.Fatal(err)
	}
	tr1, _ := wallet.NewTransport(w.owner, 0)
	tr2, _ := wallet.NewTransport(w.owner, 1)
	tr1.Budget, tr2.Budget = budget, budget
	get := func(tr *wallet.Transport) error {
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/premium/a")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return errors.New(resp.Status)
		}
		return nil
	}
	for _, tr := range []*wallet.Transport{tr1, tr2, tr1} {
		if err := get(tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := get(tr2); !errors.Is(err, wallet.ErrSpendLimit) {
		t.Fatalf("fourth request within the hour: %v", err)
	}
	tr3, _ := wallet.NewTransport(w.owner, 2) // a lane not yet opened
	tr3.Budget = budget
	if err := get(tr3); !errors.Is(err, wallet.ErrSpendLimit) {
		t.Fatalf("fresh lane within the hour: %v", err)
	}
	// Through the paying proxy, a client gets a 402 with the wallet's reason.
	up, _ := url.Parse(srv.URL)
	proxy := httptest.NewServer(wallet.NewProxy(up, tr3))
	defer proxy.Close()
	resp, err := http.Get(proxy.URL + "/premium/a")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPaymentRequired || !strings.Contains(string(body), "spending limit reached") {
		t.Fatalf("proxy past the limit: %d %s", resp.StatusCode, body)
	}
	if tr1.Spent()+tr2.Spent()+tr3.Spent() != 6 {
		t.Fatalf("spent %d coupons, want 6: a refused payment must spend nothing", tr1.Spent()+tr2.Spent()+tr3.Spent())
	}
	now = now.Add(time.Hour)
	for _, tr := range []*wallet.Transport{tr2, tr3} {
		if err := get(tr); err != nil {
			t.Fatalf("after the window reset (tr3's lane open was refused before, so it must open now): %v", err)
		}
	}
}

// TestWalletReopen: the very first payment of a lane, with its open, is
// lost in flight; the gate never saw the open, so the next payment is
// answered "lane_not_open" and the wallet opens the lane again, from
// where its cursor stands, without revealing a coupon twice.
func TestWalletReopen(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	srv := gateServer(t, g)
	tr, err := wallet.OpenTransport(w.owner, filepath.Join(t.TempDir(), "lanes.json"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	c := &http.Client{Transport: tr}
	tr.Base = failPaid{http.DefaultTransport}
	if _, err := c.Get(srv.URL + "/premium/a"); err == nil {
		t.Fatal("the failing network did not fail")
	}
	tr.Base = nil
	for k := 0; k < 3; k++ {
		resp, err := c.Get(srv.URL + "/premium/a")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("payment %d after the lost open: %d %s", k, resp.StatusCode, body)
		}
	}
}
