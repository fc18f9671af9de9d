package main

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/internal/testutil"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
)

// TestAnonymousBookCrashAndRefund drives the CLI's anonymous-book code
// against a broker in process: the wallet dies after the broker
// blind-signed (and debited) but before it kept the answer; the book is
// still there, unfunded, and 'book fund' finishes it without a second
// debit. The book expired 8 days ago (the broker never sees a book when
// it signs): before the redemption grace has passed 'book refund' is
// refused, after it the book's value returns to the account, once. A
// grant of another, live, anonymous book is revoked by that book's own key
// ('wallet revoke') and is on the broker's next revocation list.
func TestAnonymousBookCrashAndRefund(t *testing.T) {
	ctx := context.Background()
	db, err := broker.OpenSQLite(ctx, filepath.Join(t.TempDir(), "broker.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b, err := broker.New(db, testutil.Key("broker"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	vp, _ := spki.NewPublicKey(testutil.Key("vendor").Public())
	if _, err := b.RegisterVendor(ctx, "news.example", vp, "EUR"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&broker.API{Broker: b})
	defer srv.Close()
	if _, err := b.NewDenomination(ctx, 128_000_000, "EUR", now.AddDate(0, 0, -10), now.AddDate(0, 0, 30)); err != nil {
		t.Fatal(err)
	}
	w, err := wallet.Init(filepath.Join(t.TempDir(), "w"))
	if err != nil {
		t.Fatal(err)
	}
	w.Config.Broker, w.Config.BrokerKey, w.Config.Currency = srv.URL, string(spki.Advanced(b.PublicKey().Sexp())), "EUR"
	var user struct{ Account, Certificate string }
	if err := brokerCall(w, "POST", "/v1/users", map[string]string{"currency": "EUR"}, &user); err != nil {
		t.Fatal(err)
	}
	w.Config.Account = user.Account
	if err := w.SaveConfig(); err != nil {
		t.Fatal(err)
	}
	if err := b.TopUp(ctx, user.Account, coupons.NanosPerUnit, "t"); err != nil {
		t.Fatal(err)
	}
	ds, err := brokerDenominations(w)
	if err != nil {
		t.Fatal(err)
	}
	d, err := chooseDenomination(ds, "0.128")
	if err != nil {
		t.Fatal(err)
	}
	id, err := w.NewAnonymousBook(wallet.AnonymousParams{Vendor: "news.example", Lanes: 2, Length: 64, Unit: 1_000_000,
		NotAfter: now.AddDate(0, 0, -8), Denomination: d}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// book new, up to the broker's answer, which is lost.
	denom, blinded, issue, err := w.AnonymousRequest(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.IssueAnonymous(ctx, w.PublicKey().Hash(), user.Account, denom, blinded, issue); err != nil {
		t.Fatal(err)
	}
	w, err = wallet.Load(w.Dir)
	if err != nil {
		t.Fatal(err)
	}
	books, _ := w.Books()
	if len(books) != 1 || books[0].Funded() {
		t.Fatalf("after the crash: %+v", books)
	}
	if err := fundAnonymous(w, id); err != nil {
		t.Fatal(err)
	}
	balance := func() int64 {
		a, err := db.Account(ctx, user.Account)
		if err != nil {
			t.Fatal(err)
		}
		return a.Balance
	}
	if got := balance(); got != coupons.NanosPerUnit-128_000_000 {
		t.Fatalf("the account holds %d: debited more than once", got)
	}
	books, _ = w.Books()
	if len(books) != 1 || !books[0].Funded() || !books[0].Anonymous() {
		t.Fatalf("after book fund: %+v", books)
	}
	// A grant of a live anonymous book, revoked by the book's own key.
	live, err := w.NewAnonymousBook(wallet.AnonymousParams{Vendor: "news.example", Lanes: 2, Length: 64, Unit: 1_000_000,
		NotAfter: now.Add(24 * time.Hour), Denomination: d}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fundAnonymous(w, live); err != nil {
		t.Fatal(err)
	}
	books, _ = w.Books()
	var holder *delegation.Holder
	for _, e := range books {
		if e.Holder.Book.Book.ID() == live {
			holder = e.Holder
		}
	}
	enc, _ := ecdh.X25519().GenerateKey(rand.Reader)
	phone, err := delegation.NewDevice("phone", testutil.Key("phone"), enc.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	g, err := holder.Issue(phone, 0, 0, delegation.GrantOptions{NotAfter: now.Add(time.Hour)})
	if err != nil || g.Blind == nil {
		t.Fatalf("a grant of the anonymous book: %v", err)
	}
	if err := revokeAnonymousGrant(w, g, false); err != nil {
		t.Fatal(err)
	}
	doc, err := b.RevocationList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	x, err := spki.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	chk := delegation.NewChecker(b.PublicKey())
	if _, err := chk.Update(x); err != nil || !chk.CertRevoked(g.Cert().Cert.Hash()) {
		t.Fatalf("the grant is not on the broker's list: %v", err)
	}

	// Refund: not before the expiry and grace; then once.
	b.ReleaseGrace = 30 * 24 * time.Hour
	var ref *brokerRefusal
	if _, err := refundAnonymous(w, id, user.Account); !errors.As(err, &ref) || ref.code != coupons.CodeNotExpired {
		t.Fatalf("a refund of a spendable book: %v", err)
	}
	b.ReleaseGrace = 7 * 24 * time.Hour
	got, err := refundAnonymous(w, id, user.Account)
	if err != nil || got != "0.128" || balance() != coupons.NanosPerUnit-128_000_000 { // the live book's face value stays spent
		t.Fatalf("refund: %q %v, the account holds %d", got, err, balance())
	}
	if _, err := refundAnonymous(w, id, user.Account); !errors.As(err, &ref) || ref.code != coupons.CodeAlreadyRefunded {
		t.Fatalf("a second refund: %v", err)
	}
}
