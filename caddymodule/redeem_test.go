package caddymodule

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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
// brokerWorld is a real broker (in process, over HTTP) with alice funded,
// the vendor news.example registered and one book of alice's held.
type brokerWorld struct {
	dir                  string
	b                    *broker.Broker
	db                   *broker.DB
	srv                  *httptest.Server
	alice                *spki.PublicKey
	aliceKey             ed25519.PrivateKey
	user                 *spki.SignedCert
	owner                *delegation.Holder
	brokerPub, vendorPEM string
	sqlDriver, sqlDSN    string // the broker's database, for a test's own queries
}

func newBrokerWorld(t *testing.T) *brokerWorld { return newBrokerWorldOn(t, "") }

// newBrokerWorldOn is newBrokerWorld with the broker's database on the
// PostgreSQL server at pgURL ("": SQLite in the world's directory).
// sqlDriver and sqlDSN open the same database apart from the broker.
func newBrokerWorldOn(t *testing.T, pgURL string) *brokerWorld {
	ctx := context.Background()
	bw := &brokerWorld{dir: t.TempDir(), aliceKey: testKey("alice")}
	brokerKey, vendorKey := testKey("broker"), testKey("vendor")
	var err error
	if pgURL == "" {
		bw.sqlDriver, bw.sqlDSN = "sqlite", "file:"+filepath.Join(bw.dir, "broker.db")
		bw.db, err = broker.OpenSQLite(ctx, filepath.Join(bw.dir, "broker.db"))
	} else {
		bw.sqlDriver, bw.sqlDSN = "pgx", pgURL
		bw.db, err = broker.OpenPostgres(ctx, pgURL)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bw.db.CheckInvariants(ctx); err != nil {
			t.Errorf("ledger invariants: %v", err)
		}
		bw.db.Close()
	})
	if bw.b, err = broker.New(bw.db, brokerKey); err != nil {
		t.Fatal(err)
	}
	bw.srv = httptest.NewServer(&broker.API{Broker: bw.b})
	t.Cleanup(bw.srv.Close)
	bw.alice, _ = spki.NewPublicKey(bw.aliceKey.Public())
	vp, _ := spki.NewPublicKey(vendorKey.Public())
	acct, user, err := bw.b.RegisterUser(ctx, bw.alice, "EUR", 0, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	bw.user = user
	if err := bw.b.TopUp(ctx, acct, coupons.NanosPerUnit, "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := bw.b.RegisterVendor(ctx, "news.example", vp, "EUR"); err != nil {
		t.Fatal(err)
	}
	bw.owner = bw.book(t, true)
	bp, _ := spki.NewPublicKey(brokerKey.Public())
	bw.brokerPub = filepath.Join(bw.dir, "broker.pub")
	os.WriteFile(bw.brokerPub, spki.Advanced(bp.Sexp()), 0o644)
	block, _ := pemutil.Serialize(vendorKey)
	bw.vendorPEM = filepath.Join(bw.dir, "vendor.pem")
	os.WriteFile(bw.vendorPEM, pem.EncodeToMemory(block), 0o600)
	return bw
}

// book creates a book of alice's (3 lanes of 64 coupons of 0.001 EUR),
// registered at the broker when register is set (and then holding the
// broker's book certificate; an unregistered book has none).
func (bw *brokerWorld) book(t *testing.T, register bool) *delegation.Holder {
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: bw.b.PublicKey().Hash(), Owner: bw.alice.Hash(),
		Lanes: 3, Length: 64, Currency: "EUR", Unit: 1_000_000, NotAfter: time.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := bk.Sign(bw.aliceKey)
	owner, err := delegation.NewOwner(sb, bw.user, sec, anchors, bw.aliceKey)
	if err != nil {
		t.Fatal(err)
	}
	if register {
		if owner.Funding, err = bw.b.RegisterBook(context.Background(), bw.alice.Hash(), sb); err != nil {
			t.Fatal(err)
		}
	}
	return owner
}

// gate provisions a gate (its own memory store) in mode, with the broker's
// key, the vendor's key and the broker's URL.
func (bw *brokerWorld) gate(t *testing.T, mode, secretFile string) *Gate {
	return bw.gateOn(t, mode, secretFile, `{"backend":"memory"}`)
}

// gateOn is gate with the store storeJSON; gates on one bolt file share
// its store (and so are one holder at the broker in mode online).
func (bw *brokerWorld) gateOn(t *testing.T, mode, secretFile, storeJSON string) *Gate {
	g := &Gate{Vendor: "news.example", BrokerKeys: []string{bw.brokerPub}, Broker: bw.srv.URL, VendorKey: bw.vendorPEM, Price: 1, LaneRate: -1,
		Mode: mode, RedeemEvery: caddy.Duration(time.Hour), SecretFile: secretFile, StoreRaw: []byte(storeJSON)}
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := g.Provision(cctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Cleanup() })
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestRedemptionWorker(t *testing.T) {
	ctx := context.Background()
	bw := newBrokerWorld(t)
	b, db, owner, ap := bw.b, bw.db, bw.owner, bw.alice
	g := bw.gate(t, "offline", filepath.Join(bw.dir, "secret"))

	nonce := gateNonce(g)
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
	pending, _ := g.store.Pending(ctx, time.Now(), 10)
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

// TestGateNamesItsBroker: the gate's signed requests name its broker's
// key. With one broker_key it is that one; with several, the one the
// broker's GET /v1/broker answers, asked once — and a broker answering a
// key the gate was not given gets no request at all.
func TestGateNamesItsBroker(t *testing.T) {
	ctx := context.Background()
	bw := newBrokerWorld(t)
	other := filepath.Join(bw.dir, "other.pub")
	third := filepath.Join(bw.dir, "third.pub")
	for path, label := range map[string]string{other: "another broker", third: "a third broker"} {
		p, _ := spki.NewPublicKey(testKey(label).Public())
		os.WriteFile(path, spki.Advanced(p.Sexp()), 0o644)
	}
	for _, c := range []struct {
		name string
		keys []string
		ok   bool
	}{
		{"one key", []string{bw.brokerPub}, true},
		{"several keys", []string{other, bw.brokerPub}, true},
		{"not among them", []string{other, third}, false},
	} {
		g := bw.gate(t, "offline", filepath.Join(bw.dir, "secret-"+strings.ReplaceAll(c.name, " ", "-")))
		if g.stopRedeem != nil {
			g.stopRedeem() // its start-up check reads the broker keys changed below
		}
		g.BrokerKeys, g.brokers, g.aud = c.keys, nil, &audience{}
		for _, p := range c.keys {
			k, err := loadPublicKey(p)
			if err != nil {
				t.Fatal(err)
			}
			g.brokers = append(g.brokers, k)
		}
		aud, err := g.brokerAudience(ctx)
		if c.ok != (err == nil) || c.ok && aud != bw.b.PublicKey().Hash() {
			t.Errorf("%s: audience %v, %v", c.name, aud, err)
			continue
		}
		if !c.ok {
			if !strings.Contains(err.Error(), "none of this gate's broker_key") {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		// The broker takes the gate's signed request (and refuses the
		// empty batch for what it is).
		status, raw, err := g.brokerPost(ctx, "/v1/redeem", []byte(`{"items":[]}`), 4096)
		if err != nil || status != 400 || !strings.Contains(string(raw), "redemption_refused") {
			t.Errorf("%s: a signed request: %d %s %v", c.name, status, raw, err)
		}
	}
}
