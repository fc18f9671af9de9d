package caddymodule

import (
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// reclaimer is the owner's client of lane s, its cursor moved to the end
// of the portion it granted (c), as the wallet's reclaim leaves it: its
// next payment is coupon c+1, sent with a fresh open.
func reclaimer(t *testing.T, owner *delegation.Holder, s, c uint32) *client {
	t.Helper()
	cl := newClient(t, nil, owner, s)
	b := owner.Book.Book
	seed, ok := owner.Seed(s)
	if !ok {
		t.Fatalf("the owner does not hold lane %d whole", s)
	}
	cur, err := coupons.NewCursorAt(b.LaneTag(s), b.Length, b.Length, seed, c)
	if err != nil {
		t.Fatal(err)
	}
	cl.cursor = cur
	return cl
}

// TestCappedDelegateSpendsItsPortionOnly: a phone granted lanes 0–1 with a
// cap of 5 coupons holds a portion of 5 coupons of lane 0 and nothing of
// lane 1. It spends all 5 (the fifth, the portion's last, unbound: the
// gate learned the end from the open), cannot compute a sixth, and a
// forged one is refused.
func TestCappedDelegateSpendsItsPortionOnly(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	phone := grantDevice(t, "phone", w.owner, 0, 1, delegation.GrantOptions{Cap: 5 * 1_000_000})
	if end, _, ok := phone.Portion(0); !ok || end != 5 {
		t.Fatalf("lane 0: portion end %d (%v), want 5", end, ok)
	}
	if _, _, ok := phone.Portion(1); ok {
		t.Fatal("lane 1 was granted beyond the cap")
	}
	c := newClient(t, nil, phone, 0)
	c.nonce = gateNonce(g)
	if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 3)); rec.Code != 200 {
		t.Fatalf("3 coupons: %d %s", rec.Code, rec.Body)
	}
	mustPay(t, g, c, 2, "the portion's last 2 coupons")
	if r := laneAt(t, g, phone, 0); r.State.Last != 5 || r.Meta.PortionEnd() != 5 {
		t.Fatalf("lane at %d, portion end %d", r.State.Last, r.Meta.PortionEnd())
	}
	if _, _, _, _, err := c.cursor.Next(); err == nil {
		t.Fatal("the phone's cursor goes past its portion")
	}
	// Whatever it sends as coupon 6 does not hash to coupon 5.
	d := [32]byte{}
	forged := coupons.Pay(c.lane, 6, coupons.Value{6}, &coupons.Value{7}, &d)
	wantRefusal(t, serve(g, "GET", "/premium/x", map[string][]string{"Authorization": {forged.Header()}}), 402, "bad_coupon")
}

// TestUnboundCouponOnlyAtPortionEnd: a coupon without a request binding
// is refused anywhere but at the end the spender signed in its open (a
// thief who strips m off an intercepted coupon leaves no evidence, so it
// must not be able to).
func TestUnboundCouponOnlyAtPortionEnd(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	phone := grantDevice(t, "phone", w.owner, 0, 0, delegation.GrantOptions{Cap: 5 * 1_000_000})
	c := newClient(t, nil, phone, 0)
	c.nonce = gateNonce(g)
	mustPay(t, g, c, 1, "coupon 1")
	i, wv, _, _, err := c.cursor.Next()
	if err != nil {
		t.Fatal(err)
	}
	stripped := coupons.Pay(c.lane, i, wv, nil, nil)
	wantRefusal(t, serve(g, "GET", "/premium/x", map[string][]string{"Authorization": {stripped.Header()}}), 402, "bad_coupon")
}

// TestSubDelegateCannotExceedParentPortion: a phone with a portion of 5
// coupons of lane 0 (cap 5, propagate) sub-grants 3 of them to a watch;
// the watch spends its 3 and can do no more, and the phone has no more
// than its own 5 either.
func TestSubDelegateCannotExceedParentPortion(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	phone := grantDevice(t, "phone", w.owner, 0, 3, delegation.GrantOptions{Cap: 5 * 1_000_000, Propagate: true})
	watch := grantDevice(t, "watch", phone, 0, 0, delegation.GrantOptions{Cap: 3 * 1_000_000})
	if end, _, _ := watch.Portion(0); end != 3 {
		t.Fatalf("the watch's portion ends at %d, want 3", end)
	}
	// A sub-grant asking for more than the parent's cap is refused.
	tablet, _ := delegation.NewDevice("tablet", testKey("tablet"), mustEnc(t).PublicKey())
	if _, err := phone.Issue(tablet, 0, 0, delegation.GrantOptions{Cap: 50 * 1_000_000}); !errors.Is(err, delegation.ErrGrantWider) {
		t.Fatalf("a sub-grant wider than the parent's cap: %v", err)
	}
	c := newClient(t, nil, watch, 0)
	c.nonce = gateNonce(g)
	mustPay(t, g, c, 3, "the watch's 3 coupons")
	if _, _, _, _, err := c.cursor.Next(); err == nil {
		t.Fatal("the watch's cursor goes past its portion")
	}
}

// TestCappedDelegateAcrossTwoStores: a phone capped at 5 coupons pays at
// two gates of one vendor that keep separate bolt stores, moving from one
// to the other; it spends no more than 5 in all, and the broker pays the
// vendor no more than 5 coupons (before book certificates and portions,
// each store counted the cap on its own and the broker paid 10).
func TestCappedDelegateAcrossTwoStores(t *testing.T) {
	ctx := context.Background()
	bw := newBrokerWorld(t)
	secret := filepath.Join(bw.dir, "secret")
	gA := bw.gateOn(t, ModeOffline, secret, boltStoreJSON(filepath.Join(bw.dir, "a.db")))
	gB := bw.gateOn(t, ModeOffline, secret, boltStoreJSON(filepath.Join(bw.dir, "b.db")))
	phone := grantDevice(t, "phone", bw.owner, 0, 1, delegation.GrantOptions{Cap: 5 * 1_000_000})

	served := 0
	c := newClient(t, nil, phone, 0)
	for k := 0; k < 3; k++ {
		if rec := payOn(t, gA, c); rec.Code == 200 {
			served++
		}
	}
	// On to gate B: the same lane, opened there, from where the cursor is.
	c.opened, c.nonce = false, gateNonce(gB)
	for k := 0; k < 2; k++ {
		if rec := payOn(t, gB, c); rec.Code == 200 {
			served++
		}
	}
	if _, _, _, _, err := c.cursor.Next(); err == nil {
		t.Fatal("the phone's cursor goes past its portion")
	}
	if served != 5 {
		t.Errorf("served %d requests at price 1, want 5", served)
	}
	for _, g := range []*Gate{gA, gB} {
		if _, err := g.redeemOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	a, err := bw.db.Account(ctx, "vendor:news.example:EUR")
	if err != nil {
		t.Fatal(err)
	}
	if a.Balance > 5*1_000_000 {
		t.Errorf("the broker paid the vendor %d nanos, more than the cap of 5 coupons", a.Balance)
	}
	if a.Balance != 5*1_000_000 {
		t.Errorf("the broker paid %d nanos for 5 coupons accepted", a.Balance)
	}
}

// gateThefts is the count of suspected thefts the gates reported.
func gateThefts() float64 {
	return promtest.ToFloat64(gateMetrics.thefts.WithLabelValues("news.example"))
}

// TestOwnerReclaimsUnspentPortion: a phone holds 5 coupons of lane 0 and
// spends 2; the owner takes the lane back by paying coupon 6 with its own
// open. The gate lets the owner's open take the lane over (spender, nonce,
// portion), counts the 4 coupons from the phone's last, and the phone can
// spend nothing more there; the owner goes on with no theft reported.
func TestOwnerReclaimsUnspentPortion(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	phone := grantDevice(t, "phone", w.owner, 0, 0, delegation.GrantOptions{Cap: 5 * 1_000_000})
	pc := newClient(t, nil, phone, 0)
	pc.nonce = gateNonce(g)
	mustPay(t, g, pc, 2, "the phone's 2 coupons")
	third := pc.payment("GET", "/premium/x", 1) // kept, not sent yet

	thefts := gateThefts()
	oc := reclaimer(t, w.owner, 0, 5)
	oc.nonce = gateNonce(g)
	rec := serve(g, "GET", "/premium/x", oc.payment("GET", "/premium/x", 1))
	if rec.Code != 200 || rec.Header().Get(HeaderCredit) != "3" {
		t.Fatalf("the owner's coupon 6: %d credit %q %s", rec.Code, rec.Header().Get(HeaderCredit), rec.Body)
	}
	r := laneAt(t, g, w.owner, 0)
	if r.State.Last != 6 || r.Meta.Spender != w.owner.Book.Book.Owner || r.Meta.PortionEnd() != w.owner.Book.Book.Length || r.Meta.Nonce != oc.nonce {
		t.Fatalf("after the takeover: at %d, spender %v, end %d", r.State.Last, r.Meta.Spender, r.Meta.PortionEnd())
	}
	wantRefusal(t, serve(g, "GET", "/premium/x", third), 402, "coupon_spent")
	// The owner pays on, from its credit and coupon 7, bound under its own
	// nonce: nothing is reported stolen.
	mustPay(t, g, oc, 2, "the owner after the takeover")
	if gateThefts() != thefts {
		t.Error("the owner's payments after a takeover were reported as theft")
	}
}

// TestOwnerTakesBackRevokedDevicesLane: the phone's grant is revoked and
// its open lane marked; the owner's open takes the lane over (clearing the
// mark: its own chain is not revoked) and pays past the phone's portion.
func TestOwnerTakesBackRevokedDevicesLane(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	phone := grantDevice(t, "phone", w.owner, 0, 0, delegation.GrantOptions{Cap: 5 * 1_000_000})
	pc := newClient(t, nil, phone, 0)
	pc.nonce = gateNonce(g)
	mustPay(t, g, pc, 1, "the phone")
	r := laneAt(t, g, phone, 0)
	if err := g.store.MarkRevoked(context.Background(), pc.lane, r.Meta.Certs, r.Meta.Keys); err != nil {
		t.Fatal(err)
	}
	g.core.ClearCache()
	wantRefusal(t, payOn(t, g, pc), 402, "revoked")
	oc := reclaimer(t, w.owner, 0, 5)
	oc.nonce = gateNonce(g)
	if rec := serve(g, "GET", "/premium/x", oc.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("the owner's takeover of a revoked lane: %d %s", rec.Code, rec.Body)
	}
	if r := laneAt(t, g, phone, 0); r.Meta.Revoked || r.State.Last != 6 {
		t.Fatalf("after the takeover: revoked %v at %d", r.Meta.Revoked, r.State.Last)
	}
}

func mustEnc(t *testing.T) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdhKey(t)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestWalletsReclaimThroughGate: the whole story with the wallets over
// HTTP. Alice's wallet grants her phone 5 coupons of lane 2; the phone
// pays twice and is then stopped at its portion's end; Alice reclaims
// lane 2, and her wallet's next payment on it opens the lane under her
// own key, taking it over at the gate; the phone's remaining coupons are
// spent, and no theft is reported against anyone.
func TestWalletsReclaimThroughGate(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	srv := gateServer(t, g)
	dir := t.TempDir()
	alice, err := wallet.Init(filepath.Join(dir, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	phoneW, err := wallet.Init(filepath.Join(dir, "phone"))
	if err != nil {
		t.Fatal(err)
	}
	bp, _ := spki.NewPublicKey(w.broker.Public())
	alice.Config.BrokerKey = string(spki.Advanced(bp.Sexp()))
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: bp.Hash(), Owner: alice.PublicKey().Hash(),
		Lanes: 4, Length: 64, Currency: "EUR", Unit: 1_000_000, NotAfter: t0Later()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := bk.Sign(alice.Key)
	if err := alice.SaveBook(sb, sec, anchors); err != nil {
		t.Fatal(err)
	}
	funding, err := coupons.SignFunding(bk, w.broker, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.SaveFunding(bk.ID(), funding); err != nil {
		t.Fatal(err)
	}
	book, err := alice.BookFor("news.example")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := phoneW.Device("phone")
	if err != nil {
		t.Fatal(err)
	}
	gr, err := book.Holder.Issue(dev, 2, 2, delegation.GrantOptions{Cap: 5 * 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.MarkGranted(book, gr); err != nil {
		t.Fatal(err)
	}
	if _, err := phoneW.ImportGrant(spki.Transport(gr.Sexp()), time.Now()); err != nil {
		t.Fatal(err)
	}
	pb, err := phoneW.BookFor("news.example")
	if err != nil {
		t.Fatal(err)
	}
	get := func(tr *wallet.Transport) error {
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/premium/a")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	ptr, err := wallet.OpenTransport(pb.Holder, pb.StatePath, pb.Lanes...)
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 2; k++ {
		if err := get(ptr); err != nil {
			t.Fatalf("phone payment %d: %v", k+1, err)
		}
	}
	ptr.Close()

	thefts := gateThefts()
	if _, err := alice.Reclaim(book, []uint32{2}); err != nil {
		t.Fatal(err)
	}
	if book, err = alice.BookFor("news.example"); err != nil {
		t.Fatal(err)
	}
	atr, err := wallet.OpenTransport(book.Holder, book.StatePath, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer atr.Close()
	for k := 0; k < 3; k++ {
		if err := get(atr); err != nil {
			t.Fatalf("alice's payment %d on the reclaimed lane: %v", k+1, err)
		}
	}
	r := laneAt(t, g, book.Holder, 2)
	if r.Meta.Spender != alice.PublicKey().Hash() || r.State.Last != 8 { // coupons 6, 7, 8: the wallet pays one a request, credit or not
		t.Fatalf("lane 2 after the reclaim: spender %v, at %d", r.Meta.Spender, r.State.Last)
	}
	// The phone comes back with its coupons 3–5: all spent by Alice's.
	ptr2, err := wallet.OpenTransport(pb.Holder, pb.StatePath, pb.Lanes...)
	if err != nil {
		t.Fatal(err)
	}
	defer ptr2.Close()
	if err := get(ptr2); err == nil {
		t.Fatal("the phone paid on a reclaimed lane")
	}
	if gateThefts() != thefts {
		t.Error("the reclaim was reported as theft")
	}
}
