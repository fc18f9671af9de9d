package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
)

// listServer serves the broker's current signed revocation list.
type listServer struct {
	mu   sync.Mutex
	body []byte
}

func (l *listServer) set(b []byte) { l.mu.Lock(); l.body = b; l.mu.Unlock() }
func (l *listServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.body == nil {
		http.Error(w, "no list", 503)
		return
	}
	w.Write(l.body)
}

// TestGateRefusesRevokedGrant: the owner revokes the phone's grant; once
// the gate has fetched the broker's new list, the phone cannot open another
// lane, while the smart card keeps paying.
func TestGateRefusesRevokedGrant(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	ls := &listServer{}
	srv := httptest.NewServer(ls)
	defer srv.Close()
	now := time.Now()
	list1, _ := delegation.SignRevocations(w.broker, 1, now, now.Add(time.Hour), nil, nil)
	ls.set(spki.Canonical(list1.Sexp()))

	g := &Gate{Vendor: "news.example", BrokerKeys: []string{w.brokerKeyFile}, Price: 1, LaneRate: -1,
		SecretFile: filepath.Join(t.TempDir(), "secret"), StoreRaw: []byte(`{"backend":"memory"}`),
		Revocations: []string{srv.URL + "/v1/revocations"}, RevocationsEvery: caddy.Duration(time.Hour)}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := g.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer g.Cleanup()
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}

	phone := grantDevice(t, "phone", w.owner, 0, 1, delegation.GrantOptions{})
	card := grantDevice(t, "card", w.owner, 2, 3, delegation.GrantOptions{})
	nonce := gateNonce(g)
	pay := func(h *delegation.Holder, lane uint32) *httptest.ResponseRecorder {
		c := newClient(t, nil, h, lane)
		c.nonce = nonce
		return serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1))
	}
	if rec := pay(phone, 0); rec.Code != 200 {
		t.Fatalf("phone before revocation: %d %s", rec.Code, rec.Body)
	}
	if rec := pay(card, 2); rec.Code != 200 {
		t.Fatalf("card before revocation: %d %s", rec.Code, rec.Body)
	}

	// The broker publishes list 2 naming the phone's grant.
	list2, _ := delegation.SignRevocations(w.broker, 2, now, now.Add(time.Hour), [][32]byte{phone.Chain[0].Cert.Hash()}, nil)
	ls.set(spki.Canonical(list2.Sexp()))
	if err := g.revoked.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec := pay(phone, 1); rec.Code != 402 || !strings.Contains(rec.Body.String(), `"revoked"`) {
		t.Fatalf("revoked phone opening a lane: %d %s", rec.Code, rec.Body)
	}
	if rec := pay(card, 3); rec.Code != 200 {
		t.Fatalf("card after the phone's revocation: %d %s", rec.Code, rec.Body)
	}

	// A rolled-back list (number 1 again) is refused and changes nothing.
	ls.set(spki.Canonical(list1.Sexp()))
	if err := g.revoked.refresh(context.Background()); err == nil {
		t.Fatal("rollback accepted")
	}
	if rec := pay(phone, 1); rec.Code != 402 {
		t.Fatalf("phone after a rollback attempt: %d", rec.Code)
	}
	// A restarted gate (same secret_file directory) still has list 2, and
	// refuses list 1, which its source keeps serving.
	g2 := &Gate{Vendor: "news.example", BrokerKeys: []string{w.brokerKeyFile}, Price: 1, LaneRate: -1,
		SecretFile: g.SecretFile, StoreRaw: []byte(`{"backend":"memory"}`),
		Revocations: []string{srv.URL + "/v1/revocations"}, RevocationsEvery: caddy.Duration(time.Hour)}
	ctx2, cancel2 := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel2()
	if err := g2.Provision(ctx2); err != nil {
		t.Fatal(err)
	}
	defer g2.Cleanup()
	nonce2 := gateNonce(g2)
	cp := newClient(t, nil, phone, 1)
	cp.nonce = nonce2
	if rec := serve(g2, "GET", "/premium/x", cp.payment("GET", "/premium/x", 1)); rec.Code != 402 || !strings.Contains(rec.Body.String(), `"revoked"`) {
		t.Fatalf("the revoked phone at a restarted gate offered the older list: %d %s", rec.Code, rec.Body)
	}

	// A stale list stops lane opens altogether (503), never silently.
	g.now = func() time.Time { return now.Add(2 * time.Hour) }
	c := newClient(t, nil, card, 3)
	c.nonce = gateNonce(g)
	c.cursor.Next()
	if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("an open lane keeps working with a stale list: %d %s", rec.Code, rec.Body)
	}
	c2 := newClient(t, nil, w.owner, 1)
	c2.nonce = c.nonce
	if rec := serve(g, "GET", "/premium/x", c2.payment("GET", "/premium/x", 1)); rec.Code != 503 || !strings.Contains(rec.Body.String(), "revocations_stale") {
		t.Fatalf("opening with a stale list: %d %s", rec.Code, rec.Body)
	}
}
