package broker

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/tesla"
)

type apiClient struct {
	t    *testing.T
	url  string
	key  crypto.Signer
	now  func() time.Time
	last *http.Request
	body []byte
	// broker is the audience the requests name; zero: the fixture's
	// broker (testKey("broker")).
	broker spki.KeyHash
}

// fixtureBroker is the key hash of every fixture's broker.
func fixtureBroker(t testing.TB) spki.KeyHash { return pub(t, testKey("broker")).Hash() }

func (c *apiClient) do(method, path string, body []byte) (int, map[string]any) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.url+path, bytes.NewReader(body))
	if c.key != nil {
		aud := c.broker
		if aud == (spki.KeyHash{}) {
			aud = fixtureBroker(c.t)
		}
		if err := SignRequest(req, body, c.key, aud, c.now()); err != nil {
			c.t.Fatal(err)
		}
	}
	c.last, c.body = req, body
	return c.send(req, body)
}

func (c *apiClient) send(req *http.Request, body []byte) (int, map[string]any) {
	c.t.Helper()
	req.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(raw, &out)
	if out == nil {
		out = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, out
}

func (c *apiClient) json(method, path string, v any) (int, map[string]any) {
	b, _ := json.Marshal(v)
	return c.do(method, path, b)
}

func TestAPI(t *testing.T) { onBoth(t, testAPI) }

func testAPI(t *testing.T) {
	f := newFixture(t)
	admin := testKey("admin")
	api := &API{Broker: f.b, Admins: []spki.KeyHash{pub(t, admin).Hash()}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	clock := func() time.Time { return f.now }
	bob := &apiClient{t: t, url: srv.URL, key: testKey("bob"), now: clock}
	adm := &apiClient{t: t, url: srv.URL, key: admin, now: clock}
	shop := &apiClient{t: t, url: srv.URL, key: testKey("shop"), now: clock}
	anon := &apiClient{t: t, url: srv.URL, now: clock}

	// The broker's key is public.
	code, out := anon.do("GET", "/v1/broker", nil)
	x, err := spki.Parse([]byte(out["raw"].(string)))
	if code != 200 || err != nil {
		t.Fatalf("GET /v1/broker: %d %v", code, err)
	}
	brokerKey, _ := spki.ParsePublicKey(x)

	code, out = bob.json("POST", "/v1/users", map[string]string{"currency": "EUR"})
	if code != 200 || out["account"] == nil {
		t.Fatalf("register: %d %v", code, out)
	}
	acct := out["account"].(string)
	cx, _ := spki.Parse([]byte(out["certificate"].(string)))
	if sc, err := spki.ParseSignedCert(cx); err != nil || sc.Verify() != nil || sc.Cert.Issuer.Hash != brokerKey.Hash() {
		t.Fatalf("user certificate: %v", err)
	}
	if code, out = bob.json("POST", "/v1/admin/topup", map[string]string{"account": acct, "amount": "5", "id": "x"}); code != 403 {
		t.Errorf("top-up by a non-admin: %d %v", code, out)
	}
	if code, out = adm.json("POST", "/v1/admin/topup", map[string]string{"account": acct, "amount": "2.5", "id": "pay-1"}); code != 200 || out["balance"] != "2.5" {
		t.Fatalf("top-up: %d %v", code, out)
	}
	if code, out = shop.json("POST", "/v1/vendors", map[string]string{"name": "shop.example", "currency": "EUR"}); code != 200 {
		t.Fatalf("vendor: %d %v", code, out)
	}
	// Anyone may fetch the broker's certificate of the vendor's key.
	code, out = anon.do("GET", "/v1/vendor?name=shop.example", nil)
	vx, err := spki.Parse([]byte(fmt.Sprint(out["raw"])))
	if code != 200 || err != nil {
		t.Fatalf("GET /v1/vendor: %d %v %v", code, out, err)
	}
	vc, err := spki.ParseSignedCert(vx)
	if err != nil || vc.Verify() != nil || vc.Cert.Issuer.Hash != brokerKey.Hash() || vc.Cert.Subject.Hash != pub(t, testKey("shop")).Hash() ||
		!strings.Contains(string(spki.Advanced(vc.Cert.Tag.Sexp())), "shop.example") {
		t.Fatalf("vendor certificate: %v", err)
	}
	if code, out = anon.do("GET", "/v1/vendor?name=nobody.example", nil); code != 404 || out["error"] != "unknown_vendor" {
		t.Errorf("unknown vendor: %d %v", code, out)
	}
	if code, _ = anon.do("GET", "/v1/vendor", nil); code != 400 {
		t.Errorf("no vendor name: %d", code)
	}

	// Bob makes a book for shop.example and registers it.
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "shop.example", Broker: brokerKey.Hash(), Owner: pub(t, testKey("bob")).Hash(),
		Lanes: 2, Length: 64, Currency: "EUR", Unit: milli, NotAfter: f.now.Add(24 * time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := bk.Sign(testKey("bob"))
	if code, out = bob.do("POST", "/v1/books", spki.Transport(sb.Sexp())); code != 201 || out["held"] != "0.128" {
		t.Fatalf("book: %d %v", code, out)
	}
	// The answer carries the book certificate that gates require.
	fx, err := spki.Parse([]byte(out["certificate"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	funding, err := spki.ParseSignedCert(fx)
	if err != nil {
		t.Fatal(err)
	}
	if err := coupons.VerifyFunding(funding, sb.Book, f.now, nil); err != nil || funding.Cert.Issuer.Hash != brokerKey.Hash() {
		t.Fatalf("book certificate: %v", err)
	}
	// Registering again holds nothing more and answers the same certificate.
	if code, again := bob.do("POST", "/v1/books", spki.Transport(sb.Sexp())); code != 201 || again["certificate"] != out["certificate"] {
		t.Fatalf("book again: %d %v", code, again)
	}
	// The shop redeems coupon 10 of lane 1.
	tag := bk.LaneTag(1)
	w10 := coupons.Walk(&tag, 64, sec.Seed(1), 10)
	proof, _ := coupons.MerkleProof(anchors, 1)
	var ps []string
	for _, p := range proof {
		ps = append(ps, base64.RawURLEncoding.EncodeToString(p[:]))
	}
	item := RedeemItem{Lane: coupons.LaneID{Book: bk.ID(), Lane: 1}.String(), Index: 10, Value: base64.RawURLEncoding.EncodeToString(w10[:]),
		Anchor: base64.RawURLEncoding.EncodeToString(anchors[1][:]), Proof: ps}
	code, out = shop.json("POST", "/v1/redeem", map[string]any{"items": []RedeemItem{item}})
	if code != 200 {
		t.Fatalf("redeem: %d %v", code, out)
	}
	r0 := out["results"].([]any)[0].(map[string]any)
	if r0["coupons"].(float64) != 10 || r0["amount"] != "0.01" {
		t.Fatalf("redeemed %v", r0)
	}
	// Theft evidence on the same lane: coupon 5 was spent for a request
	// whose binding coupon 6 does not produce.
	b64s := base64.RawURLEncoding.EncodeToString
	w6 := coupons.Walk(&tag, 64, sec.Seed(1), 6)
	digest := [32]byte{7}
	theftItem := func(i uint32, next coupons.Value, mac [16]byte) map[string]any {
		it := item
		it.Theft = &TheftItem{Index: i, Digest: b64s(digest[:]), MAC: b64s(mac[:]), Next: b64s(next[:])}
		return map[string]any{"items": []RedeemItem{it}}
	}
	honest := tesla.BindRequest(tesla.Key(w6), digest)
	for _, c := range []struct {
		i    uint32
		next coupons.Value
		mac  [16]byte
		want string
	}{
		{5, w6, [16]byte{1}, "recorded"},
		{5, w6, [16]byte{1}, "recorded"}, // again: idempotent
		{5, w6, honest, "refused: the binding verifies"},
		{5, coupons.Value{9}, [16]byte{1}, "refused: the value given is not coupon 6"},
		{12, w6, [16]byte{1}, "refused: coupon 13 is not redeemed yet"},
	} {
		code, out = shop.json("POST", "/v1/redeem", theftItem(c.i, c.next, c.mac))
		r := out["results"].([]any)[0].(map[string]any)
		if code != 200 || !strings.HasPrefix(fmt.Sprint(r["theft"]), c.want) || r["coupons"].(float64) != 0 {
			t.Errorf("theft evidence %d: %d %v, want %q", c.i, code, r, c.want)
		}
	}
	if code, out = bob.do("GET", "/v1/thefts", nil); code != 200 || !strings.Contains(toJSON(out), `"i":5`) || !strings.Contains(toJSON(out), `"vendor":"shop.example"`) {
		t.Errorf("the owner's thefts: %d %v", code, out)
	}
	if code, out = shop.do("GET", "/v1/thefts", nil); code != 200 || toJSON(out) != `{"thefts":[]}` {
		t.Errorf("thefts seen by someone else: %d %v", code, out)
	}
	code, out = shop.do("GET", "/v1/balance", nil)
	if code != 200 || !strings.Contains(toJSON(out), `"balance":"0.01"`) {
		t.Errorf("vendor balance: %d %v", code, out)
	}
	code, out = bob.do("GET", "/v1/balance", nil)
	if code != 200 || !strings.Contains(toJSON(out), `"balance":"2.372"`) {
		t.Errorf("user balance: %d %v", code, out)
	}

	// Bob grants a phone lane 0, then revokes the grant.
	owner, err := delegation.NewOwner(sb, nil, sec, anchors, testKey("bob"))
	if err != nil {
		t.Fatal(err)
	}
	owner.Funding = funding
	enc := mustX25519(t)
	dev, _ := delegation.NewDevice("phone", testKey("phone"), enc.PublicKey())
	g, err := owner.Issue(dev, 0, 0, delegation.GrantOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if code, out = shop.json("POST", "/v1/revoke", map[string]any{"certificate": string(spki.Transport(g.Cert().Sexp()))}); code != 403 {
		t.Errorf("revocation by a stranger: %d %v", code, out)
	}
	// Bob gave the phone a second lane, recorded at the broker; a stranger
	// cannot record Bob's grants.
	g2, err := owner.Issue(dev, 1, 1, delegation.GrantOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if code, out = shop.json("POST", "/v1/grants", map[string]any{"certificate": string(spki.Transport(g2.Cert().Sexp())), "name": "phone"}); code != 400 {
		t.Errorf("a stranger recording Bob's grant: %d %v", code, out)
	}
	if code, out = bob.json("POST", "/v1/grants", map[string]any{"certificate": string(spki.Transport(g2.Cert().Sexp())), "name": "phone"}); code != 201 {
		t.Fatalf("recording a grant: %d %v", code, out)
	}
	// A stranger who issues a certificate to the phone's key and revokes it
	// "with its key" revokes only its own certificate, never the key.
	malTag, _ := coupons.SpendTag(sb.Book.ID(), "news.example", 0, 0, 0)
	mal, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(pub(t, testKey("shop"))), Subject: spki.KeyPrincipal(dev.Signing), Tag: malTag}, testKey("shop"))
	if err != nil {
		t.Fatal(err)
	}
	if code, out = shop.json("POST", "/v1/revoke", map[string]any{"certificate": string(spki.Transport(mal.Sexp())), "key": true}); code != 200 {
		t.Fatalf("revoking one's own certificate: %d %v", code, out)
	}
	// Bob revokes the phone's grant "with its key": every grant Bob recorded
	// for the phone goes, the key itself does not (only the phone may
	// revoke its own key).
	if code, out = bob.json("POST", "/v1/revoke", map[string]any{"certificate": string(spki.Transport(g.Cert().Sexp())), "key": true}); code != 200 {
		t.Fatalf("revoke: %d %v", code, out)
	}
	code, out = anon.do("GET", "/v1/revocations", nil)
	if code != 200 {
		t.Fatalf("revocations: %d %v", code, out)
	}
	lx, err := spki.Parse([]byte(out["raw"].(string)))
	if code != 200 || err != nil {
		t.Fatalf("revocations: %d %v", code, err)
	}
	list, err := delegation.ParseRevocations(lx, brokerKey)
	if err != nil {
		t.Fatal(err)
	}
	if !list.CertRevoked(g.Cert().Cert.Hash()) || !list.CertRevoked(g2.Cert().Cert.Hash()) || !list.CertRevoked(mal.Cert.Hash()) {
		t.Error("the list does not name the revoked grants")
	}
	if list.KeyRevoked(dev.Fingerprint()) {
		t.Error("the phone's key was revoked by someone else than the phone")
	}
	phone := &apiClient{t: t, url: srv.URL, key: testKey("phone"), now: clock}
	if code, out = phone.json("POST", "/v1/revoke", map[string]any{"certificate": string(spki.Transport(g.Cert().Sexp())), "key": true}); code != 200 {
		t.Fatalf("the phone revoking its own key: %d %v", code, out)
	}
	code, out = anon.do("GET", "/v1/revocations", nil)
	lx, _ = spki.Parse([]byte(out["raw"].(string)))
	if list, err = delegation.ParseRevocations(lx, brokerKey); err != nil || !list.KeyRevoked(dev.Fingerprint()) {
		t.Fatalf("the phone's own key revocation: %v", err)
	}
	// The same list until something changes; then a higher number.
	_, out2 := anon.do("GET", "/v1/revocations", nil)
	if out2["raw"] != out["raw"] {
		t.Error("the list changed without a revocation")
	}
	bob.json("POST", "/v1/revoke", map[string]any{"certificate": string(spki.Transport(g.Cert().Sexp()))})
	f.now = f.now.Add(time.Hour)
	_, out3 := anon.do("GET", "/v1/revocations", nil)
	lx3, _ := spki.Parse([]byte(out3["raw"].(string)))
	list3, err := delegation.ParseRevocations(lx3, brokerKey)
	if err != nil || list3.Number <= list.Number {
		t.Errorf("an expired list was not renewed with a higher number: %v", err)
	}
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestAPIRefusesBadInput: every malformed, unauthenticated or replayed
// request gets a 4xx with a reason and changes nothing.
func TestAPIRefusesBadInput(t *testing.T) { onBoth(t, testAPIRefusesBadInput) }

func testAPIRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	admin := testKey("admin")
	api := &API{Broker: f.b, Admins: []spki.KeyHash{pub(t, admin).Hash()}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	clock := func() time.Time { return f.now }
	adm := &apiClient{t: t, url: srv.URL, key: admin, now: clock}
	before := f.balance(t, f.acct)

	expect := func(name string, code int, out map[string]any, want int, reason string) {
		t.Helper()
		if code != want || out["error"] != reason {
			t.Errorf("%s: %d %v, want %d %s", name, code, out, want, reason)
		}
	}
	anon := &apiClient{t: t, url: srv.URL, now: clock}
	code, out := anon.json("POST", "/v1/admin/topup", map[string]string{"account": f.acct, "amount": "1", "id": "a"})
	expect("unsigned", code, out, 401, "unsigned")

	code, out = adm.json("POST", "/v1/admin/topup", map[string]string{"account": f.acct, "amount": "1", "id": "a"})
	if code != 200 {
		t.Fatalf("top-up: %d %v", code, out)
	}
	before += coupons.NanosPerUnit
	code, out = adm.send(adm.last, adm.body)
	expect("replayed request", code, out, 401, "replayed")

	req, _ := http.NewRequest("POST", srv.URL+"/v1/admin/topup", nil)
	body := []byte(`{"account":"` + f.acct + `","amount":"1","id":"b"}`)
	SignRequest(req, body, admin, fixtureBroker(t), f.now)
	code, out = adm.send(req, []byte(`{"account":"`+f.acct+`","amount":"9","id":"b"}`))
	expect("body changed after signing", code, out, 401, "bad_signature")

	req, _ = http.NewRequest("POST", srv.URL+"/v1/admin/topup", nil)
	SignRequest(req, body, admin, fixtureBroker(t), f.now.Add(-time.Hour))
	code, out = adm.send(req, body)
	expect("stale timestamp", code, out, 401, "replayed")

	req, _ = http.NewRequest("POST", srv.URL+"/v1/admin/topup", nil)
	req.Header.Set(HeaderSignature, "key=x, ts=1, nonce=y, sig=z")
	code, out = adm.send(req, body)
	expect("garbage signature header", code, out, 401, "bad_signature")

	code, out = adm.do("POST", "/v1/admin/topup", []byte(`{"account": "`))
	expect("malformed JSON", code, out, 400, "bad_request")
	code, out = adm.json("POST", "/v1/admin/topup", map[string]string{"account": f.acct, "amount": "-1", "id": "c"})
	expect("negative amount", code, out, 400, "bad_amount")
	code, out = adm.json("POST", "/v1/admin/topup", map[string]string{"account": f.acct, "amount": "99999999999", "id": "c"})
	expect("overflowing amount", code, out, 400, "bad_amount")
	code, out = adm.json("POST", "/v1/admin/topup", map[string]string{"account": f.acct, "amount": "1", "id": "c", "extra": "x"})
	expect("unknown field", code, out, 400, "bad_request")
	code, out = adm.json("POST", "/v1/admin/topup", map[string]string{"account": "user:nobody:EUR", "amount": "1", "id": "c"})
	expect("unknown account", code, out, 404, "unknown_account")
	code, out = adm.json("POST", "/v1/users", map[string]string{"currency": "euro"})
	expect("bad currency", code, out, 400, "bad_amount")
	code, out = adm.do("POST", "/v1/books", []byte("(not a book"))
	expect("malformed book", code, out, 400, "bad_sexp")
	code, out = adm.do("POST", "/v1/nope", nil)
	expect("unknown endpoint", code, out, 404, "not_found")
	code, out = adm.do("POST", "/v1/books", bytes.Repeat([]byte("a"), MaxBody+10))
	if code != 413 {
		t.Errorf("oversized body: %d", code)
	}
	if got := f.balance(t, f.acct); got != before {
		t.Errorf("refused requests changed the balance: %d, want %d", got, before)
	}
}

// TestStatements: an account's activity per day and kind, with opening and
// closing balances, as JSON and CSV; only the account's key may read it.
func TestStatements(t *testing.T) { onBoth(t, testStatements) }

func testStatements(t *testing.T) {
	f := newFixture(t) // alice: 10 EUR top-up on 2026-12-01
	bk := f.newBook(t, 2, 16, milli)
	f.now = f.now.Add(24 * time.Hour) // 2026-12-02
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	f.b.Redeem(ctx, pub(t, f.vendor).Hash(), []Redemption{bk.coupon(0, 4, true), bk.coupon(1, 3, true)})
	f.now = f.now.Add(24 * time.Hour) // 2026-12-03
	f.b.Redeem(ctx, pub(t, f.vendor).Hash(), []Redemption{bk.coupon(0, 6, false)})

	api := &API{Broker: f.b}
	srv := httptest.NewServer(api)
	defer srv.Close()
	clock := func() time.Time { return f.now }
	vendor := &apiClient{t: t, url: srv.URL, key: f.vendor, now: clock}
	alice := &apiClient{t: t, url: srv.URL, key: f.alice, now: clock}

	code, out := vendor.do("GET", "/v1/statements?account=vendor:news.example:EUR&from=2026-12-02&to=2026-12-04", nil)
	if code != 200 {
		t.Fatalf("statement: %d %v", code, out)
	}
	got := toJSON(out)
	for _, want := range []string{`"opening":"0"`, `"closing":"0.009"`, `{"amount":"0.007","day":"2026-12-02","kind":"redeem","transactions":1}`,
		`{"amount":"0.002","day":"2026-12-03","kind":"redeem","transactions":1}`} {
		if !strings.Contains(got, want) {
			t.Errorf("vendor statement lacks %s:\n%s", want, got)
		}
	}
	code, out = alice.do("GET", "/v1/statements?account="+f.acct+"&from=2026-12-02&to=2026-12-03&format=csv", nil)
	csvText, _ := out["raw"].(string)
	if code != 200 || !strings.Contains(csvText, "2026-12-02,opening,,10,EUR") || !strings.Contains(csvText, "2026-12-02,book,1,-0.032,EUR") ||
		!strings.Contains(csvText, "2026-12-03,closing,,9.968,EUR") {
		t.Errorf("user statement CSV: %d\n%s", code, csvText)
	}
	if code, out = alice.do("GET", "/v1/statements?account=vendor:news.example:EUR&from=2026-12-02&to=2026-12-03", nil); code != 403 {
		t.Errorf("another key's statement: %d %v", code, out)
	}
	if code, out = alice.do("GET", "/v1/statements?account="+f.acct+"&from=2026-12-02&to=yesterday", nil); code != 400 {
		t.Errorf("bad dates: %d %v", code, out)
	}
	// A signed GET cannot have its query changed in flight.
	req, _ := http.NewRequest("GET", srv.URL+"/v1/statements?account="+f.acct+"&from=2026-12-02&to=2026-12-03", nil)
	SignRequest(req, nil, f.alice, fixtureBroker(t), f.now)
	req.URL.RawQuery = "account=" + f.acct + "&from=2026-11-01&to=2026-12-03"
	if code, _ := alice.send(req, nil); code != 401 {
		t.Errorf("altered query accepted: %d", code)
	}
}
