package brokermodule

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/internal/testutil"
	"github.com/ecoupons/ecoupons/spki"
	"go.step.sm/crypto/pemutil"
)

// TestBrokerHandler serves the broker API from Caddy and passes other
// requests on.
func TestBrokerHandler(t *testing.T) {
	dir := t.TempDir()
	k := testutil.Key("broker")
	block, _ := pemutil.Serialize(k)
	keyFile := filepath.Join(dir, "broker.pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600)
	h := &BrokerHandler{KeyFile: keyFile, Database: filepath.Join(dir, "broker.db")}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/broker", nil), okHandler)
	x, err := spki.Parse(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := spki.ParsePublicKey(x)
	want, _ := spki.NewPublicKey(k.Public())
	if !got.Equal(want) {
		t.Fatal("the broker serves another key")
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/about", nil), okHandler)
	if rec.Body.String() != "paid content" {
		t.Fatal("non-API request not passed on")
	}
	for _, bad := range []*BrokerHandler{{}, {KeyFile: filepath.Join(dir, "nope.pem")}} {
		if err := bad.Provision(ctx); err == nil {
			t.Error("broker without a usable key provisioned")
		}
	}
	for cfg, want := range map[string]string{"fee 20000": "basis points", "key": "exactly one value", "color red": "unknown ecoupon_broker option", "release_every 1ms": "at least 1s", "revocations_per_hour 0": "1 to 1000000"} {
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(":8080 {\n\tecoupon_broker {\n\t\t"+cfg+"\n\t}\n}\n"), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v", cfg, err)
		}
	}
}

// okHandler is the next handler: it answers "paid content".
var okHandler = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.Write([]byte("paid content"))
	return nil
})
