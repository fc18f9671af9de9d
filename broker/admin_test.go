package broker

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/spki"
)

// adminWorld serves the fixture's broker with testKey("admin") as its
// administrator and returns clients for the admin, alice and the vendor.
func adminWorld(t *testing.T) (f *fixture, adm, alice, vendor *apiClient) {
	f = newFixture(t)
	api := &API{Broker: f.b, Admins: []spki.KeyHash{pub(t, testKey("admin")).Hash()}}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	clock := func() time.Time { return f.now }
	return f, &apiClient{t: t, url: srv.URL, key: testKey("admin"), now: clock}, &apiClient{t: t, url: srv.URL, key: f.alice, now: clock},
		&apiClient{t: t, url: srv.URL, key: f.vendor, now: clock}
}

// TestVendorKeyCannotTopUp: the admin endpoints refuse a vendor's and a
// user's key (403 forbidden) and change nothing.
func TestVendorKeyCannotTopUp(t *testing.T) {
	f, _, alice, vendor := adminWorld(t)
	before := f.balance(t, f.acct)
	for _, c := range []*apiClient{vendor, alice} {
		for _, call := range []struct {
			method, path string
			body         any
		}{
			{"POST", "/v1/admin/topup", map[string]string{"account": f.acct, "amount": "5", "id": "x"}},
			{"POST", "/v1/admin/credit", map[string]string{"account": f.acct, "limit": "100"}},
			{"POST", "/v1/admin/approve", map[string]string{"account": f.acct}},
			{"POST", "/v1/admin/vendors", map[string]string{"name": "evil.example", "key": string(spki.Advanced(pub(t, testKey("evil")).Sexp())), "currency": "EUR"}},
			{"GET", "/v1/admin/accounts", nil},
			{"GET", "/v1/admin/vendors", nil},
			{"GET", "/v1/admin/thefts", nil},
		} {
			var code int
			var out map[string]any
			if call.body == nil {
				code, out = c.do(call.method, call.path, nil)
			} else {
				code, out = c.json(call.method, call.path, call.body)
			}
			if code != 403 || out["error"] != "forbidden" {
				t.Errorf("%s %s by a non-admin: %d %v", call.method, call.path, code, out)
			}
		}
	}
	if got := f.balance(t, f.acct); got != before {
		t.Errorf("balance %d, was %d", got, before)
	}
	if vs, _ := f.b.Vendors(ctx); len(vs) != 1 {
		t.Errorf("vendors %+v", vs)
	}
}

// TestAdminAPI: the administrator lists accounts (per key, currency or
// account), registers and lists vendors, lists thefts and reads any
// account's statement; users still read only their own.
func TestAdminAPI(t *testing.T) {
	f, adm, alice, _ := adminWorld(t)
	if code, out := alice.json("POST", "/v1/users", map[string]string{"currency": "USD"}); code != 200 || !strings.HasSuffix(out["account"].(string), ":USD") {
		t.Fatalf("USD account: %d %v", code, out)
	}
	code, out := alice.do("GET", "/v1/balance", nil)
	if code != 200 || len(out["accounts"].([]any)) != 2 {
		t.Fatalf("alice's balance lists both accounts: %d %v", code, out)
	}
	code, out = adm.do("GET", "/v1/admin/accounts", nil)
	if code != 200 || len(out["accounts"].([]any)) != 2 {
		t.Fatalf("accounts: %d %v", code, out)
	}
	code, out = adm.do("GET", "/v1/admin/accounts?currency=EUR", nil)
	accts := out["accounts"].([]any)
	if code != 200 || len(accts) != 1 || accts[0].(map[string]any)["balance"] != "10" || accts[0].(map[string]any)["account"] != f.acct {
		t.Fatalf("EUR accounts: %d %v", code, out)
	}
	code, out = adm.do("GET", "/v1/admin/accounts?limit=1", nil)
	if code != 200 || len(out["accounts"].([]any)) != 1 || out["more"] != true {
		t.Fatalf("limit 1: %d %v", code, out)
	}
	for _, l := range []string{"0", "-1", "x", "100001"} {
		if code, out = adm.do("GET", "/v1/admin/accounts?limit="+l, nil); code != 400 {
			t.Errorf("limit %s: %d %v", l, code, out)
		}
	}
	if code, out = adm.do("GET", "/v1/admin/accounts?key=zz", nil); code != 400 {
		t.Errorf("bad key: %d %v", code, out)
	}
	if code, out = adm.do("GET", "/v1/admin/accounts?account=user:nobody:EUR", nil); code != 404 || out["error"] != "unknown_account" {
		t.Errorf("unknown account: %d %v", code, out)
	}
	if code, out = adm.json("POST", "/v1/admin/credit", map[string]string{"account": f.acct, "limit": "3"}); code != 200 {
		t.Fatalf("credit: %d %v", code, out)
	}
	code, out = adm.do("GET", "/v1/admin/accounts?account="+f.acct, nil)
	if a := out["accounts"].([]any)[0].(map[string]any); code != 200 || a["limit"] != "3" || a["available"] != "13" {
		t.Fatalf("after credit: %d %v", code, out)
	}
	shopKey := string(spki.Advanced(pub(t, testKey("shop")).Sexp()))
	if code, out = adm.json("POST", "/v1/admin/vendors", map[string]string{"name": "shop.example", "key": shopKey, "currency": "USD"}); code != 200 || out["certificate"] == nil {
		t.Fatalf("admin registers a vendor: %d %v", code, out)
	}
	if code, out = adm.json("POST", "/v1/admin/vendors", map[string]string{"name": "shop.example", "key": shopKey, "currency": "EUR"}); code != 400 || out["error"] != "currency_mismatch" {
		t.Errorf("the vendor again in EUR: %d %v", code, out)
	}
	if code, out = adm.json("POST", "/v1/admin/vendors", map[string]string{"name": "bad.example", "key": "(public-key", "currency": "EUR"}); code != 400 {
		t.Errorf("a bad key: %d %v", code, out)
	}
	code, out = adm.do("GET", "/v1/admin/vendors", nil)
	vs := out["vendors"].([]any)
	if code != 200 || len(vs) != 2 || vs[1].(map[string]any)["currency"] != "USD" {
		t.Fatalf("vendors: %d %v", code, out)
	}
	if code, out = adm.do("GET", "/v1/admin/thefts", nil); code != 200 || len(out["thefts"].([]any)) != 0 {
		t.Errorf("thefts: %d %v", code, out)
	}
	if code, out = adm.do("GET", "/v1/statements?account="+f.acct+"&from=2026-12-01&to=2026-12-02", nil); code != 200 || out["closing"] != "10" || out["currency"] != "EUR" {
		t.Errorf("admin reads alice's statement: %d %v", code, out)
	}
	if code, out = alice.do("GET", "/v1/statements?account=vendor:news.example:EUR&from=2026-12-01&to=2026-12-02", nil); code != 403 {
		t.Errorf("alice reads the vendor's statement: %d %v", code, out)
	}
}

// TestInsufficientFundsInCurrencyUnits: the refusal of an unfunded book
// names the amounts in currency units with the currency, not in nanos.
func TestInsufficientFundsInCurrencyUnits(t *testing.T) {
	f := newFixture(t)
	bk := f.newBook(t, 4, 4096, milli) // 16.384 EUR, alice holds 10
	_, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb)
	if err == nil || !strings.Contains(err.Error(), "holds 10 EUR, needs 16.384 EUR") {
		t.Fatalf("refusal: %v", err)
	}
}

// TestAdminCannotHandAVendorNameToAnotherKey: registering a taken vendor
// name for another key through the admin API is refused (409
// vendor_taken): the name's payments stay with its key.
func TestAdminCannotHandAVendorNameToAnotherKey(t *testing.T) {
	f, adm, _, _ := adminWorld(t)
	evil := string(spki.Advanced(pub(t, testKey("evil")).Sexp()))
	code, out := adm.json("POST", "/v1/admin/vendors", map[string]string{"name": "news.example", "key": evil, "currency": "EUR"})
	if code != 409 || out["error"] != "vendor_taken" {
		t.Fatalf("taken name for another key: %d %v", code, out)
	}
	vs, _ := f.b.Vendors(ctx)
	if len(vs) != 1 || vs[0].Key != hexKey(pub(t, f.vendor).Hash()) {
		t.Fatalf("vendors %+v", vs)
	}
	for _, name := range []string{"", "a b", strings.Repeat("x", 254)} {
		if code, out := adm.json("POST", "/v1/admin/vendors", map[string]string{"name": name, "key": evil, "currency": "EUR"}); code != 400 {
			t.Errorf("name %q: %d %v", name, code, out)
		}
	}
	if code, out := adm.json("POST", "/v1/admin/vendors", map[string]string{"name": "ok.example", "key": evil, "currency": "euro"}); code != 400 {
		t.Errorf("bad currency: %d %v", code, out)
	}
	for _, key := range []string{"", "(foo)", "(public-key (ed25519 |AAAA|))", "|not a list|", "{KDM6Zm9vKQ==}"} {
		if code, out := adm.json("POST", "/v1/admin/vendors", map[string]string{"name": "ok.example", "key": key, "currency": "EUR"}); code != 400 {
			t.Errorf("key %q: %d %v", key, code, out)
		}
	}
	if code, out := adm.do("POST", "/v1/admin/vendors", []byte(`{"name": 5}`)); code != 400 {
		t.Errorf("bad JSON: %d %v", code, out)
	}
}
