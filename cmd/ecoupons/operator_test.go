package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/stack"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
	"github.com/ecoupons/ecoupons/wallet"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestOperatorScripts runs testdata/ops/*.txtar, the operator's and the
// vendor's commands, against a broker and a gated site in this process.
// $BROKER_DIR holds the broker's admin.pem, broker.pub and the stack
// vendor's vendor.pem.
func TestOperatorScripts(t *testing.T) {
	s, err := stack.Start(t.TempDir(), freeAddr(t), freeAddr(t), demoSite(), []stack.Route{{Path: "/premium/*", Price: 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if err := s.RegisterVendor(); err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/ops",
		Setup: func(e *testscript.Env) error {
			e.Setenv("BROKER", "http://"+s.Broker)
			e.Setenv("BROKER_ADDR", s.Broker)
			e.Setenv("BROKER_DIR", s.Dir)
			e.Setenv("SITE", "http://"+s.Site)
			e.Setenv("HOME", e.WorkDir)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// walletaccount DIR VAR: $VAR is the account of the wallet in DIR.
			"walletaccount": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: walletaccount DIR VAR")
				}
				w, err := wallet.LoadWith(ts.MkAbs(args[0]), wallet.KeyOptions{})
				ts.Check(err)
				ts.Setenv(args[1], w.Config.Account)
			},
			// userin DIR CURRENCY: the key of the wallet in DIR opens an
			// account in CURRENCY at the broker (POST /v1/users), whatever
			// the wallet's own configuration.
			"userin": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: userin DIR CURRENCY")
				}
				w, err := wallet.LoadWith(ts.MkAbs(args[0]), wallet.KeyOptions{})
				ts.Check(err)
				var out struct{ Account string }
				ts.Check(s.CallJSON(w.Key, "POST", "/v1/users", map[string]string{"currency": args[1]}, &out))
				ts.Logf("account %s", out.Account)
			},
			// mkstore FILE: a gate's bolt store with lane 1 of a book
			// accepted up to coupon 7 (not redeemed) and lane 2 refused by
			// the broker at coupon 9 as unknown_book.
			"mkstore": func(ts *testscript.TestScript, neg bool, args []string) {
				st, err := store.OpenBolt(ts.MkAbs(args[0]), store.BoltOptions{})
				ts.Check(err)
				defer st.Close()
				ctx := context.Background()
				m := store.Meta{Length: 1024, Unit: coupons.NanosPerUnit / 1000, Currency: "EUR", NotAfter: time.Now().Add(time.Hour), Nonce: "AAECAwQFBgcICQoLDA0ODw"}
				m.Anchor[0], m.Tag[0] = 1, 2
				id := coupons.LaneID{Book: [32]byte{7}, Lane: 1}
				r, err := st.Open(ctx, id, store.NewRecord(m))
				ts.Check(err)
				next := r
				next.State.Last, next.State.LastValue = 7, [32]byte{7}
				ts.Check(st.Advance(ctx, id, r.State.Last, r.Credit, next, 0))
				ts.Check(st.Refuse(ctx, store.Refusal{ID: coupons.LaneID{Book: [32]byte{7}, Lane: 2}, Index: 9, Code: coupons.CodeUnknownBook,
					Message: "broker: unknown book", At: time.Now()}))
			},
		},
	})
}

// TestCheckBrokerURL: a broker URL without a scheme, with an endpoint's
// path or a query is refused with the URL meant.
func TestCheckBrokerURL(t *testing.T) {
	for _, c := range []struct{ in, ok, hint string }{
		{"http://127.0.0.1:8481", "http://127.0.0.1:8481", ""},
		{"https://broker.example/", "https://broker.example", ""},
		{"https://example.org/broker/", "https://example.org/broker", ""},
		{"127.0.0.1:8481", "", "did you mean http://127.0.0.1:8481?"},
		{"localhost:8080/", "", "did you mean http://localhost:8080?"},
		{"broker.example", "", "did you mean https://broker.example?"},
		{"http://127.0.0.1:8481/v1/broker", "", "did you mean http://127.0.0.1:8481?"},
		{"https://b.example/x/v1", "", "did you mean https://b.example/x?"},
		{"http://b.example/?a=1", "", "did you mean http://b.example/?"},
		{"ftp://b.example", "", "http or https"},
		{"http://", "", "no host"},
		{"", "", "required"},
	} {
		got, err := checkBrokerURL("--broker", c.in)
		if c.ok != "" {
			if err != nil || got != c.ok {
				t.Errorf("%q: %q %v, want %q", c.in, got, err, c.ok)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.hint) {
			t.Errorf("%q: %q %v, want an error with %q", c.in, got, err, c.hint)
		}
		if oe, ok := err.(opsErr); !ok || oe.code != opsExitUsage {
			t.Errorf("%q: %v is not a usage error", c.in, err)
		}
	}
}

// TestAskBrokerKeySaysWhatAnswered: a URL that answers, but not as an
// ecoupons broker (a gate's 402, a web page), and one where nothing
// answers, each get an error saying so, never a parser's message.
func TestAskBrokerKeySaysWhatAnswered(t *testing.T) {
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusPaymentRequired)
		w.Write([]byte(`{"error":"payment_required"}`))
	}))
	defer gate.Close()
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>hello</html>")) }))
	defer page.Close()
	for _, c := range []struct{ url, want string }{
		{gate.URL, "does not answer as an ecoupons broker (GET /v1/broker: 402 Payment Required)"},
		{page.URL, "does not answer as an ecoupons broker (GET /v1/broker: the answer is not an S-expression)"},
		{"http://127.0.0.1:1", "no broker answers at http://127.0.0.1:1"},
	} {
		_, err := fetchBrokerKey(context.Background(), c.url)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "spki:") {
			t.Errorf("%s: %v, want %q", c.url, err, c.want)
		}
	}
}

// TestParseAmountArg: amounts with or without their currency; bad ones
// are usage errors.
func TestParseAmountArg(t *testing.T) {
	for in, want := range map[string]int64{"5": 5 * coupons.NanosPerUnit, "0.25 EUR": coupons.NanosPerUnit / 4, "2EUR": 2 * coupons.NanosPerUnit} {
		if n, _, err := parseAmountArg("AMOUNT", in); err != nil || n != want {
			t.Errorf("%q: %d %v", in, n, err)
		}
	}
	for _, in := range []string{"abc", "", "1e9999", "5.0000000001"} {
		if _, _, err := parseAmountArg("AMOUNT", in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestTopUpWithoutAnswerSaysRetryWithSameID: a top-up whose answer is
// lost (the connection dies after the broker got it) tells the operator to
// retry with the same id, which never credits twice.
func TestTopUpWithoutAnswerSaysRetryWithSameID(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	defer srv.Close()
	bk := stack.NewKey()
	bp, err := spki.NewPublicKey(bk.Public())
	if err != nil {
		t.Fatal(err)
	}
	cl := &opsClient{base: srv.URL, key: stack.NewKey(), brokerKey: bp}
	_, err = topUp(context.Background(), cl, "user:00:EUR", coupons.NanosPerUnit, "pay-7")
	if err == nil || !strings.Contains(err.Error(), "retry with --id pay-7") {
		t.Fatalf("lost answer: %v", err)
	}
	if oe, ok := err.(opsErr); !ok || oe.code != opsExitFailure {
		t.Errorf("exit code of %v", err)
	}
}
