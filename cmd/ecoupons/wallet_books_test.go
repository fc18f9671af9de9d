package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/stack"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
)

// TestCrashBetweenBookPaidAndSavedLosesNothing: the broker holds a book's
// value and the wallet dies before it keeps the book certificate. The
// book was stored before the broker was asked, so it is still there,
// pending and never spent; 'book fund' gets the certificate without
// holding the value twice, and the book then pays at the gate.
func TestCrashBetweenBookPaidAndSavedLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and a gate")
	}
	s, err := stack.Start(t.TempDir(), freeAddr(t), freeAddr(t), demoSite(), []stack.Route{{Path: "/premium/*", Price: 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if err := s.RegisterVendor(); err != nil {
		t.Fatal(err)
	}
	w, err := wallet.Init(filepath.Join(t.TempDir(), "w"))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Broker
	bk, err := fetchBrokerKey(context.Background(), base)
	if err != nil {
		t.Fatal(err)
	}
	w.Config.Broker, w.Config.BrokerKey, w.Config.Currency = base, string(spki.Advanced(bk.Sexp())), "EUR"
	var user struct{ Account, Certificate string }
	if err := brokerCall(w, "POST", "/v1/users", map[string]string{"currency": "EUR"}, &user); err != nil {
		t.Fatal(err)
	}
	w.Config.Account, w.Config.UserCert = user.Account, user.Certificate
	if err := w.SaveConfig(); err != nil {
		t.Fatal(err)
	}
	if err := s.CallJSON(s.AdminKey, "POST", "/v1/admin/topup", map[string]string{"account": user.Account, "amount": "1", "id": "crash-test"}, nil); err != nil {
		t.Fatal(err)
	}

	// book new, up to the broker's answer: stored, then held by the broker.
	b, sec, anchors, err := coupons.Create(coupons.Params{Vendor: stack.Vendor, Broker: bk.Hash(), Owner: w.PublicKey().Hash(),
		Lanes: 2, Length: 64, Currency: "EUR", Unit: 1_000_000, NotAfter: time.Now().Add(24 * time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Sign(w.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SaveBook(sb, sec, anchors); err != nil {
		t.Fatal(err)
	}
	if err := brokerCall(w, "POST", "/v1/books", spki.Transport(sb.Sexp()), nil); err != nil {
		t.Fatal(err)
	}
	// The wallet crashed here: its answer (the certificate) is lost.

	w, err = wallet.Load(w.Dir)
	if err != nil {
		t.Fatal(err)
	}
	books, err := w.Books()
	if err != nil || len(books) != 1 {
		t.Fatalf("after the crash: %d books, %v", len(books), err)
	}
	if st := books[0].State(time.Now()); st != wallet.BookPending {
		t.Fatalf("after the crash the book is %s, want pending", st)
	}
	if _, err := w.BooksFor(stack.Vendor); err == nil {
		t.Fatal("a pending book is offered for spending")
	}
	held, cur, err := fundBook(w, sb)
	if err != nil {
		t.Fatal(err)
	}
	if held != "0.128" || cur != "EUR" {
		t.Fatalf("book fund: held %s %s", held, cur)
	}
	balance := func() string {
		var out struct {
			Accounts []struct{ Balance string } `json:"accounts"`
		}
		if err := brokerCall(w, "GET", "/v1/balance", nil, &out); err != nil || len(out.Accounts) != 1 {
			t.Fatalf("balance: %+v %v", out, err)
		}
		return out.Accounts[0].Balance
	}
	if got := balance(); got != "0.872" {
		t.Fatalf("balance %s after the book was held and funded again, want 0.872 (held once)", got)
	}
	c, err := bookChooser(w, stack.Vendor, "", func(e *wallet.BookEntry) (*wallet.Transport, error) {
		return wallet.OpenTransport(e.Holder, e.StatePath, e.Lanes...)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := (&http.Client{Transport: c}).Get("http://" + s.Site + "/premium/article.html")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || c.Spent() != 2 {
		t.Fatalf("paying from the recovered book: %s, %d coupons", resp.Status, c.Spent())
	}
}
