package caddymodule

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestGateConfigErrors: configurations that cannot work are refused at
// Provision or Validate with a message that says what to write.
func TestGateConfigErrors(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	dir := t.TempDir()
	base := func() *Gate {
		return &Gate{Vendor: "news.example", BrokerKeys: []string{w.brokerKeyFile}, SecretFile: filepath.Join(dir, "secret"),
			StoreRaw: []byte(`{"backend":"memory"}`)}
	}
	cases := []struct {
		name   string
		mutate func(*Gate)
		want   string
	}{
		{"no vendor", func(g *Gate) { g.Vendor = "" }, "vendor"},
		{"upper-case vendor", func(g *Gate) { g.Vendor = "News.example" }, "lower-case host name"},
		{"no broker key", func(g *Gate) { g.BrokerKeys = nil }, "broker_key"},
		{"missing broker key file", func(g *Gate) { g.BrokerKeys = []string{filepath.Join(dir, "nope.pub")} }, "no such file"},
		{"broker key file is not a key", func(g *Gate) { g.BrokerKeys = []string{g.SecretFile} }, "broker_key"},
		{"mode semi without broker", func(g *Gate) { g.Mode = "semi" }, "set 'broker https://…' and 'vendor_key"},
		{"mode online without vendor key", func(g *Gate) { g.Mode, g.Broker = "online", "http://127.0.0.1:1" }, "vendor_key"},
		{"unknown mode", func(g *Gate) { g.Mode = "paranoid" }, "'mode semi' or 'mode online'"},
		{"negative unit", func(g *Gate) { g.Unit = "-1" }, "unit"},
		{"lower-case currency", func(g *Gate) { g.Currency = "eur" }, "currency"},
		{"max_jump below price", func(g *Gate) { g.Price, g.MaxJump = 10, 5 }, "below the price"},
		{"tiny open limit", func(g *Gate) { g.MaxOpenBytes = 100 }, "max_open_bytes"},
		{"negative body limit", func(g *Gate) { g.MaxBody = -1 }, "max_body"},
		{"broker not a URL", func(g *Gate) { g.Broker = "broker.example" }, "http(s) URL"},
		{"redis without url", func(g *Gate) { g.StoreRaw = []byte(`{"backend":"redis"}`) }, "url is required"},
		{"meter_window without meter", func(g *Gate) { g.Meter = &MeterConfig{Window: 4} }, "meter_window and meter_hold need a meter"},
		{"meter of frames", func(g *Gate) { g.Meter = &MeterConfig{By: "frames", Per: 1} }, "meter: coupons: malformed meter"},
		{"meter of 0 bytes", func(g *Gate) { g.Meter = &MeterConfig{By: "bytes"} }, "meter: coupons: malformed meter"},
		{"meter window beyond max_jump", func(g *Gate) { g.Price, g.Meter = 4, &MeterConfig{By: "events", Per: 1, Window: 1000} }, "above max_jump"},
		{"meter hold too short", func(g *Gate) { g.Meter = &MeterConfig{By: "seconds", Per: 1, Hold: caddy.Duration(time.Millisecond)} }, "meter_hold must be from 100ms to 1h"},
	}
	// The secret file must exist for the "not a key" case.
	if _, err := loadOrCreateSecret(filepath.Join(dir, "secret")); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		g := base()
		c.mutate(g)
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		err := g.Provision(ctx)
		if err == nil {
			err = g.Validate()
		}
		g.Cleanup()
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	// The base configuration itself is valid.
	g := base()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := g.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer g.Cleanup()
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
}
