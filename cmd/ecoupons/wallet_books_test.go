package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/stack"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
)

// stackWallet starts a broker and a gate (news.example, /premium/* at 2
// coupons) and a wallet registered there with 1 EUR.
func stackWallet(t *testing.T) (*stack.Stack, *wallet.Wallet) {
	t.Helper()
	s, err := stack.Start(t.TempDir(), freeAddr(t), freeAddr(t), demoSite(), []stack.Route{{Path: "/premium/*", Price: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterVendor(); err != nil {
		s.Stop()
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
	if err := s.CallJSON(s.AdminKey, "POST", "/v1/admin/topup", map[string]string{"account": user.Account, "amount": "1", "id": "test-" + user.Account}, nil); err != nil {
		t.Fatal(err)
	}
	return s, w
}

// storeBook makes a book of lanes × length coupons of 0.001 EUR for
// news.example and stores it in w (pending), as book new does before it
// asks the broker.
func storeBook(t *testing.T, w *wallet.Wallet, lanes, length uint32) *coupons.SignedBook {
	t.Helper()
	bk, err := w.BrokerPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	b, sec, anchors, err := coupons.Create(coupons.Params{Vendor: stack.Vendor, Broker: bk.Hash(), Owner: w.PublicKey().Hash(),
		Lanes: lanes, Length: length, Currency: "EUR", Unit: 1_000_000, NotAfter: time.Now().Add(24 * time.Hour)}, nil)
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
	return sb
}

// TestCrashBetweenBookPaidAndSavedLosesNothing: the broker holds a book's
// value and the wallet dies before it keeps the book certificate. The
// book was stored before the broker was asked, so it is still there,
// pending and never spent; 'book fund' gets the certificate without
// holding the value twice, and the book then pays at the gate.
func TestCrashBetweenBookPaidAndSavedLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and a gate")
	}
	s, w := stackWallet(t)
	defer s.Stop()

	// book new, up to the broker's answer: stored, then held by the broker.
	sb := storeBook(t, w, 2, 64)
	if err := brokerCall(w, "POST", "/v1/books", spki.Transport(sb.Sexp()), nil); err != nil {
		t.Fatal(err)
	}
	// The wallet crashed here: its answer (the certificate) is lost.

	w, err := wallet.Load(w.Dir)
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

// TestFallsBackToNextBookAtARealGate: the wallet's first choice (the book
// with the most value left) carries a book certificate the gate does not
// take (another book's): the gate refuses the book (book_not_funded) and
// the same request is paid from the next book.
func TestFallsBackToNextBookAtARealGate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and a gate")
	}
	s, w := stackWallet(t)
	defer s.Stop()
	good := storeBook(t, w, 1, 64)
	if _, _, err := fundBook(w, good); err != nil {
		t.Fatal(err)
	}
	// A larger book the wallet takes for funded, wrongly: only the gate
	// tells.
	bad := storeBook(t, w, 4, 64)
	// It carries the certificate of the good book: the broker's, but not
	// for this book.
	read := func(sb *coupons.SignedBook) (string, map[string]any) {
		id := sb.Book.ID()
		f := filepath.Join(w.Dir, "books", base64.RawURLEncoding.EncodeToString(id[:])+".json")
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var bf map[string]any
		if err := json.Unmarshal(raw, &bf); err != nil {
			t.Fatal(err)
		}
		return f, bf
	}
	_, gf := read(good)
	f, bf := read(bad)
	bf["funding"] = gf["funding"]
	raw, err := json.Marshal(bf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	es, err := w.BooksFor(stack.Vendor)
	if err != nil || len(es) != 2 || es[0].Holder.Book.Book.ID() != bad.Book.ID() {
		t.Fatalf("the larger book should be tried first: %d books, %v", len(es), err)
	}
	c, err := bookChooser(w, stack.Vendor, "", func(e *wallet.BookEntry) (*wallet.Transport, error) {
		return wallet.OpenTransport(e.Holder, e.StatePath, e.Lanes...)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 2 {
		resp, err := (&http.Client{Transport: c}).Get("http://" + s.Site + "/premium/article.html")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %s, want 200 from the next book", i, resp.Status)
		}
	}
	for _, e := range es {
		u, err := e.Usage()
		if err != nil {
			t.Fatal(err)
		}
		switch id := e.Holder.Book.Book.ID(); {
		case id == good.Book.ID() && u.Coupons != 60:
			t.Errorf("the funded book has %d coupons left, want 60 (two requests at 2)", u.Coupons)
		case id == bad.Book.ID() && u.Used > 1:
			t.Errorf("the refused book was tried on %d lanes, want at most 1", u.Used)
		}
	}
}
