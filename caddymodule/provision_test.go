package caddymodule

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.step.sm/crypto/pemutil"
)

// workerStacks counts the goroutines running one of the gate's workers,
// or a cache's (ristretto) goroutines.
func workerStacks() int {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	n := 0
	for _, s := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(s, "redeemLoop") || strings.Contains(s, "(*revocations).poll") ||
			strings.Contains(s, "ristretto") {
			n++
		}
	}
	return n
}

// dirEntries lists every path under dir (dir itself excluded).
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if p != dir {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// writeKeyPEM writes label's test key as a PEM file in dir.
func writeKeyPEM(t *testing.T, dir, label string) string {
	t.Helper()
	block, err := pemutil.Serialize(testKey(label))
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, label+".pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestValidateRejectsBadConfigWithoutCreatingFiles: a configuration that
// Validate rejects is rejected by Provision already, before it creates the
// secret file, opens the (bolt) store, asks the network for revocation
// lists or starts a goroutine: Caddy provisions before it validates, so
// `caddy validate` on a bad configuration would otherwise leave files
// behind.
func TestValidateRejectsBadConfigWithoutCreatingFiles(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	keys := t.TempDir()
	vendorPEM := writeKeyPEM(t, keys, "vendor")
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "no", http.StatusTeapot)
	}))
	defer srv.Close()
	// base would start everything: the default bolt store and secret file
	// under the data directory, redemption (broker and vendor_key), the
	// revocation poller after a first fetch, receipts.
	base := func() *Gate {
		return &Gate{Vendor: "news.example", BrokerKeys: []string{w.brokerKeyFile}, Broker: srv.URL, VendorKey: vendorPEM,
			Revocations: []string{srv.URL + "/v1/revocations"}}
	}
	cases := []struct {
		name   string
		mutate func(*Gate)
		want   string
	}{
		{"bad vendor", func(g *Gate) { g.Vendor = "News.example" }, "lower-case host name"},
		{"vendor with a path", func(g *Gate) { g.Vendor = "../news" }, "lower-case host name"},
		{"no broker key", func(g *Gate) { g.BrokerKeys = nil }, "broker_key"},
		{"mode semi without broker", func(g *Gate) { g.Mode, g.Broker = ModeSemi, "" }, "set 'broker https://…'"},
		{"unknown mode", func(g *Gate) { g.Mode = "paranoid" }, "'mode semi' or 'mode online'"},
		{"max_jump below price", func(g *Gate) { g.Price, g.MaxJump = 10, 5 }, "below the price"},
		{"bad currency", func(g *Gate) { g.Currency = "eur" }, "currency"},
		{"bad unit", func(g *Gate) { g.Unit = "-1" }, "unit"},
		{"bad broker URL", func(g *Gate) { g.Broker = "broker.example" }, "http(s) URL"},
		{"ipv6_prefix out of bounds", func(g *Gate) { g.IPv6Prefix = 129 }, "ipv6_prefix"},
		{"tiny max_open_bytes", func(g *Gate) { g.MaxOpenBytes = 100 }, "max_open_bytes"},
		{"negative max_body", func(g *Gate) { g.MaxBody = -1 }, "max_body"},
		{"short redeem_every", func(g *Gate) { g.RedeemEvery = caddy.Duration(1) }, "redeem_every"},
		{"short receipt_interval", func(g *Gate) { g.ReceiptInterval = caddy.Duration(1) }, "receipt_interval"},
		{"short revocations_every", func(g *Gate) { g.RevocationsEvery = caddy.Duration(1) }, "revocations_every"},
		{"redis store without url", func(g *Gate) { g.StoreRaw = []byte(`{"backend":"redis"}`) }, "url is required"},
		{"redis store with a bad url", func(g *Gate) { g.StoreRaw = []byte(`{"backend":"redis","url":"http://x"}`) }, "redis store: url"},
		{"bolt store with a negative commit_delay", func(g *Gate) { g.StoreRaw = []byte(`{"backend":"bolt","commit_delay":-1}`) }, "commit_delay"},
		{"pebble store with a lease_idle of two days", func(g *Gate) { g.StoreRaw = []byte(`{"backend":"pebble","lease_idle":172800000000000}`) }, "lease_idle must be a duration from 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := t.TempDir()
			t.Setenv("XDG_DATA_HOME", data)
			before := workerStacks()
			g := base()
			c.mutate(g)
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := g.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Provision: %v, want an error mentioning %q", err, c.want)
			}
			if after := workerStacks(); after > before {
				t.Errorf("Provision started %d worker goroutines", after-before)
			}
			if g.store != nil || g.core != nil || g.sigs != nil || g.stopRedeem != nil || g.stopPoll != nil {
				t.Errorf("Provision opened the store, the lanes core, a cache or a worker")
			}
			g.Cleanup()
			if got := dirEntries(t, data); len(got) > 0 {
				t.Errorf("Provision created %v", got)
			}
			// The gate's own checks are Validate's too (a store module's
			// are its Validate, run by Caddy as it loads the module).
			if g.StoreRaw == nil {
				if vErr := g.Validate(); vErr == nil || (err != nil && vErr.Error() != err.Error()) {
					t.Errorf("Validate: %v, want Provision's error %v", vErr, err)
				}
			}
		})
	}
	if n := hits.Load(); n > 0 {
		t.Errorf("the bad configurations asked the network %d times", n)
	}

	// The base configuration itself provisions, and creates its files
	// where the cases above looked for them.
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	g := base()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := g.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	g.Cleanup()
	for _, f := range []string{"news.example.secret", "news.example.db"} {
		if _, err := os.Stat(filepath.Join(data, "caddy", "ecoupons", f)); err != nil {
			t.Errorf("the valid configuration: %v", err)
		}
	}
	if hits.Load() == 0 {
		t.Errorf("the valid configuration did not fetch its revocation list")
	}
}
