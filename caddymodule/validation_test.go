package caddymodule

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
)

// resume returns a client of lane s of h that has already spent n coupons,
// with a fresh nonce of g: another process of the same wallet.
func resume(t *testing.T, g *Gate, h *delegation.Holder, s uint32, n int) *client {
	c := newClient(t, nil, h, s)
	c.nonce = gateNonce(g)
	for k := 0; k < n; k++ {
		c.cursor.Next()
	}
	return c
}

// payOn pays one coupon on lane of holder h at g, opening the lane first
// when the client is new; it returns the response.
func payOn(t *testing.T, g *Gate, c *client) *httptest.ResponseRecorder {
	t.Helper()
	if c.nonce == "" {
		c.nonce = gateNonce(g)
	}
	return serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1))
}

func wantRefusal(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	if rec.Code != status || errorCode(t, rec.Body.String()) != code {
		t.Fatalf("got %d %s, want %d %s", rec.Code, rec.Body, status, code)
	}
}

// TestSemiMode: a semi gate asks the broker at every lane open. It refuses
// books the broker does not hold and grants revoked at the broker this
// instant (with no revocation list configured), and starts a lane where
// the broker's redemptions left it, so that a gate which lost its store
// does not accept redeemed coupons again. Lanes already open keep working
// while the broker is down; new opens get 503.
func TestSemiMode(t *testing.T) {
	ctx := context.Background()
	bw := newBrokerWorld(t)
	secret := filepath.Join(bw.dir, "secret")
	g := bw.gate(t, ModeSemi, secret)

	// The registered book pays; its coupons are redeemed.
	c := newClient(t, nil, bw.owner, 0)
	for k := 0; k < 5; k++ {
		if rec := payOn(t, g, c); rec.Code != 200 {
			t.Fatalf("payment %d: %d %s", k, rec.Code, rec.Body)
		}
	}
	replay := c.payment("GET", "/premium/x", 1) // coupon 6, kept for later
	if rec := serve(g, "GET", "/premium/x", replay); rec.Code != 200 {
		t.Fatalf("coupon 6: %d %s", rec.Code, rec.Body)
	}
	if n, err := g.redeemOnce(ctx); err != nil || n != 1 {
		t.Fatalf("redeem: %d %v", n, err)
	}
	// The gate loses its store (a new one, same secret): the replayed
	// coupon 6 comes with a fresh open. The broker says 6 are redeemed.
	g2 := bw.gate(t, ModeSemi, secret)
	c2 := resume(t, g2, bw.owner, 0, 5)
	wantRefusal(t, serve(g2, "GET", "/premium/x", c2.payment("GET", "/premium/x", 1)), 402, "coupon_spent")
	// The same replay at an offline gate with an empty store passes: the
	// mode is what stops it.
	g3 := bw.gate(t, ModeOffline, secret)
	c3 := resume(t, g3, bw.owner, 0, 5)
	if rec := serve(g3, "GET", "/premium/x", c3.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("offline replay: %d %s", rec.Code, rec.Body)
	}
	// The holder goes on from coupon 7 at the semi gate g2.
	if rec := serve(g2, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("coupon 7 after the store loss: %d %s", rec.Code, rec.Body)
	}

	// A device's grant revoked at the broker: refused at the next open,
	// at once, with no revocation list on the gate. The phone passed lane
	// 2 on to a watch; revoking the phone's key stops the watch too.
	phone := grantDevice(t, "phone", bw.owner, 1, 2, delegation.GrantOptions{Propagate: true})
	watch := grantDevice(t, "watch", phone, 2, 2, delegation.GrantOptions{})
	if rec := payOn(t, g, newClient(t, nil, phone, 1)); rec.Code != 200 {
		t.Fatalf("phone before revocation: %d %s", rec.Code, rec.Body)
	}
	if err := bw.b.Revoke(ctx, bw.alice.Hash(), phone.Chain[len(phone.Chain)-1], true); err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, payOn(t, g, newClient(t, nil, watch, 2)), 402, "revoked")
	wantRefusal(t, payOn(t, g, newClient(t, nil, phone, 2)), 402, "revoked")

	// The broker goes down: the open lane 0 still pays; a new open is 503.
	bw.srv.Close()
	if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("open lane with the broker down: %d %s", rec.Code, rec.Body)
	}
	rec := payOn(t, g, newClient(t, nil, bw.owner, 2))
	wantRefusal(t, rec, 503, "broker_unavailable")
	if rec.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
}

// TestOnlineMode: an online gate has the broker reserve each lane's value
// at open and pin the lane to the gate's store. A gate with another store
// cannot open a reserved lane, even with the same secret (a load-balanced
// fleet shares its secret_file; bolt stores on each node would otherwise
// accept the same coupons twice); a gate on the same store can; the
// reserved lane is redeemed from the reservation.
func TestOnlineMode(t *testing.T) {
	ctx := context.Background()
	bw := newBrokerWorld(t)
	secret := filepath.Join(bw.dir, "secret")
	boltA := fmt.Sprintf(`{"backend":"bolt","path":%q}`, filepath.Join(bw.dir, "a.db"))
	gA := bw.gateOn(t, ModeOnline, secret, boltA)
	gB := bw.gateOn(t, ModeOnline, secret, fmt.Sprintf(`{"backend":"bolt","path":%q}`, filepath.Join(bw.dir, "b.db")))
	bookID := bw.owner.Book.Book.ID()
	reserve := "reserve:" + hex.EncodeToString(bookID[:])

	c := newClient(t, nil, bw.owner, 1)
	for k := 0; k < 4; k++ {
		if rec := payOn(t, gA, c); rec.Code != 200 {
			t.Fatalf("payment %d: %d %s", k, rec.Code, rec.Body)
		}
	}
	a, err := bw.db.Account(ctx, reserve)
	if err != nil || a.Balance != 64*1_000_000 {
		t.Fatalf("reserve account: %+v %v", a, err)
	}
	// Gate B has its own store: lane 1 is gate A's, and B cannot replay
	// A's coupons. Lane 2 opens at B.
	replay := resume(t, gB, bw.owner, 1, 0)
	wantRefusal(t, serve(gB, "GET", "/premium/x", replay.payment("GET", "/premium/x", 1)), 402, "lane_reserved")
	wantRefusal(t, payOn(t, gB, resume(t, gB, bw.owner, 1, 4)), 402, "lane_reserved")
	if rec := payOn(t, gB, newClient(t, nil, bw.owner, 2)); rec.Code != 200 {
		t.Fatalf("lane 2 at gate B: %d %s", rec.Code, rec.Body)
	}
	// A second node on gate A's store (one file, as on one Redis) is the
	// same holder: lane 1 goes on there.
	gA2 := bw.gateOn(t, ModeOnline, secret, boltA)
	if rec := serve(gA2, "GET", "/premium/x", resume(t, gA2, bw.owner, 1, 4).payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("same store: %d %s", rec.Code, rec.Body)
	}
	// Redemption pays gate A's 5 coupons from the reservation.
	if n, err := gA.redeemOnce(ctx); err != nil || n != 1 {
		t.Fatalf("redeem: %d %v", n, err)
	}
	if a, _ := bw.db.Account(ctx, reserve); a.Balance != (64-5+64)*1_000_000 {
		t.Fatalf("reserve after redemption: %d", a.Balance)
	}
	if v, _ := bw.db.Account(ctx, "vendor:news.example:EUR"); v.Balance != 5*1_000_000 {
		t.Fatalf("vendor paid %d", v.Balance)
	}
}

// TestWalletMovesOffReservedLane: two online gates with stores of their
// own; the broker pins each lane to the store that reserved it. The
// wallet keeps each lane at the store it opened it at (the challenge's
// store), so it never offers lane 2 to B (which the broker would refuse as
// lane_reserved, revealing a coupon for nothing): every coupon it reveals
// is accepted, and the lanes keep working at their own gates under their
// first opens — no binding check fails (no false theft).
func TestWalletMovesOffReservedLane(t *testing.T) {
	bw := newBrokerWorld(t)
	gA := bw.gate(t, ModeOnline, filepath.Join(bw.dir, "secret-a"))
	gB := bw.gate(t, ModeOnline, filepath.Join(bw.dir, "secret-b"))
	srvA, srvB := gateServer(t, gA), gateServer(t, gB)
	tr, err := wallet.NewTransport(bw.owner, 1, 2) // lane 2 is taken first
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: tr}
	get := func(base string) {
		t.Helper()
		resp, err := hc.Get(base + "/premium/x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", base, resp.StatusCode, body)
		}
	}
	get(srvA.URL) // lane 2, opened (and reserved) at A
	get(srvB.URL) // lane 2 belongs to A's store: lane 1 opens at B
	// A's challenges now carry another nonce than lane 2's open (a nonce
	// is the same for everyone within a time bucket).
	later := time.Now().Add(10 * time.Minute)
	gA.now = func() time.Time { return later }
	get(srvA.URL) // lane 2, under A's open
	get(srvA.URL) // lane 2 again: A checks the binding of the previous request
	// 4 paid requests, 4 coupons: none revealed to a gate that refused it
	// (before lanes were bound to stores, each of the 2 switches of gate
	// cost 2 coupons never accepted: lane_not_open, then lane_reserved).
	if tr.Spent() != 4 {
		t.Fatalf("spent %d coupons, want 4", tr.Spent())
	}
	for name, g := range map[string]*Gate{"A": gA, "B": gB} {
		if g.thefts.n != 0 {
			t.Errorf("gate %s found %d thefts: the wallet paid a lane under another open than the gate's", name, g.thefts.n)
		}
	}
}

// TestUnnamedLaneMustBeReopened: a stored lane that names no vendor (a
// record from before version 2) is not taken by any gate on sight: a
// payment without an open is refused lane_not_open; with an open, another
// vendor's gate refuses the book and the lane's own vendor names itself in
// the record, keeping the lane's position, in modes offline and semi.
func TestUnnamedLaneMustBeReopened(t *testing.T) {
	bw := newBrokerWorld(t)
	shared := fmt.Sprintf(`{"backend":"bolt","path":%q}`, filepath.Join(bw.dir, "shared.db"))
	offline := bw.gateOn(t, ModeOffline, filepath.Join(bw.dir, "secret"), shared)
	semi := bw.gateOn(t, ModeSemi, filepath.Join(bw.dir, "secret"), shared)
	other := &Gate{Vendor: "other.example", BrokerKeys: []string{bw.brokerPub}, Price: 1, LaneRate: -1,
		SecretFile: filepath.Join(bw.dir, "secret"), StoreRaw: []byte(shared)}
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := other.Provision(cctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Cleanup() })
	ctx := context.Background()
	for lane, own := range []*Gate{offline, semi} {
		c := newClient(t, nil, bw.owner, uint32(lane))
		if rec := payOn(t, offline, c); rec.Code != 200 {
			t.Fatalf("lane %d: first payment: %d %s", lane, rec.Code, rec.Body)
		}
		// Make the record an old one: no vendor.
		rec, err := offline.store.Get(ctx, c.lane)
		if err != nil {
			t.Fatal(err)
		}
		old := rec
		old.Meta.Vendor = [32]byte{}
		if err := offline.store.Advance(ctx, c.lane, rec.State.Last, rec.Credit, old, 0); err != nil {
			t.Fatal(err)
		}
		for _, g := range []*Gate{offline, semi, other} {
			g.core.ClearCache()
		}
		wantRefusal(t, serve(other, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)), 402, "lane_not_open")
		c.nonce, c.opened = gateNonce(other), false
		wantRefusal(t, serve(other, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)), 402, "wrong_vendor")
		wantRefusal(t, serve(own, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)), 402, "lane_not_open")
		c.nonce, c.opened = gateNonce(own), false
		if rec := serve(own, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
			t.Fatalf("lane %d: reopened at its vendor's gate (%s): %d %s", lane, own.Mode, rec.Code, rec.Body)
		}
		got, err := own.store.Get(ctx, c.lane)
		if err != nil || got.Meta.Vendor != own.vendorHash || got.State.Last != rec.State.Last+4 {
			t.Fatalf("lane %d after the reopen: vendor named %v, at %d (was %d), %v", lane, got.Meta.Vendor == own.vendorHash, got.State.Last, rec.State.Last, err)
		}
		other.core.ClearCache()
		wantRefusal(t, serve(other, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)), 402, "wrong_vendor")
	}
}

// TestSharedStoreKeepsLanesApart: gates of different coupon values or
// vendors on one store (one bolt file here) refuse each other's lanes: a
// lane opened with 0.001 EUR coupons cannot pay a route priced in 0.01 EUR
// coupons, nor another vendor's route.
func TestSharedStoreKeepsLanesApart(t *testing.T) {
	bw := newBrokerWorld(t)
	shared := fmt.Sprintf(`{"backend":"bolt","path":%q}`, filepath.Join(bw.dir, "shared.db"))
	cheap := bw.gateOn(t, ModeOffline, filepath.Join(bw.dir, "secret"), shared)
	c := newClient(t, nil, bw.owner, 0)
	if rec := payOn(t, cheap, c); rec.Code != 200 {
		t.Fatalf("cheap route: %d %s", rec.Code, rec.Body)
	}
	dear := &Gate{Vendor: "news.example", BrokerKeys: []string{bw.brokerPub}, Unit: "0.01", Price: 1, LaneRate: -1,
		SecretFile: filepath.Join(bw.dir, "secret"), StoreRaw: []byte(shared)}
	other := &Gate{Vendor: "other.example", BrokerKeys: []string{bw.brokerPub}, Price: 1, LaneRate: -1,
		SecretFile: filepath.Join(bw.dir, "secret"), StoreRaw: []byte(shared)}
	for _, g := range []*Gate{dear, other} {
		cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		if err := g.Provision(cctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Cleanup() })
	}
	c.nonce = gateNonce(dear)
	wantRefusal(t, serve(dear, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)), 402, "wrong_unit")
	wantRefusal(t, serve(other, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)), 402, "wrong_vendor")
	// The lane goes on at its own route.
	if rec := serve(cheap, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("back at the cheap route: %d %s", rec.Code, rec.Body)
	}
}

// TestUnfundedBookRefusedInEveryMode: whatever a gate accepts, the broker
// pays. A book the broker never funded — never registered, refused for
// want of funds, or carrying a book certificate its owner made — is refused
// at lane open in modes offline, semi and online alike (402
// book_not_funded), and no coupon of it is accepted.
func TestUnfundedBookRefusedInEveryMode(t *testing.T) {
	ctx := context.Background()
	bw := newBrokerWorld(t)
	secret := filepath.Join(bw.dir, "secret")

	never := bw.book(t, false) // never registered
	stripFunding := func(o *coupons.Open) { o.Funding = nil }

	// A book over the account's balance: the broker refuses it, with no
	// certificate.
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: bw.b.PublicKey().Hash(), Owner: bw.alice.Hash(),
		Lanes: 1, Length: 1 << 20, Currency: "EUR", Unit: 1_000_000, NotAfter: time.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := bk.Sign(bw.aliceKey)
	if cert, err := bw.b.RegisterBook(ctx, bw.alice.Hash(), sb); !errors.Is(err, broker.ErrInsufficientFunds) || cert != nil {
		t.Fatalf("a book beyond the balance: %v", err)
	}
	refused, err := delegation.NewOwner(sb, bw.user, sec, anchors, bw.aliceKey)
	if err != nil {
		t.Fatal(err)
	}
	// Its owner certifies it itself, naming the broker as issuer (signed
	// by the owner's key) or itself.
	fc, err := coupons.FundingCert(sb.Book, bw.b.PublicKey(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := spki.Sign(bw.aliceKey, fc.Sexp())
	if err != nil {
		t.Fatal(err)
	}
	asBroker := &spki.SignedCert{Cert: fc, Signature: sig}
	own := *fc
	own.Issuer = spki.KeyPrincipal(bw.alice)
	asOwner, err := spki.SignCert(&own, bw.aliceKey)
	if err != nil {
		t.Fatal(err)
	}

	for _, mode := range []string{ModeOffline, ModeSemi, ModeOnline} {
		g := bw.gate(t, mode, secret)
		attempts := []struct {
			name string
			h    *delegation.Holder
			edit func(*coupons.Open)
		}{
			{"never registered", never, nil},
			{"refused by the broker", refused, stripFunding},
			{"certificate signed by the owner as the broker", refused, func(o *coupons.Open) { o.Funding = asBroker }},
			{"certificate issued by the owner", refused, func(o *coupons.Open) { o.Funding = asOwner }},
			{"funded book, certificate left out", bw.owner, stripFunding},
		}
		for _, a := range attempts {
			h := a.h
			if h.Funding == nil {
				cp := *h
				cp.Funding = asOwner // lets the holder build an open; edit decides what is sent
				h = &cp
			}
			c := newClient(t, nil, h, 0)
			c.editOpen = a.edit
			if a.edit == nil {
				c.editOpen = stripFunding
			}
			rec := payOn(t, g, c)
			if rec.Code != 402 || errorCode(t, rec.Body.String()) != "book_not_funded" {
				t.Errorf("mode %s, %s: %d %s", mode, a.name, rec.Code, rec.Body)
			}
		}
		// The funded book opens and pays in every mode.
		c := newClient(t, nil, bw.owner, map[string]uint32{ModeOffline: 0, ModeSemi: 1, ModeOnline: 2}[mode])
		if rec := payOn(t, g, c); rec.Code != 200 {
			t.Fatalf("mode %s, funded book: %d %s", mode, rec.Code, rec.Body)
		}
	}
}
