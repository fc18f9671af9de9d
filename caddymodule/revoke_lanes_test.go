package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/internal/testredis"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// Revocation reaches open lanes (docs/PROTOCOL.md §13, §14 "Spent state"):
// a device whose grant or key is revoked stops paying on the lanes it
// already opened, at every gate of the store, across restarts.

// revGate provisions a gate on storeJSON whose revocation lists come from
// src (none when src is ""), fetched every every, kept beside secretFile.
// edit, if set, adjusts the configuration first. The returned stop cleans
// the gate up once (a restart); the test's end calls it too.
func revGate(t *testing.T, brokerKeyFile, secretFile, storeJSON, src string, every time.Duration, edit func(*Gate)) (*Gate, func()) {
	t.Helper()
	g := &Gate{Vendor: "news.example", BrokerKeys: []string{brokerKeyFile}, Price: 1, LaneRate: -1, OpensPerMinute: 1 << 20,
		SecretFile: secretFile, StoreRaw: []byte(storeJSON), RevocationsEvery: caddy.Duration(every)}
	if src != "" {
		g.Revocations = []string{src}
	}
	if edit != nil {
		edit(g)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := g.Provision(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { g.Cleanup(); cancel() }) }
	t.Cleanup(stop)
	return g, stop
}

// listSource serves the broker's signed revocation lists over HTTP.
type listSource struct {
	*listServer
	url string
}

// newListSource serves list number 1 (nothing revoked) signed by w's
// broker.
func newListSource(t *testing.T, w *world) *listSource {
	ls := &listSource{listServer: &listServer{}}
	srv := httptest.NewServer(ls.listServer)
	t.Cleanup(srv.Close)
	ls.url = srv.URL + "/v1/revocations"
	ls.publish(t, w, 1, nil, nil)
	return ls
}

// publish makes list number n, revoking certs and keys, the one served.
func (ls *listSource) publish(t *testing.T, w *world, n uint64, certs [][32]byte, keys []spki.KeyHash) {
	t.Helper()
	now := time.Now()
	list, err := delegation.SignRevocations(w.broker, n, now, now.Add(time.Hour), certs, keys)
	if err != nil {
		t.Fatal(err)
	}
	ls.set(spki.Canonical(list.Sexp()))
}

// counted is a next handler that counts the requests it serves: a
// refused payment must not reach it.
type counted struct{ n atomic.Int32 }

func (c *counted) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	c.n.Add(1)
	return okHandler.ServeHTTP(w, r)
}

// serveTo is serve with next as the next handler.
func serveTo(g *Gate, next caddyhttp.Handler, h http.Header) *httptest.ResponseRecorder {
	return serveWith(g, next, "GET", "/premium/x", h, nil)
}

func mustPay(t *testing.T, g *Gate, c *client, n int, who string) {
	t.Helper()
	for k := 0; k < n; k++ {
		if rec := payOn(t, g, c); rec.Code != 200 {
			t.Fatalf("%s, payment %d: %d %s", who, k+1, rec.Code, rec.Body)
		}
	}
}

// wantRevoked checks that a refusal is 402 revoked with a reason that
// says what the owner can do.
func wantRevoked(t *testing.T, rec *httptest.ResponseRecorder, who string) {
	t.Helper()
	if rec.Code != 402 || errorCode(t, rec.Body.String()) != "revoked" {
		t.Fatalf("%s: got %d %s, want 402 revoked", who, rec.Code, rec.Body)
	}
	if body := rec.Body.String(); !strings.Contains(body, "owner") || !strings.Contains(body, "no coupon") {
		t.Errorf("%s: the reason does not say what happened and what the owner can do: %s", who, body)
	}
	if rec.Header().Get(HeaderBalance) != "" {
		t.Errorf("%s: a refused payment reports a balance", who)
	}
}

// laneAt reads lane s of h's book from g's store.
func laneAt(t *testing.T, g *Gate, h *delegation.Holder, s uint32) store.Record {
	t.Helper()
	r, err := g.store.Get(context.Background(), coupons.LaneID{Book: h.Book.Book.ID(), Lane: s})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func keyHash(label string) spki.KeyHash {
	k, _ := spki.NewPublicKey(testKey(label).Public())
	return k.Hash()
}

func boltStoreJSON(path string) string { return fmt.Sprintf(`{"backend":"bolt","path":%q}`, path) }

// TestRevokedDeviceOpenLaneRefusedOffline: a phone with a grant opens a
// lane at an offline gate and pays; the owner revokes the grant (the
// broker's new list names it) and a tablet's key; once the gate installs
// the list, the phone's next payment on its open lane is refused 402
// revoked, before any coupon is accepted (the store's position does not
// move, the upstream is not called), and the lane is marked in the store.
// The tablet's open lane (revoked by key) is refused the same way; the
// owner's own lane and a third device's keep paying.
func TestRevokedDeviceOpenLaneRefusedOffline(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	ls := newListSource(t, w)
	dir := t.TempDir()
	g, _ := revGate(t, w.brokerKeyFile, filepath.Join(dir, "secret"), boltStoreJSON(filepath.Join(dir, "spent.db")), ls.url, time.Hour, nil)

	phone := grantDevice(t, "phone", w.owner, 0, 0, delegation.GrantOptions{})
	tablet := grantDevice(t, "tablet", w.owner, 1, 1, delegation.GrantOptions{})
	card := grantDevice(t, "card", w.owner, 2, 2, delegation.GrantOptions{})
	cp, ct, cc, co := newClient(t, nil, phone, 0), newClient(t, nil, tablet, 1), newClient(t, nil, card, 2), newClient(t, nil, w.owner, 3)
	mustPay(t, g, cp, 3, "phone before the revocation")
	mustPay(t, g, ct, 2, "tablet before the revocation")
	mustPay(t, g, cc, 1, "card before the revocation")
	mustPay(t, g, co, 1, "owner before the revocation")
	if r := laneAt(t, g, phone, 0); len(r.Meta.Certs) != 3 || len(r.Meta.Keys) != 2 || r.Meta.Revoked {
		t.Fatalf("the phone's lane keeps its principals: %d certificates, %d keys, revoked %v", len(r.Meta.Certs), len(r.Meta.Keys), r.Meta.Revoked)
	}
	marked := promtest.ToFloat64(gateMetrics.revokedLanes.WithLabelValues("news.example"))

	ls.publish(t, w, 2, [][32]byte{phone.Chain[0].Cert.Hash()}, []spki.KeyHash{keyHash("tablet")})
	if err := g.revoked.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	next := &counted{}
	rec := serveTo(g, next, cp.payment("GET", "/premium/x", 1))
	wantRevoked(t, rec, "the phone's open lane after its grant was revoked")
	if next.n.Load() != 0 {
		t.Fatal("the refused payment reached the upstream")
	}
	if r := laneAt(t, g, phone, 0); r.State.Last != 3 || r.Spent != 3 || r.Credit != 0 || !r.Meta.Revoked {
		t.Fatalf("the phone's lane after the refusal: last %d, spent %d, credit %d, revoked %v; want 3, 3, 0, marked",
			r.State.Last, r.Spent, r.Credit, r.Meta.Revoked)
	}
	wantRevoked(t, serveTo(g, next, cp.payment("GET", "/premium/x", 1)), "the phone again")
	wantRevoked(t, payOn(t, g, ct), "the tablet, whose key was revoked")
	if r := laneAt(t, g, tablet, 1); r.State.Last != 2 || !r.Meta.Revoked {
		t.Fatalf("the tablet's lane: last %d, revoked %v", r.State.Last, r.Meta.Revoked)
	}
	if next.n.Load() != 0 {
		t.Fatal("a refused payment reached the upstream")
	}
	mustPay(t, g, cc, 2, "the card after the phone's revocation")
	mustPay(t, g, co, 2, "the owner after the phone's revocation")
	if got := promtest.ToFloat64(gateMetrics.revokedLanes.WithLabelValues("news.example")) - marked; got != 2 {
		t.Errorf("lanes marked revoked: %v, want 2", got)
	}
	// Nothing the phone paid after the revocation is redeemable.
	pend, err := g.store.Pending(context.Background(), time.Now(), 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pend {
		if p.ID.Lane == 0 && p.Index != 3 {
			t.Fatalf("the phone's lane is pending up to %d, want 3", p.Index)
		}
	}
}

// TestRevokedDeviceOpenLaneRefusedAfterRestart: the same across a restart
// of the gate on its bolt file. Lane 0 was marked before the restart;
// lane 1 was paid before the list arrived and not since, so only the
// restarted gate, loading it from its store, finds it revoked. A gate on
// the same file with no revocation list at all honours the marks.
func TestRevokedDeviceOpenLaneRefusedAfterRestart(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	ls := newListSource(t, w)
	dir := t.TempDir()
	secret, db := filepath.Join(dir, "secret"), boltStoreJSON(filepath.Join(dir, "spent.db"))
	g, stop := revGate(t, w.brokerKeyFile, secret, db, ls.url, time.Hour, nil)
	phone := grantDevice(t, "phone", w.owner, 0, 1, delegation.GrantOptions{})
	c0, c1, co := newClient(t, nil, phone, 0), newClient(t, nil, phone, 1), newClient(t, nil, w.owner, 3)
	mustPay(t, g, c0, 2, "phone, lane 0")
	mustPay(t, g, c1, 2, "phone, lane 1")
	mustPay(t, g, co, 1, "owner")

	ls.publish(t, w, 2, [][32]byte{phone.Chain[0].Cert.Hash()}, nil)
	if err := g.revoked.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, payOn(t, g, c0), "phone, lane 0, before the restart")
	stop()

	// The restarted gate: same files, so the same kept list; its cache is
	// empty. The source now fails, so only the kept list and the store
	// decide.
	ls.set(nil)
	g2, stop2 := revGate(t, w.brokerKeyFile, secret, db, ls.url, time.Hour, nil)
	wantRevoked(t, payOn(t, g2, c0), "phone, lane 0, after the restart")
	wantRevoked(t, payOn(t, g2, c1), "phone, lane 1, first seen after the restart")
	for s, want := range map[uint32]uint32{0: 2, 1: 2} {
		if r := laneAt(t, g2, phone, s); r.State.Last != want || !r.Meta.Revoked {
			t.Fatalf("lane %d after the restart: last %d, revoked %v", s, r.State.Last, r.Meta.Revoked)
		}
	}
	mustPay(t, g2, co, 1, "owner after the restart")
	stop2()

	// A gate on the same file configured with no list: the marks alone.
	g3, _ := revGate(t, w.brokerKeyFile, filepath.Join(t.TempDir(), "secret"), db, "", 0, nil)
	wantRevoked(t, payOn(t, g3, c0), "phone, lane 0, at a gate without lists")
	wantRevoked(t, payOn(t, g3, c1), "phone, lane 1, at a gate without lists")
	c0.opened = false // even with the lane's open document again
	c0.nonce = gateNonce(g3)
	wantRevoked(t, payOn(t, g3, c0), "phone, lane 0, reopened at a gate without lists")
	mustPay(t, g3, co, 1, "owner at a gate without lists")
}

// TestRevokedDeviceOpenLaneRefusedAcrossFleet: gates sharing one Redis.
// Gate A installs the list that revokes the phone's grant and refuses the
// phone's lane 0, marking it. Gate B has not installed that list yet and
// holds lane 0 in its cache: it refuses the lane too (the store refuses
// its write, then B honours the mark), and so does B after losing its
// cache. Gate C has installed the list but never saw lane 1, which the
// phone opened and paid at B: C checks the lane it loads from the store,
// marks it, and B, still on the old list, refuses it from then on.
func TestRevokedDeviceOpenLaneRefusedAcrossFleet(t *testing.T) {
	url := testredis.Start(t)
	w := newWorld(t, "news.example", t0Later())
	redisJSON := fmt.Sprintf(`{"backend":"redis","url":%q}`, url)
	lsA, lsB, lsC := newListSource(t, w), newListSource(t, w), newListSource(t, w)
	gA, _ := revGate(t, w.brokerKeyFile, filepath.Join(t.TempDir(), "secret"), redisJSON, lsA.url, time.Hour, nil)
	gB, _ := revGate(t, w.brokerKeyFile, filepath.Join(t.TempDir(), "secret"), redisJSON, lsB.url, time.Hour, nil)
	phone := grantDevice(t, "phone", w.owner, 0, 1, delegation.GrantOptions{})
	revokePhone := [][32]byte{phone.Chain[0].Cert.Hash()}
	lsC.publish(t, w, 2, revokePhone, nil)
	gC, _ := revGate(t, w.brokerKeyFile, filepath.Join(t.TempDir(), "secret"), redisJSON, lsC.url, time.Hour, nil)

	c0, c1, co := newClient(t, nil, phone, 0), newClient(t, nil, phone, 1), newClient(t, nil, w.owner, 3)
	mustPay(t, gA, c0, 2, "phone at A")
	mustPay(t, gB, c0, 2, "phone at B") // B caches lane 0
	mustPay(t, gB, c1, 2, "phone, lane 1, at B")
	mustPay(t, gA, co, 1, "owner at A")

	lsA.publish(t, w, 2, revokePhone, nil)
	if err := gA.revoked.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, payOn(t, gA, c0), "phone at A, which installed the list")
	// B's list does not name the phone; its cache holds lane 0 unmarked.
	if gB.revoked.CertRevoked(revokePhone[0]) {
		t.Fatal("B has the new list")
	}
	next := &counted{}
	wantRevoked(t, serveTo(gB, next, c0.payment("GET", "/premium/x", 1)), "phone at B (older list, lane cached)")
	gB.core.ClearCache()
	wantRevoked(t, serveTo(gB, next, c0.payment("GET", "/premium/x", 1)), "phone at B (older list, cache lost)")
	if r := laneAt(t, gB, phone, 0); r.State.Last != 4 || !r.Meta.Revoked {
		t.Fatalf("lane 0: last %d, revoked %v; want 4, marked", r.State.Last, r.Meta.Revoked)
	}
	// C: the new list, lane 1 never in its cache.
	wantRevoked(t, serveTo(gC, next, c1.payment("GET", "/premium/x", 1)), "phone, lane 1, at C (new list, never cached)")
	wantRevoked(t, serveTo(gB, next, c1.payment("GET", "/premium/x", 1)), "phone, lane 1, at B after C marked it")
	if r := laneAt(t, gC, phone, 1); r.State.Last != 2 || !r.Meta.Revoked {
		t.Fatalf("lane 1: last %d, revoked %v; want 2, marked", r.State.Last, r.Meta.Revoked)
	}
	if next.n.Load() != 0 {
		t.Fatal("a refused payment reached the upstream")
	}
	mustPay(t, gB, co, 1, "owner at B")
	mustPay(t, gC, co, 1, "owner at C")
}

// TestRevocationBoundOnOpenLane measures the bound of docs/PROTOCOL.md
// §13: a device keeps paying on its open lane, every 25 ms, at a gate
// polling a real broker's list every second (revocations_every 1s), in
// each validation mode. From the owner's revocation at the broker (which
// issues the new list at the next fetch: no issue delay) to the device's
// first refusal must take at most revocations_every, plus slack for a
// loaded machine; after it, nothing more is accepted. The revocation comes
// milliseconds after the gate's first fetch (at provisioning): the worst
// phase, the next poll a whole revocations_every later.
func TestRevocationBoundOnOpenLane(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	const every, slack = time.Second, time.Second
	for _, mode := range []string{ModeOffline, ModeSemi, ModeOnline} {
		t.Run(mode, func(t *testing.T) {
			bw := newBrokerWorld(t)
			g, _ := revGate(t, bw.brokerPub, filepath.Join(bw.dir, "secret"), `{"backend":"memory"}`, bw.srv.URL+"/v1/revocations", every,
				func(g *Gate) {
					g.Mode, g.Broker, g.VendorKey, g.RedeemEvery = mode, bw.srv.URL, bw.vendorPEM, caddy.Duration(time.Hour)
				})
			phone := grantDevice(t, "phone", bw.owner, 0, 0, delegation.GrantOptions{})
			c := newClient(t, nil, phone, 0)
			mustPay(t, g, c, 2, "phone before the revocation")
			if err := bw.b.Revoke(context.Background(), bw.alice.Hash(), phone.Chain[0], false); err != nil {
				t.Fatal(err)
			}
			revoked := time.Now()
			var stopped time.Duration
			after := 0
			for k := 0; ; k++ {
				rec := payOn(t, g, c)
				if rec.Code == 200 {
					if stopped > 0 {
						t.Fatalf("a payment accepted %v after the first refusal", time.Since(revoked)-stopped)
					}
					after++
				} else {
					wantRevoked(t, rec, "phone after the revocation")
					if stopped == 0 {
						stopped = time.Since(revoked)
					}
					if k > after+3 { // a few more, all refused
						break
					}
				}
				if time.Since(revoked) > every+slack+2*time.Second {
					t.Fatalf("still paying %v after the revocation (%d payments accepted)", time.Since(revoked), after)
				}
				time.Sleep(25 * time.Millisecond)
			}
			t.Logf("mode %s: payments stopped %v after the revocation (revocations_every %v); %d payments accepted meanwhile",
				mode, stopped.Round(time.Millisecond), every, after)
			if stopped > every+slack {
				t.Fatalf("payments stopped %v after the revocation, beyond revocations_every %v + %v", stopped, every, slack)
			}
		})
	}
}

// TestLaneWithoutPrincipalsReopened: a lane stored before records kept
// principals (version 2) cannot be checked against revocation lists, so a
// gate that checks them takes no payment on it until it is opened again
// (402 lane_not_open, which wallets answer by reopening from their
// cursor); the open names the lane's principals, keeping its position. A
// gate with no lists takes payments on it as before.
func TestLaneWithoutPrincipalsReopened(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	ls := newListSource(t, w)
	db := boltStoreJSON(filepath.Join(t.TempDir(), "spent.db"))
	g, _ := revGate(t, w.brokerKeyFile, filepath.Join(t.TempDir(), "secret"), db, ls.url, time.Hour, nil)
	plain, _ := revGate(t, w.brokerKeyFile, filepath.Join(t.TempDir(), "secret"), db, "", 0, nil)
	phone := grantDevice(t, "phone", w.owner, 0, 0, delegation.GrantOptions{})
	c := newClient(t, nil, phone, 0)
	mustPay(t, g, c, 2, "phone")
	ctx := context.Background()
	rec := laneAt(t, g, phone, 0)
	old := rec
	old.Meta.Certs, old.Meta.Keys = nil, nil // as a version 2 record reads
	if err := g.store.Reopen(ctx, c.lane, rec.State.Last, rec.Credit, old); err != nil {
		t.Fatal(err)
	}
	g.core.ClearCache()
	plain.core.ClearCache()
	mustPay(t, plain, c, 1, "phone at a gate without lists")
	refused := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1))
	wantRefusal(t, refused, 402, "lane_not_open")
	if !strings.Contains(refused.Body.String(), "delegation chains") {
		t.Errorf("the reason does not say why: %s", refused.Body)
	}
	c.nonce, c.opened = gateNonce(g), false
	mustPay(t, g, c, 1, "phone reopening its lane")
	got := laneAt(t, g, phone, 0)
	if !got.Meta.SamePrincipals(rec.Meta.Certs, rec.Meta.Keys) || got.State.Last != 5 {
		t.Fatalf("after the reopen: %d certificates, %d keys, at %d; want %d, %d, at 5", len(got.Meta.Certs), len(got.Meta.Keys),
			got.State.Last, len(rec.Meta.Certs), len(rec.Meta.Keys))
	}
	// And now the lane answers to revocation.
	ls.publish(t, w, 2, [][32]byte{phone.Chain[0].Cert.Hash()}, nil)
	if err := g.revoked.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)), "phone after the revocation")
}

// TestTakeoverClearsRevokedMark: the store's mark concerns the chain that
// opened the lane. When the lane's principals are replaced by a chain
// that is not revoked (what a takeover by the owner's own key does: the
// same position, another spender and nonce, the owner's principals), the
// mark is gone, and a gate whose cache still holds the lane as marked
// reads it again and takes payments on it.
func TestTakeoverClearsRevokedMark(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	ls := newListSource(t, w)
	g, _ := revGate(t, w.brokerKeyFile, filepath.Join(t.TempDir(), "secret"), `{"backend":"memory"}`, ls.url, time.Hour, nil)
	phone := grantDevice(t, "phone", w.owner, 0, 0, delegation.GrantOptions{})
	c := newClient(t, nil, phone, 0)
	mustPay(t, g, c, 2, "phone")
	ls.publish(t, w, 2, [][32]byte{phone.Chain[0].Cert.Hash()}, nil)
	if err := g.revoked.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)), "phone after the revocation")
	marked := laneAt(t, g, phone, 0)
	if !marked.Meta.Revoked {
		t.Fatal("not marked")
	}
	// The takeover's store write (the gate's part of it is another
	// change): the owner's principals, no mark, the position kept. The
	// spender and nonce stay the phone's here, so that this test's client
	// can go on paying.
	ctx := context.Background()
	taken := marked
	taken.Meta.Revoked = false
	taken.Meta.Certs = marked.Meta.Certs[:1]            // the user certificate
	taken.Meta.Keys = []spki.KeyHash{marked.Meta.Owner} // the owner's key
	if err := g.store.Reopen(ctx, c.lane, marked.State.Last, marked.Credit, taken); err != nil {
		t.Fatalf("takeover write: %v", err)
	}
	if rec := serve(g, "GET", "/premium/x", c.payment("GET", "/premium/x", 1)); rec.Code != 200 {
		t.Fatalf("payment after the takeover, at the gate that marked the lane: %d %s", rec.Code, rec.Body)
	}
	if got := laneAt(t, g, phone, 0); got.Meta.Revoked || got.State.Last != 4 {
		t.Fatalf("after the takeover: revoked %v, at %d", got.Meta.Revoked, got.State.Last)
	}
}
