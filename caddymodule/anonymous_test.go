package caddymodule

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ecoupons/ecoupons/blindfund"
	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
)

// anonWorld is a brokerWorld with a denomination of 0.192 EUR (the face
// value of its test books: 3 lanes of 64 coupons of 0.001 EUR).
type anonWorld struct {
	*brokerWorld
	denom *broker.Denomination
	acct  string
}

const anonFace = 192_000_000

func newAnonWorld(t *testing.T) *anonWorld { return newAnonWorldOn(t, "") }

// newAnonWorldOn is newAnonWorld with the broker's database at pgURL
// (newBrokerWorldOn).
func newAnonWorldOn(t *testing.T, pgURL string) *anonWorld {
	bw := newBrokerWorldOn(t, pgURL)
	d, err := bw.b.NewDenomination(context.Background(), anonFace, "EUR", time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	aw := &anonWorld{brokerWorld: bw, denom: d, acct: broker.UserAccount(bw.alice.Hash(), "EUR")}
	if err := bw.b.TopUp(context.Background(), aw.acct, 5*coupons.NanosPerUnit, "anonymous books"); err != nil {
		t.Fatal(err)
	}
	return aw
}

// anonBook makes a book of lanes × 64 coupons of 0.001 EUR expiring at
// notAfter, owned by a fresh key, and has alice's account pay the broker
// to blind-sign it under the world's denomination (the broker sees only
// the blinded message). The holder carries the proof instead of a book
// certificate, and no user certificate.
func (aw *anonWorld) anonBook(t *testing.T, lanes uint32, notAfter time.Time, issue string) (*delegation.Holder, *blindfund.Proof) {
	t.Helper()
	return aw.anonBookFrom(t, aw.alice.Hash(), aw.acct, lanes, notAfter, issue)
}

// anonBookFrom is anonBook paid by account, whose owner's key is payer.
func (aw *anonWorld) anonBookFrom(t *testing.T, payer spki.KeyHash, account string, lanes uint32, notAfter time.Time, issue string) (*delegation.Holder, *blindfund.Proof) {
	t.Helper()
	_, fresh, _ := ed25519.GenerateKey(rand.Reader)
	fp, _ := spki.NewPublicKey(fresh.Public())
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: aw.b.PublicKey().Hash(), Owner: fp.Hash(),
		Lanes: lanes, Length: 64, Currency: "EUR", Unit: 1_000_000, NotAfter: notAfter}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := bk.Sign(fresh)
	if err != nil {
		t.Fatal(err)
	}
	proof := aw.blindSign(t, payer, account, bk.ID(), issue)
	h, err := delegation.NewOwner(sb, nil, sec, anchors, fresh)
	if err != nil {
		t.Fatal(err)
	}
	h.Blind = proof.Sexp()
	return h, proof
}

func (aw *anonWorld) blindSign(t *testing.T, payer spki.KeyHash, account string, book [32]byte, issue string) *blindfund.Proof {
	req, blinded, err := blindfund.Blind(aw.denom.Denomination, book, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := aw.b.IssueAnonymous(context.Background(), payer, account, aw.denom.ID(), blinded, issue)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := req.Finish(sig)
	if err != nil {
		t.Fatal(err)
	}
	return proof
}

func (aw *anonWorld) balance(t *testing.T, account string) int64 {
	a, err := aw.db.Account(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	return a.Balance
}

// TestAnonymousBookInEveryMode: an anonymous book (a fresh owner key, the
// broker's blind signature for funding, no user certificate) opens and
// pays at offline, semi and online gates, which learn the denomination
// from the broker's published list; its first open registers it at the
// broker, moving its face value from the anonymous pool to its escrow;
// the gate redeems it and the vendor is paid from it. The gate's store
// keeps no key of alice's.
func TestAnonymousBookInEveryMode(t *testing.T) {
	ctx := context.Background()
	aw := newAnonWorld(t)
	h, _ := aw.anonBook(t, 3, time.Now().Add(24*time.Hour), "i-1")
	if got := aw.balance(t, "anon:EUR"); got != anonFace {
		t.Fatalf("the pool holds %d after one issuance", got)
	}
	for lane, mode := range []string{ModeOffline, ModeSemi, ModeOnline} {
		g := aw.gate(t, mode, filepath.Join(aw.dir, mode+".secret"))
		c := newClient(t, nil, h, uint32(lane))
		for k := 0; k < 2; k++ {
			if rec := payOn(t, g, c); rec.Code != 200 {
				t.Fatalf("mode %s, payment %d: %d %s", mode, k, rec.Code, rec.Body)
			}
		}
		if n, err := g.redeemOnce(ctx); err != nil || n != 1 {
			t.Fatalf("mode %s: redeemed %d lanes: %v", mode, n, err)
		}
		// No lane record of the gate holds a key or certificate of alice's.
		id := coupons.LaneID{Book: h.Book.Book.ID(), Lane: uint32(lane)}
		rec, err := g.store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range append(rec.Meta.Keys, rec.Meta.Owner, rec.Meta.Spender) {
			if k == aw.alice.Hash() {
				t.Fatalf("mode %s: the vendor's record names alice's key", mode)
			}
		}
		for _, c := range rec.Meta.Certs {
			if c == aw.user.Cert.Hash() {
				t.Fatalf("mode %s: the vendor's record names alice's user certificate", mode)
			}
		}
	}
	// Six coupons paid to the vendor; the pool gave the book's face value
	// to its escrow, which paid them.
	if got := aw.balance(t, "vendor:news.example:EUR"); got != 6*1_000_000 {
		t.Fatalf("vendor paid %d", got)
	}
	if got := aw.balance(t, "anon:EUR"); got != 0 {
		t.Fatalf("the pool holds %d after the book was registered", got)
	}
}

// TestAnonymousBookRefusals: the attacks on a blind funding proof, at a
// gate of each mode, each refused with its reason code before any coupon
// is accepted.
func TestAnonymousBookRefusals(t *testing.T) {
	aw := newAnonWorld(t)
	later := time.Now().Add(24 * time.Hour)
	genuine, proof := aw.anonBook(t, 3, later, "i-1")

	// Altered commitment: another book (here, another of the reader's,
	// of the same face value) shown with the genuine book's proof.
	altered, _ := aw.anonBook(t, 3, later, "i-2")
	altered.Blind = proof.Sexp()
	// Wrong denomination: a book of 4 lanes (0.256 EUR) signed blindly
	// under the 0.192 EUR denomination (the broker cannot see it).
	bigger, _ := aw.anonBook(t, 4, later, "i-3")
	// Expired signing key: a book that outlives its denomination's key,
	// to be spent after the key's period.
	outliving, _ := aw.anonBook(t, 3, aw.denom.NotAfter.Add(24*time.Hour), "i-4")
	// Unknown denomination: a key the reader made, posing as the broker's.
	fake, fakeKey, err := blindfund.NewDenomination(rand.Reader, anonFace, "EUR", time.Now().Add(-time.Hour), later.Add(time.Hour), 2048)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := aw.anonBook(t, 3, later, "i-5")
	req, blinded, _ := blindfund.Blind(fake, forged.Book.Book.ID(), rand.Reader)
	bs, _ := blindfund.Sign(fakeKey, blinded)
	fp, err := req.Finish(bs)
	if err != nil {
		t.Fatal(err)
	}
	forged.Blind = fp.Sexp()
	// A proof with alice's user certificate beside it (which would name
	// her): refused as malformed, never taken.
	withUser := func(o *coupons.Open) { o.User = aw.user }

	for _, mode := range []string{ModeOffline, ModeSemi, ModeOnline} {
		g := aw.gate(t, mode, filepath.Join(aw.dir, mode+".secret"))
		for _, a := range []struct {
			attack string
			h      *delegation.Holder
			edit   func(*coupons.Open)
			status int
			code   string
		}{
			{"AlteredCommitment", altered, nil, 402, coupons.CodeBadBlindSignature},
			{"WrongDenomination", bigger, nil, 402, coupons.CodeWrongDenomination},
			{"ExpiredSigningKey", outliving, nil, 402, coupons.CodeDenominationExpired},
			{"ForgedDenomination", forged, nil, 402, coupons.CodeUnknownDenomination},
			{"ProofWithUserCertificate", genuine, withUser, 402, coupons.CodeBadOpen},
		} {
			t.Run(mode+"/"+a.attack, func(t *testing.T) {
				c := newClient(t, nil, a.h, 0)
				c.editOpen = a.edit
				wantRefusal(t, payOn(t, g, c), a.status, a.code)
			})
		}
	}
}

// TestAnonymousPortionPaysAtGate: delegation works unchanged with an
// anonymous book's fresh owner key: the owner grants a capped portion of
// a lane to a phone, which opens it (the grant carries the blind proof)
// and pays at the gate up to the portion's end, which the vendor
// redeems.
func TestAnonymousPortionPaysAtGate(t *testing.T) {
	aw := newAnonWorld(t)
	h, _ := aw.anonBook(t, 3, time.Now().Add(24*time.Hour), "i-1")
	g := aw.gate(t, ModeSemi, filepath.Join(aw.dir, "secret"))
	phone := grantDevice(t, "phone", h, 1, 1, delegation.GrantOptions{Cap: 5_000_000, NotAfter: time.Now().Add(time.Hour)})
	if phone.Blind == nil || phone.User != nil {
		t.Fatal("the phone's holder lacks the blind proof, or holds a user certificate")
	}
	c := newClient(t, nil, phone, 1)
	for k := 0; k < 5; k++ {
		if rec := payOn(t, g, c); rec.Code != 200 {
			t.Fatalf("the phone's payment %d: %d %s", k, rec.Code, rec.Body)
		}
	}
	if _, _, _, _, err := c.cursor.Next(); err == nil {
		t.Fatal("the phone holds more than its portion")
	}
	if n, err := g.redeemOnce(context.Background()); err != nil || n != 1 {
		t.Fatalf("redeemed %d lanes: %v", n, err)
	}
}

// TestWalletAnonymousBookPays: the wallet's Go API makes an anonymous
// book (a fresh owner key, stored with the book before anything is paid),
// blinds it for the broker, keeps the unblinded proof, lists it as an
// anonymous funded book, and pays a semi gate with it over HTTP. The
// request is the same after a "crash" (the broker answers the retried
// issuance with the same signature, debiting once).
func TestWalletAnonymousBookPays(t *testing.T) {
	aw := newAnonWorld(t)
	w, err := wallet.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w.Config.Broker, w.Config.BrokerKey = aw.srv.URL, string(spki.Advanced(aw.b.PublicKey().Sexp()))
	id, err := w.NewAnonymousBook(wallet.AnonymousParams{Vendor: "news.example", Lanes: 3, Length: 64, Unit: 1_000_000,
		NotAfter: time.Now().Add(24 * time.Hour), Denomination: aw.denom.Denomination}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.NewAnonymousBook(wallet.AnonymousParams{Vendor: "news.example", Lanes: 4, Length: 64, Unit: 1_000_000,
		NotAfter: time.Now().Add(24 * time.Hour), Denomination: aw.denom.Denomination}, nil); err == nil {
		t.Fatal("a book of another face value than its denomination's was made")
	}
	books, _ := w.Books()
	if len(books) != 1 || !books[0].Anonymous() || books[0].Funded() || books[0].Holder.Book.Book.Owner == w.PublicKey().Hash() {
		t.Fatalf("the stored anonymous book: %+v", books)
	}
	denom, blinded, issue, err := w.AnonymousRequest(id)
	if err != nil {
		t.Fatal(err)
	}
	before := aw.balance(t, aw.acct)
	sig, err := aw.b.IssueAnonymous(context.Background(), aw.alice.Hash(), aw.acct, denom, blinded, issue)
	if err != nil {
		t.Fatal(err)
	}
	_, again, issue2, _ := w.AnonymousRequest(id) // after a crash
	sig2, err := aw.b.IssueAnonymous(context.Background(), aw.alice.Hash(), aw.acct, denom, again, issue2)
	if err != nil || string(sig2) != string(sig) || before-aw.balance(t, aw.acct) != anonFace {
		t.Fatalf("the retried issuance: %v, debited %d", err, before-aw.balance(t, aw.acct))
	}
	if err := w.SaveBlindSignature(id, sig2); err != nil {
		t.Fatal(err)
	}
	entries, err := w.BooksFor("news.example")
	if err != nil || len(entries) != 1 || !entries[0].Funded() || !entries[0].Anonymous() || entries[0].Holder.User != nil {
		t.Fatalf("the funded anonymous book: %v %+v", err, entries)
	}
	g := aw.gate(t, ModeSemi, filepath.Join(aw.dir, "secret"))
	srv := gateServer(t, g)
	tr, err := wallet.NewTransport(entries[0].Holder)
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 3; k++ {
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/premium/a")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("payment %d: %v %v", k, err, resp)
		}
		resp.Body.Close()
	}
}

// TestAnonymousBookTheftEvidence: a coupon of an anonymous book spent by a
// thief (who did not know the next chain value) is found by the gate when
// the holder's next payment reveals it, sent with the lane's redemption,
// and recorded by the broker against the book, whose account is the
// anonymous pool: the broker's administrators see it, and it names no
// reader's account; the book's own key reads it (POST
// /v1/anonymous/thefts), no other key.
func TestAnonymousBookTheftEvidence(t *testing.T) {
	ctx := context.Background()
	aw := newAnonWorld(t)
	h, proof := aw.anonBook(t, 3, time.Now().Add(24*time.Hour), "i-1")
	g := aw.gate(t, ModeOffline, filepath.Join(aw.dir, "secret"))
	c := newClient(t, nil, h, 1)
	for k := 0; k < 2; k++ {
		if rec := payOn(t, g, c); rec.Code != 200 {
			t.Fatalf("payment %d: %d %s", k, rec.Code, rec.Body)
		}
	}
	stolen := c.payment("GET", "/premium/x", 1)
	stolen.Set("Authorization", regexp.MustCompile(`m=[A-Za-z0-9_-]+`).ReplaceAllString(stolen.Get("Authorization"), "m=AAAAAAAAAAAAAAAAAAAAAA"))
	if rec := serve(g, "GET", "/premium/x", stolen); rec.Code != 200 {
		t.Fatalf("the stolen coupon: %d %s", rec.Code, rec.Body)
	}
	if rec := payOn(t, g, c); rec.Code != 200 {
		t.Fatalf("the holder's next payment: %d %s", rec.Code, rec.Body)
	}
	if n, err := g.redeemOnce(ctx); err != nil || n != 1 {
		t.Fatalf("redemption with evidence: %d %v", n, err)
	}
	all, err := aw.b.AllThefts(ctx, 10)
	if err != nil || len(all) != 1 || all[0].Lane.Book != h.Book.Book.ID() || all[0].Index != 3 || all[0].Account != "anon:EUR" {
		t.Fatalf("thefts the broker recorded: %+v %v", all, err)
	}
	if mine, err := aw.b.Thefts(ctx, aw.alice.Hash()); err != nil || len(mine) != 0 {
		t.Fatalf("alice's thefts name the anonymous book: %+v %v", mine, err)
	}
	// The book's own key reads them, showing the book; no other key.
	if got, err := aw.b.AnonymousThefts(ctx, h.Book.Book.Owner, h.Book, proof); err != nil || len(got) != 1 || got[0].Index != 3 {
		t.Fatalf("the owner key's thefts: %+v %v", got, err)
	}
	if _, err := aw.b.AnonymousThefts(ctx, aw.alice.Hash(), h.Book, proof); err == nil {
		t.Fatal("another key read the anonymous book's thefts")
	}
}

// TestOfflineGateTakesAnonymousBookWhileBrokerDown: an offline gate that
// reads the denominations from a file opens an anonymous book and takes
// its payments while the broker is down: the book's registration is kept
// in a file (durable before the open is answered), and sent before the
// next redemption once the broker is back, which then pays the vendor.
// A semi gate, which must ask the broker at every open, answers 503.
func TestOfflineGateTakesAnonymousBookWhileBrokerDown(t *testing.T) {
	ctx := context.Background()
	aw := newAnonWorld(t)
	h, _ := aw.anonBook(t, 3, time.Now().Add(24*time.Hour), "i-1")
	var down atomic.Bool
	down.Store(true)
	api := &broker.API{Broker: aw.b}
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		api.ServeHTTP(w, r)
	}))
	defer flaky.Close()
	// The broker's published denominations, as a file.
	resp, err := http.Get(aw.srv.URL + "/v1/denominations")
	if err != nil {
		t.Fatal(err)
	}
	list, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	denoms := filepath.Join(aw.dir, "denominations.json")
	if err := os.WriteFile(denoms, list, 0o644); err != nil {
		t.Fatal(err)
	}
	gate := func(mode string) *Gate {
		g := &Gate{Vendor: "news.example", BrokerKeys: []string{aw.brokerPub}, Broker: flaky.URL, VendorKey: aw.vendorPEM, Price: 1, LaneRate: -1,
			Mode: mode, RedeemEvery: caddy.Duration(time.Hour), SecretFile: filepath.Join(aw.dir, mode+".secret"), StoreRaw: []byte(`{"backend":"memory"}`),
			Denominations: []string{denoms}}
		cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		if err := g.Provision(cctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Cleanup() })
		return g
	}
	semi := gate(ModeSemi)
	wantRefusal(t, payOn(t, semi, newClient(t, nil, h, 1)), 503, coupons.CodeBrokerUnavailable)

	g := gate(ModeOffline)
	c := newClient(t, nil, h, 0)
	for k := 0; k < 3; k++ {
		if rec := payOn(t, g, c); rec.Code != 200 {
			t.Fatalf("payment %d with the broker down: %d %s", k, rec.Code, rec.Body)
		}
	}
	pending, _ := filepath.Glob(filepath.Join(g.anonPendingDir(), "*.json"))
	if len(pending) != 1 {
		t.Fatalf("kept registrations: %v", pending)
	}
	if _, err := g.redeemOnce(ctx); err == nil {
		t.Fatal("a redemption while the broker is down succeeded")
	}
	g.anonHeld = new(sync.Map) // a restart: only the file remembers the book
	down.Store(false)
	if n, err := g.redeemOnce(ctx); err != nil || n != 1 {
		t.Fatalf("redeemed %d lanes once the broker is back: %v", n, err)
	}
	if got := aw.balance(t, "vendor:news.example:EUR"); got != 3*1_000_000 {
		t.Fatalf("vendor paid %d", got)
	}
	if pending, _ := filepath.Glob(filepath.Join(g.anonPendingDir(), "*.json")); len(pending) != 0 {
		t.Fatalf("registrations still kept after the broker took them: %v", pending)
	}
}
