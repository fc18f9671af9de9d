package broker

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/blindfund"
	"github.com/ecoupons/ecoupons/spki"
)

func TestAnonymousIssuance(t *testing.T) { onBoth(t, testAnonymousIssuance) }

// testAnonymousIssuance: the broker sells alice an anonymous book's
// funding proof. Her account is debited exactly the denomination's face
// value into the anonymous pool, once however often the request is
// retried; the proof verifies under the published, certified
// denomination; the broker's rows hold the blinded request but not the
// book. Misuse is refused: an issuance id reused for another request,
// another key's account, a denomination outside its period, an account
// that cannot pay.
func testAnonymousIssuance(t *testing.T) {
	f := newFixture(t)
	face := int64(1_024_000_000)
	d, err := f.b.NewDenomination(ctx, face, "EUR", f.now.Add(-time.Hour), f.now.AddDate(0, 2, 0))
	if err != nil {
		t.Fatal(err)
	}
	published, err := f.b.Denominations(ctx, f.now)
	if err != nil || len(published) != 1 || published[0].ID() != d.ID() {
		t.Fatalf("published denominations: %v %v", published, err)
	}
	// A gate trusts the denomination through the broker's certificate.
	if err := published[0].Cert.Verify(); err != nil || published[0].Cert.Cert.Issuer.Hash != f.b.PublicKey().Hash() ||
		published[0].Cert.Cert.Subject.Hash != spki.KeyHash(d.ID()) {
		t.Fatalf("the denomination's certificate: %v", err)
	}

	book := [32]byte{0xab, 0xcd} // the reader's fresh book: never sent
	req, blinded, err := blindfund.Blind(d.Denomination, book, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	before, poolBefore := f.balance(t, f.acct), int64(0)
	sig, err := f.b.IssueAnonymous(ctx, pub0(t, f), f.acct, d.ID(), blinded, "issue-1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.b.IssueAnonymous(ctx, pub0(t, f), f.acct, d.ID(), blinded, "issue-1")
	if err != nil || string(again) != string(sig) {
		t.Fatalf("a retry: %v", err)
	}
	if got := before - f.balance(t, f.acct); got != face {
		t.Fatalf("alice paid %d for a book of %d (once, whatever the retries)", got, face)
	}
	if got := f.balance(t, anonAccount("EUR")) - poolBefore; got != face {
		t.Fatalf("the pool holds %d", got)
	}
	proof, err := req.Finish(sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.Verify(d.Denomination, book, face, "EUR", f.now.AddDate(0, 1, 0), f.now); err != nil {
		t.Fatalf("the proof at a gate: %v", err)
	}
	// No row of the broker names the book.
	rows, err := f.b.DB.db.Query(`SELECT id, account, denomination, blinded, blind_sig FROM anon_issued`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var cols [5]string
		rows.Scan(&cols[0], &cols[1], &cols[2], &cols[3], &cols[4])
		for _, c := range cols {
			if strings.Contains(c, "abcd") || strings.Contains(c, "q80") {
				t.Fatalf("a broker row names the book: %q", c)
			}
		}
	}
	rows.Close()

	// Misuse.
	_, blinded2, _ := blindfund.Blind(d.Denomination, book, rand.Reader)
	if _, err := f.b.IssueAnonymous(ctx, pub0(t, f), f.acct, d.ID(), blinded2, "issue-1"); !errors.Is(err, ErrIssueReplay) {
		t.Errorf("an issuance id reused for another request: %v", err)
	}
	if _, err := f.b.IssueAnonymous(ctx, pub(t, f.vendor).Hash(), f.acct, d.ID(), blinded2, "issue-2"); !errors.Is(err, errForbidden) {
		t.Errorf("another key's account: %v", err)
	}
	if _, err := f.b.IssueAnonymous(ctx, pub0(t, f), f.acct, [32]byte{1}, blinded2, "issue-3"); !errors.Is(err, ErrNoDenomination) {
		t.Errorf("an unknown denomination: %v", err)
	}
	late := f.now
	f.now = f.now.AddDate(0, 3, 0)
	if _, err := f.b.IssueAnonymous(ctx, pub0(t, f), f.acct, d.ID(), blinded2, "issue-4"); !errors.Is(err, ErrNoDenomination) {
		t.Errorf("a denomination past its period: %v", err)
	}
	f.now = late
	big, err := f.b.NewDenomination(ctx, 100_000_000_000, "EUR", f.now.Add(-time.Hour), f.now.AddDate(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	_, blinded3, _ := blindfund.Blind(big.Denomination, book, rand.Reader)
	before = f.balance(t, f.acct)
	if _, err := f.b.IssueAnonymous(ctx, pub0(t, f), f.acct, big.ID(), blinded3, "issue-5"); !errors.Is(err, ErrInsufficientFunds) {
		t.Errorf("a book alice cannot pay: %v", err)
	}
	if f.balance(t, f.acct) != before {
		t.Error("a refused issuance moved money")
	}
}

func pub0(t *testing.T, f *fixture) spki.KeyHash { return pub(t, f.alice).Hash() }

// TestAnonymousOverHTTP: an admin makes a denomination, anyone reads it
// at GET /v1/denominations, alice buys a proof with POST /v1/anonymous;
// a vendor's key cannot make denominations, a junk blinded message is a
// 400.
func TestAnonymousOverHTTP(t *testing.T) {
	f := newFixture(t)
	admin := testKey("admin")
	srv := httptest.NewServer(&API{Broker: f.b, Admins: []spki.KeyHash{pub(t, admin).Hash()}})
	defer srv.Close()
	clock := func() time.Time { return f.now }
	ac := &apiClient{t: t, url: srv.URL, key: admin, now: clock}
	terms := map[string]string{"face": "0.512", "currency": "EUR", "not_before": f.now.Add(-time.Hour).Format(time.RFC3339), "not_after": f.now.AddDate(0, 1, 0).Format(time.RFC3339)}
	if code, out := (&apiClient{t: t, url: srv.URL, key: f.vendor, now: clock}).json("POST", "/v1/admin/denominations", terms); code != 403 {
		t.Fatalf("a vendor's key made a denomination: %d %v", code, out)
	}
	code, out := ac.json("POST", "/v1/admin/denominations", terms)
	if code != 201 {
		t.Fatalf("denomination: %d %v", code, out)
	}
	code, out = (&apiClient{t: t, url: srv.URL, now: clock}).do("GET", "/v1/denominations", nil)
	list, _ := out["denominations"].([]any)
	if code != 200 || len(list) != 1 {
		t.Fatalf("GET /v1/denominations: %d %v", code, out)
	}
	pd := list[0].(map[string]any)
	d, err := blindfund.ParseDenomination([]byte(pd["denomination"].(string)))
	if err != nil || pd["face"] != "0.512" {
		t.Fatalf("the published denomination: %v %v", pd, err)
	}
	book := [32]byte{5}
	req, blinded, _ := blindfund.Blind(d, book, rand.Reader)
	alice := &apiClient{t: t, url: srv.URL, key: f.alice, now: clock}
	code, out = alice.json("POST", "/v1/anonymous", map[string]string{"account": f.acct, "denomination": pd["id"].(string),
		"blinded": base64.RawURLEncoding.EncodeToString(blinded), "id": "http-1"})
	if code != 200 {
		t.Fatalf("POST /v1/anonymous: %d %v", code, out)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(out["blind_signature"].(string))
	proof, err := req.Finish(sig)
	if err != nil || proof.Verify(d, book, 512_000_000, "EUR", f.now, f.now) != nil {
		t.Fatalf("the proof bought over HTTP: %v", err)
	}
	if code, out := alice.json("POST", "/v1/anonymous", map[string]string{"account": f.acct, "denomination": pd["id"].(string),
		"blinded": "AAAA", "id": "http-2"}); code != 400 {
		t.Fatalf("a junk blinded message: %d %v", code, out)
	}
}
