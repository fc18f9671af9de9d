package caddymodule

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
	"go.step.sm/crypto/pemutil"
)

// TestRedemptionWorker: a gate redeems the coupons it accepted at a real
// broker (in process, over HTTP); the vendor is paid exactly what was
// spent, a second run pays nothing more, and a run whose acknowledgement
// was lost (a crash between the broker's answer and the store's update)
// is repaired by the next run without paying twice.
func TestRedemptionWorker(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	brokerKey, alice, vendorKey := testKey("broker"), testKey("alice"), testKey("vendor")
	db, err := broker.OpenSQLite(ctx, filepath.Join(dir, "broker.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b, err := broker.New(db, brokerKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&broker.API{Broker: b})
	defer srv.Close()

	// The broker's world: alice funded, the vendor registered, a book held.
	ap, _ := spki.NewPublicKey(alice.Public())
	vp, _ := spki.NewPublicKey(vendorKey.Public())
	acct, user, err := b.RegisterUser(ctx, ap, "EUR", 0, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.TopUp(ctx, acct, coupons.NanosPerUnit, "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RegisterVendor(ctx, "news.example", vp, "EUR"); err != nil {
		t.Fatal(err)
	}
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: b.PublicKey().Hash(), Owner: ap.Hash(),
		Lanes: 3, Length: 64, Currency: "EUR", Unit: 1_000_000, NotAfter: time.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := bk.Sign(alice)
	if err := b.RegisterBook(ctx, ap.Hash(), sb); err != nil {
		t.Fatal(err)
	}
	owner, err := delegation.NewOwner(sb, user, sec, anchors, alice)
	if err != nil {
		t.Fatal(err)
	}

	// The gate, with the broker's key, the vendor's key and the broker URL.
	bp, _ := spki.NewPublicKey(brokerKey.Public())
	brokerPub := filepath.Join(dir, "broker.pub")
	os.WriteFile(brokerPub, spki.Advanced(bp.Sexp()), 0o644)
	block, _ := pemutil.Serialize(vendorKey)
	vendorPEM := filepath.Join(dir, "vendor.pem")
	os.WriteFile(vendorPEM, pem.EncodeToMemory(block), 0o600)
	g := &Gate{Vendor: "news.example", BrokerKeys: []string{brokerPub}, Broker: srv.URL, VendorKey: vendorPEM, Price: 1, LaneRate: -1,
		RedeemEvery: caddy.Duration(time.Hour), SecretFile: filepath.Join(dir, "secret"), StoreRaw: []byte(`{"backend":"memory"}`)}
	cctx, cancel := caddy.NewContext(caddy.Context{Context: ctx})
	defer cancel()
	if err := g.Provision(cctx); err != nil {
		t.Fatal(err)
	}
	defer g.Cleanup()

	nonce := nonceRe.FindStringSubmatch(serve(g, "GET", "/premium/x", nil).Header().Get("WWW-Authenticate"))[1]
	spent := 0
	for lane, n := range map[uint32]int{0: 7, 2: 3} {
		c := newClient(t, nil, owner, lane)
		c.nonce = nonce
		for k := 0; k < n; k++ {
			if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
				t.Fatalf("payment: %d %s", rec.Code, rec.Body)
			}
			spent++
		}
	}
	vendorBalance := func() int64 {
		a, err := db.Account(ctx, "vendor:news.example:EUR")
		if err != nil {
			t.Fatal(err)
		}
		return a.Balance
	}
	if n, err := g.redeemOnce(ctx); err != nil || n != 2 {
		t.Fatalf("redeemed %d lanes: %v", n, err)
	}
	if got := vendorBalance(); got != int64(spent)*1_000_000 {
		t.Fatalf("vendor paid %d, want %d", got, spent*1_000_000)
	}
	if n, _ := g.redeemOnce(ctx); n != 0 {
		t.Fatalf("a second run redeemed %d lanes", n)
	}
	// More coupons on lane 0, then a run whose acknowledgement is lost.
	c := newClient(t, nil, owner, 0)
	c.nonce, c.opened = nonce, true
	for k := 0; k < 7; k++ {
		c.cursor.Next()
	}
	for k := 0; k < 4; k++ {
		if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
			t.Fatalf("payment: %d %s", rec.Code, rec.Body)
		}
	}
	pending, _ := g.store.Pending(ctx, 10)
	if len(pending) != 1 {
		t.Fatalf("pending %+v", pending)
	}
	var items []broker.RedeemItem
	for _, p := range pending {
		items = append(items, broker.RedeemItem{Lane: p.ID.String(), Index: p.Index, Value: b64url(p.Value[:])})
	}
	if _, err := g.postRedeem(ctx, items); err != nil { // paid, but the gate "crashed" before recording it
		t.Fatal(err)
	}
	if n, err := g.redeemOnce(ctx); err != nil || n != 1 {
		t.Fatalf("repair run: %d %v", n, err)
	}
	if got := vendorBalance(); got != int64(spent+4)*1_000_000 {
		t.Fatalf("vendor paid %d after the repair, want %d", got, (spent+4)*1_000_000)
	}

	// A thief spends coupon 4 of lane 2 without knowing coupon 5: its
	// binding tag is wrong. The holder's next payment reveals coupon 5, the
	// gate finds the theft, and its next redemption carries the evidence,
	// which the broker checks and records for the book's owner.
	c2 := newClient(t, nil, owner, 2)
	c2.nonce, c2.opened = nonce, true
	for k := 0; k < 3; k++ {
		c2.cursor.Next()
	}
	stolen := c2.payment("GET", "/premium/x", 1)
	stolen.Set("Authorization", regexp.MustCompile(`m=[A-Za-z0-9_-]+`).ReplaceAllString(stolen.Get("Authorization"), "m=AAAAAAAAAAAAAAAAAAAAAA"))
	if rec := serve(g, "GET", "/premium/x", stolen); rec.Code != 200 {
		t.Fatalf("the stolen coupon: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(g, "GET", "/premium/x", c2.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("the holder's next payment: %d %s", rec.Code, rec.Body)
	}
	if n, err := g.redeemOnce(ctx); err != nil || n != 1 {
		t.Fatalf("redemption with evidence: %d %v", n, err)
	}
	thefts, err := b.Thefts(ctx, ap.Hash())
	if err != nil || len(thefts) != 1 || thefts[0].Index != 4 || thefts[0].Lane.Lane != 2 || thefts[0].Vendor != "news.example" {
		t.Fatalf("thefts recorded: %+v %v", thefts, err)
	}
	if _, ok := g.thefts.peek(thefts[0].Lane); ok {
		t.Fatal("the gate still holds evidence the broker recorded")
	}
	if err := db.CheckInvariants(ctx); err != nil {
		t.Fatal(err)
	}
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
