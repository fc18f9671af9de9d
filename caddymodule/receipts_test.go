package caddymodule

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/tesla"
	"github.com/ecoupons/ecoupons/wallet"
	"go.step.sm/crypto/pemutil"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// receiptGate provisions a gate that issues receipts, on a fake clock.
func receiptGate(t *testing.T, w *world) (*Gate, *fakeClock, crypto.Signer) {
	return receiptGateOn(t, w, &fakeClock{t: time.Now().Truncate(time.Second)})
}

// receiptGateOn is receiptGate on a given clock (gates that must agree on
// the time share one).
func receiptGateOn(t *testing.T, w *world, clock *fakeClock) (*Gate, *fakeClock, crypto.Signer) {
	dir := t.TempDir()
	vendor := testKey("vendor")
	block, err := pemutil.Serialize(vendor)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "vendor.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &Gate{Vendor: "news.example", BrokerKeys: []string{w.brokerKeyFile}, Price: 1, LaneRate: -1,
		SecretFile: filepath.Join(dir, "secret"), StoreRaw: []byte(`{"backend":"memory"}`), VendorKey: keyFile}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := g.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Cleanup() })
	g.now = clock.now
	// Rebuild the receipt chain on the fake clock.
	g.receipts.now = clock.now
	if g.receipts.cur, err = g.receipts.newEpoch(); err != nil {
		t.Fatal(err)
	}

	return g, clock, vendor
}

// TestReceipts: paid responses carry TESLA receipts under a chain whose
// commitment the vendor signs; a client authenticates each receipt once
// its key is disclosed, and a forged receipt is rejected.
func TestReceipts(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g, clock, vendor := receiptGate(t, w)

	// The client fetches and checks the commitment.
	rec := serve(g, "GET", VendorPath, nil)
	if rec.Code != 200 {
		t.Fatalf("commitment: %d %s", rec.Code, rec.Body)
	}
	x, err := spki.Parse(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	com, err := coupons.ParseReceiptCommitment(x)
	if err != nil {
		t.Fatal(err)
	}
	vpub, _ := spki.NewPublicKey(vendor.Public())
	if !com.Key.Equal(vpub) || com.Vendor != "news.example" {
		t.Fatal("commitment names another key or vendor")
	}
	recv, err := tesla.NewReceiver(tesla.ReceiverConfig{Commitment: com.Commitment, Schedule: com.Schedule, MaxSkew: 0, MaxSteps: com.Intervals, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}

	c := newClient(t, nil, w.owner, 0)
	c.nonce = gateNonce(g)
	authenticated, rejected := 0, 0
	messages := map[string]bool{}
	for k := 0; k < 8; k++ {
		h := c.payment("GET", "/premium/x", 1)
		r := serve(g, "GET", "/premium/x", h)
		if r.Code != 200 {
			t.Fatalf("payment %d: %d %s", k, r.Code, r.Body)
		}
		rc, err := coupons.ParseReceipt(r.Header().Get(HeaderReceipt))
		if err != nil {
			t.Fatalf("receipt %d: %v (%q)", k, err, r.Header().Get(HeaderReceipt))
		}
		if rc.Commitment != com.ID() {
			t.Fatalf("receipt names commitment %s, fetched %s", rc.Commitment, com.ID())
		}
		var p coupons.Payment
		coupons.ParsePayment(h.Get("Authorization"), &p)
		d := (&coupons.Request{Method: "GET", Host: "localhost:9080", Path: "/premium/x", Lane: p.Lane, Index: p.Index, Nonce: c.nonce}).Digest()
		pkt := rc.Packet
		pkt.Message = coupons.ReceiptMessage(p.Lane, p.Index, 1, &d)
		if k == 3 {
			pkt.MAC[0] ^= 1 // a forged receipt
		}
		messages[string(pkt.Message)] = k != 3
		res, err := recv.Receive(pkt)
		if err != nil {
			t.Fatalf("receipt %d refused: %v", k, err)
		}
		for _, a := range res.Authenticated {
			if !messages[string(a.Message)] {
				t.Fatalf("a forged receipt was authenticated")
			}
			authenticated++
		}
		rejected += len(res.Rejected)
		clock.add(time.Second)
	}
	if authenticated < 4 || rejected != 1 {
		t.Fatalf("authenticated %d receipts, rejected %d (want ≥ 4 and 1)", authenticated, rejected)
	}
	_ = http.StatusOK
}

// TestWalletReceipts: the wallet keeps the receipts of its payments and
// the vendor's commitment, and checks them afterwards: those whose key was
// disclosed by a later response are authenticated, the newest are pending,
// and a receipt that does not match the payment it came with is rejected.
func TestWalletReceipts(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g, clock, _ := receiptGate(t, w)
	srv := gateServer(t, g)
	log := wallet.OpenReceiptLog(filepath.Join(t.TempDir(), "receipts"))
	log.Now = clock.now
	tr, err := wallet.NewTransport(w.owner, 0)
	if err != nil {
		t.Fatal(err)
	}
	tr.Receipts = log
	c := &http.Client{Transport: tr}
	for k := 0; k < 8; k++ {
		resp, err := c.Get(srv.URL + "/premium/x")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("payment %d: %v %v", k, err, resp)
		}
		resp.Body.Close()
		clock.add(time.Second)
	}
	checked, err := log.Check(0)
	if err != nil {
		t.Fatal(err)
	}
	count := func(cs []wallet.CheckedReceipt) map[wallet.ReceiptStatus]int {
		m := map[wallet.ReceiptStatus]int{}
		for _, c := range cs {
			m[c.Status]++
		}
		return m
	}
	// Delay 2: the clock is 8 s past the first payment; the key the gate
	// discloses now (asked by Check) settles all but the last receipt.
	if got := count(checked); len(checked) != 8 || got[wallet.ReceiptAuthenticated] != 7 || got[wallet.ReceiptPending] != 1 {
		t.Fatalf("receipts: %v", got)
	}
	// A receipt kept with another request's digest (a vendor acknowledging
	// something else) is rejected.
	recs, _ := log.Records()
	forged := recs[2]
	forged.Digest = recs[3].Digest
	other := wallet.OpenReceiptLog(filepath.Join(t.TempDir(), "receipts2"))
	for k, r := range recs {
		if k == 2 {
			r = forged
		}
		if err := other.Record(r); err != nil {
			t.Fatal(err)
		}
	}
	checked, err = other.Check(0)
	if err != nil {
		t.Fatal(err)
	}
	if got := count(checked); got[wallet.ReceiptRejected] != 1 || checked[2].Status != wallet.ReceiptRejected {
		t.Fatalf("with a forged receipt: %v", got)
	}
	// A commitment signed by another key than the one the broker certifies
	// for the vendor proves nothing.
	impostor := wallet.OpenReceiptLog(filepath.Join(t.TempDir(), "receipts3"))
	impostor.VendorKey = func(string) (spki.KeyHash, error) { return spki.KeyHash{1}, nil }
	for _, r := range recs {
		impostor.Record(r)
	}
	checked, err = impostor.Check(0)
	if err != nil {
		t.Fatal(err)
	}
	if got := count(checked); got[wallet.ReceiptUnverifiable] != 8 || !strings.Contains(checked[0].Reason, "not by the key the broker certifies") {
		t.Fatalf("under an uncertified key: %v %q", got, checked[0].Reason)
	}
}

// TestReceiptChainsAlign: two gates sharing a secret (a fleet), started
// hours apart, issue receipts under the same chain and commitment; another
// secret gives another chain.
func TestReceiptChainsAlign(t *testing.T) {
	vendor := testKey("vendor")
	day := time.Date(2030, 5, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) func() time.Time { return func() time.Time { return day.Add(d) } }
	a, err := newReceipts(vendor, "news.example", []byte("shared secret"), time.Second, 2, at(1*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	b, err := newReceipts(vendor, "news.example", []byte("shared secret"), time.Second, 2, at(9*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if a.cur.id != b.cur.id || string(a.cur.doc) != string(b.cur.doc) {
		t.Fatal("two nodes of a fleet serve different receipt commitments")
	}
	c, err := newReceipts(vendor, "news.example", []byte("another secret"), time.Second, 2, at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	next, err := newReceipts(vendor, "news.example", []byte("shared secret"), time.Second, 2, at(25*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if c.cur.id == a.cur.id || next.cur.id == a.cur.id {
		t.Fatal("another secret or another day gave the same chain")
	}
}

// TestPastChainDisclosesItsLastKey: after a chain's period, the gate
// serves it (?c=) with its last key once the schedule allows, so the
// receipts of its last intervals can be checked too; not before.
func TestPastChainDisclosesItsLastKey(t *testing.T) {
	vendor := testKey("vendor")
	day := time.Date(2030, 5, 1, 0, 0, 0, 0, time.UTC)
	now := day.Add(23*time.Hour + 59*time.Minute + 59*time.Second)
	r, err := newReceipts(vendor, "news.example", []byte("secret"), time.Second, 2, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	old := r.cur
	if _, err := r.header([]byte("a receipt in the chain's last intervals")); err != nil {
		t.Fatal(err)
	}
	get := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		r.serve(rec, httptest.NewRequest("GET", VendorPath+"?c="+old.id, nil))
		return rec
	}
	now = now.Add(time.Second) // midnight: the next day's chain takes over
	if _, err := r.header([]byte("next")); err != nil || r.prev != old {
		t.Fatalf("rotation: %v", err)
	}
	if h := get().Header().Get(coupons.HeaderDisclosed); h != "" {
		t.Fatalf("the last key disclosed before its time: %q", h)
	}
	now = now.Add(time.Second) // interval n+d of the old chain: its last key may go
	h := get().Header().Get(coupons.HeaderDisclosed)
	n, k, ok := old.sender.Final(now)
	want := fmt.Sprintf("d=%d, k=%s", n, base64.RawURLEncoding.EncodeToString(k[:]))
	if !ok || h != want {
		t.Fatalf("past chain: %q, want %q", h, want)
	}
}
