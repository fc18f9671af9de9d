package broker

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
)

// otherBroker is a second broker, with its own key and database, on the
// fixture's clock, where the fixture's vendor key is registered too (a
// vendor selling through two brokers).
func otherBroker(t *testing.T, f *fixture) *Broker {
	t.Helper()
	db, err := openTestDB(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b, err := New(db, testKey("broker-b"))
	if err != nil {
		t.Fatal(err)
	}
	b.Now = func() time.Time { return f.now }
	if _, err := b.RegisterVendor(ctx, "news.example", pub(t, f.vendor), "EUR"); err != nil {
		t.Fatal(err)
	}
	return b
}

func count(t testing.TB, b *Broker, table string) int {
	t.Helper()
	var n int
	if err := b.DB.db.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestReplayAtAnotherBrokerRefused: a request, and a back-office sign-in
// link, signed by a key registered at two brokers for broker A are
// refused at broker B (401 wrong_broker) and change nothing there, while
// they work at A; a request whose broker field is rewritten to B's does
// not verify.
func TestReplayAtAnotherBrokerRefused(t *testing.T) { onBoth(t, testReplayAtAnotherBrokerRefused) }

func testReplayAtAnotherBrokerRefused(t *testing.T) {
	f := newFixture(t)
	b := otherBroker(t, f)
	srvA := httptest.NewServer(&API{Broker: f.b})
	defer srvA.Close()
	srvB := httptest.NewServer(&API{Broker: b})
	defer srvB.Close()
	clock := func() time.Time { return f.now }
	atA := &apiClient{t: t, url: srvA.URL, key: f.vendor, now: clock}
	atB := &apiClient{t: t, url: srvB.URL, key: f.vendor, now: clock, broker: b.PublicKey().Hash()}

	if code, out := atA.do("GET", "/v1/balance", nil); code != 200 {
		t.Fatalf("the vendor at A: %d %v", code, out)
	}
	// The request made for A, replayed at B.
	replay, _ := http.NewRequest("GET", srvB.URL+"/v1/balance", nil)
	replay.Header = atA.last.Header.Clone()
	code, out := atA.send(replay, nil)
	if code != 401 || out["error"] != "wrong_broker" || !strings.Contains(out["reason"].(string), "made for the broker") {
		t.Errorf("a request for A replayed at B: %d %v, want 401 wrong_broker", code, out)
	}
	if n := count(t, b, "nonces"); n != 0 {
		t.Errorf("B recorded %d nonces for a request made for A", n)
	}
	// Claiming B as the audience does not help: the signature is over A.
	h := atA.last.Header.Get(HeaderSignature)
	aHash, bHash := f.b.PublicKey().Hash(), b.PublicKey().Hash()
	forged := strings.Replace(h, "broker="+base64.RawURLEncoding.EncodeToString(aHash[:]), "broker="+base64.RawURLEncoding.EncodeToString(bHash[:]), 1)
	if forged == h {
		t.Fatal("the header names no broker")
	}
	replay.Header.Set(HeaderSignature, forged)
	if code, out = atA.send(replay, nil); code != 401 || out["error"] != "bad_signature" {
		t.Errorf("a request for A relabelled for B: %d %v, want 401 bad_signature", code, out)
	}
	// Made for B, it works at B.
	if code, out = atB.do("GET", "/v1/balance", nil); code != 200 {
		t.Errorf("the vendor at B: %d %v", code, out)
	}

	// A sign-in link made for A, opened at B: no session.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	link, err := OfficeLoginURL(srvA.URL, aHash, f.vendor, f.now)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(link)
	resp, err := noRedirect.Get(srvB.URL + u.RequestURI())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || len(resp.Cookies()) != 0 || count(t, b, "sessions") != 0 {
		t.Errorf("a sign-in link for A opened at B: %d, %d cookies, want 401 and no session", resp.StatusCode, len(resp.Cookies()))
	}
	if resp, err = noRedirect.Get(link); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || count(t, f.b, "sessions") != 1 {
		t.Errorf("the sign-in link at A: %d", resp.StatusCode)
	}
}

// TestUnregisteredKeyFloodLeavesNoncesBounded: signed requests and sign-in
// links from thousands of fresh keys the broker does not know are refused
// (401 unknown_key; a refused registration 400) and leave no nonce and no
// session; a known key's nonces are deleted once older than twice the
// replay window, and its sessions are capped and deleted once expired.
func TestUnregisteredKeyFloodLeavesNoncesBounded(t *testing.T) {
	onBoth(t, testUnregisteredKeyFloodLeavesNoncesBounded)
}

func testUnregisteredKeyFloodLeavesNoncesBounded(t *testing.T) {
	f := newFixture(t)
	api := &API{Broker: f.b}
	aud := fixtureBroker(t)
	n := 3000
	if usePG {
		n = 600
	}
	routes := []struct {
		method, path, body string
		code               int
		reason             string
	}{
		{"GET", "/v1/balance", "", 401, "unknown_key"},
		{"POST", "/v1/revoke", `{"certificate":"x"}`, 401, "unknown_key"},
		{"POST", "/v1/grants", `{"certificate":"x","name":"y"}`, 401, "unknown_key"},
		{"POST", "/v1/redeem", `{"items":[]}`, 401, "unknown_key"},
		{"GET", "/v1/thefts", "", 401, "unknown_key"},
		{"POST", "/v1/users", `{"currency":"euro"}`, 400, "bad_amount"},             // a registration, refused
		{"POST", "/v1/vendors", `{"name":"","currency":"EUR"}`, 400, "bad_request"}, // likewise
	}
	before := count(t, f.b, "nonces")
	for i := 0; i < n; i++ {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		rec := httptest.NewRecorder()
		if i%8 == 7 {
			link, err := OfficeLoginURL("http://broker.example", aud, key, f.now)
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse(link)
			api.ServeHTTP(rec, httptest.NewRequest("GET", u.RequestURI(), nil))
			if rec.Code != 401 || len(rec.Result().Cookies()) != 0 {
				t.Fatalf("a sign-in link from an unknown key: %d", rec.Code)
			}
			continue
		}
		r := routes[i%len(routes)]
		req := httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
		if err := SignRequest(req, []byte(r.body), key, aud, f.now); err != nil {
			t.Fatal(err)
		}
		api.ServeHTTP(rec, req)
		if rec.Code != r.code || !strings.Contains(rec.Body.String(), `"error":"`+r.reason+`"`) {
			t.Fatalf("%s %s from an unknown key: %d %s, want %d %s", r.method, r.path, rec.Code, rec.Body, r.code, r.reason)
		}
	}
	if got := count(t, f.b, "nonces"); got != before {
		t.Errorf("%d signed requests from unknown keys left %d nonces (before: %d)", n, got, before)
	}
	if got := count(t, f.b, "sessions"); got != 0 {
		t.Errorf("sign-in links from unknown keys left %d sessions", got)
	}

	// A registration from a fresh key records its nonce once it succeeded,
	// so that a replay of it is refused.
	_, fresh, _ := ed25519.GenerateKey(rand.Reader)
	body := `{"currency":"EUR"}`
	req := httptest.NewRequest("POST", "/v1/users", strings.NewReader(body))
	SignRequest(req, []byte(body), fresh, aud, f.now)
	sig := req.Header.Get(HeaderSignature)
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	if rec.Code != 200 || count(t, f.b, "nonces") != before+1 {
		t.Fatalf("a registration: %d %s, %d nonces", rec.Code, rec.Body, count(t, f.b, "nonces"))
	}
	req = httptest.NewRequest("POST", "/v1/users", strings.NewReader(body))
	req.Header.Set(HeaderSignature, sig)
	rec = httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	if rec.Code != 401 || !strings.Contains(rec.Body.String(), `"replayed"`) {
		t.Errorf("a replayed registration: %d %s", rec.Code, rec.Body)
	}

	// Known keys: nonces older than twice the replay window go at the next
	// request; sessions are capped per key and expire.
	for i := 0; i < 40; i++ {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/v1/balance", nil)
		SignRequest(req, nil, f.alice, aud, f.now)
		api.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("alice's balance: %d %s", rec.Code, rec.Body)
		}
		link, _ := OfficeLoginURL("http://broker.example", aud, f.alice, f.now)
		u, _ := url.Parse(link)
		rec = httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest("GET", u.RequestURI(), nil))
		if rec.Code != http.StatusSeeOther {
			t.Fatalf("alice's sign-in: %d %s", rec.Code, rec.Body)
		}
	}
	if got := count(t, f.b, "sessions"); got != MaxOfficeSessions {
		t.Errorf("40 sign-ins left %d sessions, want %d", got, MaxOfficeSessions)
	}
	f.now = f.now.Add(OfficeSession + 2*ReplayWindow + time.Second)
	req = httptest.NewRequest("GET", "/v1/balance", nil)
	SignRequest(req, nil, f.alice, aud, f.now)
	api.ServeHTTP(httptest.NewRecorder(), req)
	if got := count(t, f.b, "nonces"); got != 1 {
		t.Errorf("nonces past twice the replay window were kept: %d", got)
	}
	link, _ := OfficeLoginURL("http://broker.example", aud, f.alice, f.now)
	u, _ := url.Parse(link)
	api.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", u.RequestURI(), nil))
	if got := count(t, f.b, "sessions"); got != 1 {
		t.Errorf("expired sessions were kept: %d", got)
	}
}

// TestRevocationFloodLeavesListSmall: 100,000 abusive revocations (2,000
// on PostgreSQL) — half from keys the broker does not know, each revoking
// a certificate it issued to itself (and its own key), half from a
// registered user revoking distinct certificates it issued, over six
// hours — leave a list of a few hundred entries: unknown keys revoke
// nothing, the user is held to RevocationsPerHour, and entries leave the
// list once their certificates expire.
func TestRevocationFloodLeavesListSmall(t *testing.T) { onBoth(t, testRevocationFloodLeavesListSmall) }

func testRevocationFloodLeavesListSmall(t *testing.T) {
	start := time.Now()
	f := newFixture(t)
	bk := f.newBook(t, 4, 16, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	brokerKey := f.b.PublicKey()
	tag, _ := coupons.SpendTag(bk.sb.Book.ID(), "news.example", 0, 3, 0)
	n := 100_000
	if usePG {
		n = 2_000
	}

	// Unknown keys, each with a certificate it issued to itself on a book
	// the broker holds (the old way to grow the list without bound). A
	// pool of 500 such keys is enough: each attempt is refused before its
	// certificate is looked at.
	type attempt struct {
		caller spki.KeyHash
		cert   *spki.SignedCert
	}
	var strangers []attempt
	for i := 0; i < 500; i++ {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		p := pub(t, k)
		c, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(p), Subject: spki.KeyPrincipal(p), Tag: tag,
			Validity: spki.Validity{NotAfter: f.now.Add(365 * 24 * time.Hour)}}, k)
		if err != nil {
			t.Fatal(err)
		}
		strangers = append(strangers, attempt{p.Hash(), c})
	}
	for i := 0; i < n/2; i++ {
		a := strangers[i%len(strangers)]
		if err := f.b.Revoke(ctx, a.caller, a.cert, i%2 == 0); !errors.Is(err, ErrRevocation) {
			t.Fatalf("attempt %d by an unknown key: %v, want ErrRevocation", i, err)
		}
	}
	if got := count(t, f.b, "revoked"); got != 0 {
		t.Fatalf("unknown keys put %d entries on the list", got)
	}

	// The registered user: distinct certificates, each valid an hour,
	// revoked over six hours.
	alice := pub(t, f.alice)
	steps := n / 2
	step := 6 * time.Hour / time.Duration(steps)
	accepted, limited, maxEntries, maxBytes := 0, 0, 0, 0
	lastList := f.now
	var sub [32]byte
	for i := 0; i < steps; i++ {
		f.now = f.now.Add(step)
		sub[0], sub[1], sub[2] = byte(i), byte(i>>8), byte(i>>16)
		c, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(alice), Subject: spki.HashPrincipal(spki.KeyHash(sub)), Tag: tag,
			Validity: spki.Validity{NotAfter: f.now.Add(time.Hour).Truncate(time.Second)}}, f.alice)
		if err != nil {
			t.Fatal(err)
		}
		switch err := f.b.Revoke(ctx, alice.Hash(), c, false); {
		case err == nil:
			accepted++
		case errors.Is(err, ErrRevocationRate):
			limited++
		default:
			t.Fatalf("attempt %d by the user: %v", i, err)
		}
		if f.now.Sub(lastList) >= 10*time.Minute || i == steps-1 {
			lastList = f.now
			doc, err := f.b.RevocationList(ctx)
			if err != nil {
				t.Fatal(err)
			}
			x, err := spki.Parse(doc)
			if err != nil {
				t.Fatal(err)
			}
			list, err := delegation.ParseRevocations(x, brokerKey)
			if err != nil {
				t.Fatal(err)
			}
			maxEntries = max(maxEntries, len(list.Certs)+len(list.Keys))
			maxBytes = max(maxBytes, len(doc))
		}
	}
	limit := DefaultRevocationsPerHour
	t.Logf("%d attempts in %s: the user's %d accepted, %d refused by the rate limit; the list had at most %d entries, %d bytes",
		n, time.Since(start).Round(time.Millisecond), accepted, limited, maxEntries, maxBytes)
	if accepted > 6*limit+limit || accepted < limit {
		t.Errorf("the user revoked %d times in six hours, want about %d", accepted, 6*limit)
	}
	// At any time the list holds what the last two hours revoked (an
	// hour's validity, an hour past it): at most about 2×limit.
	if maxEntries > 2*limit+limit/2 || maxBytes > 32<<10 {
		t.Errorf("the list grew to %d entries, %d bytes", maxEntries, maxBytes)
	}
	if got := count(t, f.b, "revoked"); got > 2*limit+limit/2 {
		t.Errorf("%d entries stored", got)
	}
	if got := count(t, f.b, "revocation_log"); got > limit {
		t.Errorf("the rate log keeps %d rows, more than an hour's", got)
	}

	// The rate limit reaches the API as 429 with a reason.
	srv := httptest.NewServer(&API{Broker: f.b})
	defer srv.Close()
	c, _ := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(alice), Subject: spki.HashPrincipal(spki.KeyHash{1}), Tag: tag}, f.alice)
	f.b.RevocationsPerHour = 1
	cl := &apiClient{t: t, url: srv.URL, key: f.alice, now: func() time.Time { return f.now }}
	if code, out := cl.json("POST", "/v1/revoke", map[string]any{"certificate": string(spki.Transport(c.Sexp()))}); code != 429 || out["error"] != "revocation_rate" {
		t.Errorf("past the rate: %d %v, want 429 revocation_rate", code, out)
	}
	f.b.RevocationsPerHour = 0

	// Past every certificate's expiry (the book's, 30 days), the list is
	// empty.
	f.now = bk.sb.Book.NotAfter.Add(RevokedPastExpiry + time.Second)
	doc, err := f.b.RevocationList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := spki.Parse(doc)
	list, err := delegation.ParseRevocations(x, brokerKey)
	if err != nil || len(list.Certs)+len(list.Keys) != 0 || count(t, f.b, "revoked") != 0 {
		t.Errorf("after every certificate expired: %v, %d entries", err, count(t, f.b, "revoked"))
	}
}

// TestRevocationEntriesExpire: what may be revoked and how long it is
// listed. A certificate naming a book the broker holds is listed until
// the earlier of its and the book's expiry (plus RevokedPastExpiry); one
// naming a book the broker does not hold, or nothing the broker issued,
// is refused; a device with a recorded grant may revoke its own key,
// which stays listed KeyRevocationRetention; the list's number goes up
// when an entry leaves.
func TestRevocationEntriesExpire(t *testing.T) { onBoth(t, testRevocationEntriesExpire) }

func testRevocationEntriesExpire(t *testing.T) {
	f := newFixture(t)
	bk := f.newBook(t, 4, 16, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	alice, phone := pub(t, f.alice), pub(t, testKey("phone"))
	tag, _ := coupons.SpendTag(bk.sb.Book.ID(), "news.example", 0, 1, 0)
	cert := func(na time.Time, tag *spki.Tag) *spki.SignedCert {
		c, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(alice), Subject: spki.KeyPrincipal(phone), Tag: tag,
			Validity: spki.Validity{NotAfter: na}}, f.alice)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	list := func() *delegation.Revocations {
		t.Helper()
		doc, err := f.b.RevocationList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		x, _ := spki.Parse(doc)
		l, err := delegation.ParseRevocations(x, f.b.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	short := cert(f.now.Add(2*time.Hour).Truncate(time.Second), tag)
	long := cert(time.Time{}, tag) // no expiry of its own: the book's
	for _, c := range []*spki.SignedCert{short, long} {
		if err := f.b.Revoke(ctx, alice.Hash(), c, false); err != nil {
			t.Fatal(err)
		}
	}
	// Refused: a book the broker does not hold; a tag naming no book.
	other := f.newBook(t, 1, 16, milli)
	otherTag, _ := coupons.SpendTag(other.sb.Book.ID(), "news.example", 0, 0, 0)
	if err := f.b.Revoke(ctx, alice.Hash(), cert(f.now.Add(time.Hour), otherTag), false); !errors.Is(err, ErrRevocation) {
		t.Errorf("a certificate on a book the broker does not hold: %v", err)
	}
	plain, _ := spki.ParseTag(spki.L("anything"))
	if err := f.b.Revoke(ctx, alice.Hash(), cert(f.now.Add(time.Hour), plain), false); !errors.Is(err, ErrRevocation) {
		t.Errorf("a certificate no gate of this broker relies on: %v", err)
	}
	// The phone is unknown until alice records a grant to it; then it may
	// revoke its own key.
	grant := cert(f.now.Add(48*time.Hour).Truncate(time.Second), tag)
	if err := f.b.Revoke(ctx, phone.Hash(), grant, true); !errors.Is(err, ErrRevocation) {
		t.Errorf("a revocation by an unknown device: %v", err)
	}
	if err := f.b.RegisterGrant(ctx, alice.Hash(), grant, "phone"); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Revoke(ctx, phone.Hash(), grant, true); err != nil {
		t.Fatalf("the phone revoking its own key: %v", err)
	}
	l0 := list()
	if !l0.CertRevoked(short.Cert.Hash()) || !l0.CertRevoked(long.Cert.Hash()) || !l0.CertRevoked(grant.Cert.Hash()) || !l0.KeyRevoked(phone.Hash()) {
		t.Fatal("the list lacks a revocation")
	}
	// Three hours on: the short certificate is gone, in a new list.
	f.now = f.now.Add(3*time.Hour + time.Second)
	l1 := list()
	if l1.CertRevoked(short.Cert.Hash()) || !l1.CertRevoked(long.Cert.Hash()) || l1.Number <= l0.Number {
		t.Errorf("three hours on: short listed %v, long listed %v, number %d after %d", l1.CertRevoked(short.Cert.Hash()),
			l1.CertRevoked(long.Cert.Hash()), l1.Number, l0.Number)
	}
	// Past the book's expiry: only the phone's key is left, until
	// KeyRevocationRetention after its revocation.
	f.now = bk.sb.Book.NotAfter.Add(RevokedPastExpiry + time.Second)
	l2 := list()
	if len(l2.Certs) != 0 || !l2.KeyRevoked(phone.Hash()) {
		t.Errorf("past the book's expiry: %d certificates, phone's key listed %v", len(l2.Certs), l2.KeyRevoked(phone.Hash()))
	}
	f.now = f.now.Add(KeyRevocationRetention)
	if l3 := list(); len(l3.Keys) != 0 {
		t.Errorf("a key listed past its retention: %d", len(l3.Keys))
	}
}

// TestRevocationMigrationDatesOldEntries: entries recorded before
// revocations expired (schema version 10) get an expiry at the upgrade: a
// recorded grant's own; anything else one year after its revocation or
// the last book's expiry, whichever is later.
func TestRevocationMigrationDatesOldEntries(t *testing.T) {
	f := newFixture(t)
	bk := f.newBook(t, 2, 16, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	tag, _ := coupons.SpendTag(bk.sb.Book.ID(), "news.example", 0, 1, 0)
	grantNA := f.now.Add(48 * time.Hour).Truncate(time.Second)
	grant, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(pub(t, f.alice)), Subject: spki.KeyPrincipal(pub(t, testKey("phone"))), Tag: tag,
		Validity: spki.Validity{NotAfter: grantNA}}, f.alice)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.b.RegisterGrant(ctx, pub(t, f.alice).Hash(), grant, "phone"); err != nil {
		t.Fatal(err)
	}
	db := f.b.DB.db
	gh := grant.Cert.Hash()
	created := f.now.Add(-24 * time.Hour).Unix()
	for _, stmt := range []string{
		`DROP INDEX revoked_expires`, `ALTER TABLE revoked DROP COLUMN expires`, `DROP TABLE revocation_log`, `DROP TABLE revocation_state`,
		`UPDATE schema_version SET version = 10`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	for _, e := range [][2]string{{"cert", hex.EncodeToString(gh[:])}, {"cert", strings.Repeat("aa", 32)}, {"key", strings.Repeat("bb", 32)}} {
		if _, err := db.Exec(`INSERT INTO revoked (kind, hash, by_key, created) VALUES ($1, $2, $3, $4)`, e[0], e[1], "x", created); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.b.DB.migrate(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{hex.EncodeToString(gh[:]): grantNA.Unix(), strings.Repeat("aa", 32): created + 365*24*3600, strings.Repeat("bb", 32): created + 365*24*3600}
	for h, exp := range want {
		var got int64
		if err := db.QueryRow(`SELECT expires FROM revoked WHERE hash = $1`, h).Scan(&got); err != nil || got != exp {
			t.Errorf("entry %s…: expires %d (%v), want %d", h[:8], got, err, exp)
		}
	}
	var gen int64
	if err := db.QueryRow(`SELECT generation FROM revocation_state WHERE id = 1`).Scan(&gen); err != nil || gen != 3 {
		t.Errorf("generation %d (%v), want 3", gen, err)
	}
}
