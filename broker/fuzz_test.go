package broker

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzAPI: any body, correctly signed by a registered vendor or user, on any
// route is answered with a status below 500 (a clear 4xx for bad input),
// never a panic, and the ledger's invariants hold afterwards (checked when
// the fixture is cleaned up).
func FuzzAPI(f *testing.F) {
	fx := newFixture(f)
	api := &API{Broker: fx.b}
	routes := []string{"POST /v1/users", "POST /v1/vendors", "POST /v1/books", "POST /v1/redeem", "GET /v1/balance",
		"GET /v1/statements?account=x&from=2026-01-01&to=2026-01-02", "POST /v1/revoke", "GET /v1/thefts", "GET /v1/vendor?name=news.example",
		"POST /v1/admin/topup", "POST /v1/admin/credit", "POST /v1/lanes"}
	f.Add(uint8(3), false, []byte(`{"items":[{"lane":"AAAA.1","i":3,"w":"AA","theft":{"i":1,"digest":"","mac":"","next":""}}]}`))
	f.Add(uint8(2), true, []byte(`(sequence)`))
	f.Add(uint8(0), true, []byte(`{"currency":"XXX"}`))
	f.Add(uint8(11), false, []byte(`{"lane":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.1","anchor":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","reserve":true,"holder":"h","keys":["AA"]}`))
	f.Fuzz(func(t *testing.T, route uint8, asUser bool, body []byte) {
		method, path, _ := bytes.Cut([]byte(routes[int(route)%len(routes)]), []byte(" "))
		req := httptest.NewRequest(string(method), string(path), bytes.NewReader(body))
		key := fx.vendor
		if asUser {
			key = fx.alice
		}
		if err := SignRequest(req, body, key, fixtureBroker(t), fx.now); err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
		}
		if rec.Code != http.StatusOK && rec.Code != http.StatusCreated && rec.Body.Len() == 0 {
			t.Fatalf("%s %s: %d without a reason", method, path, rec.Code)
		}
	})
}

// FuzzOfficeLogin: any auth parameter of a sign-in link, and any form
// posted to the back office, is answered below 500 and starts no session
// unless it is a valid signature.
func FuzzOfficeLogin(f *testing.F) {
	fx := newFixture(f)
	api := &API{Broker: fx.b}
	link, err := OfficeLoginURL("http://broker.example", fixtureBroker(f), fx.alice, fx.now)
	if err != nil {
		f.Fatal(err)
	}
	valid, _ := url.Parse(link)
	f.Add(valid.Query().Get("auth"), "grant=00&csrf=x")
	f.Add("key=(, ts=1, nonce=AAAA, sig=)", "")
	f.Fuzz(func(t *testing.T, auth, form string) {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest("GET", OfficePath+"login?auth="+url.QueryEscape(auth), nil))
		if rec.Code >= 500 {
			t.Fatalf("login: %d %s", rec.Code, rec.Body)
		}
		if rec.Code == http.StatusSeeOther && len(rec.Result().Cookies()) == 0 {
			t.Fatal("redirected without a session")
		}
		req := httptest.NewRequest("POST", OfficePath+"revoke", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, c := range rec.Result().Cookies() {
			req.AddCookie(c)
		}
		rec = httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if rec.Code >= 500 || rec.Code == http.StatusSeeOther {
			t.Fatalf("revoke with form %q: %d", form, rec.Code)
		}
	})
}
