// Package examples runs every example's Caddyfile for real: each test
// adapts the Caddyfile with paths from the environment, loads it into an
// in-process Caddy on a free port, and pays through it with the wallet.
package examples

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/ecoupons/ecoupons/caddymodule"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/internal/testredis"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
	"go.step.sm/crypto/pemutil"
)

// env prepares keys and paths for a Caddyfile and returns the site URL
// and a holder of a book of 2 lanes × 64 coupons at vendor, with unit nanos.
func env(t *testing.T, vendor string, unit int64) (string, *delegation.Holder) {
	t.Helper()
	dir := t.TempDir()
	_, brokerKey, _ := ed25519.GenerateKey(rand.Reader)
	_, vendorKey, _ := ed25519.GenerateKey(rand.Reader)
	_, alice, _ := ed25519.GenerateKey(rand.Reader)
	bp, _ := spki.NewPublicKey(brokerKey.Public())
	ap, _ := spki.NewPublicKey(alice.Public())
	os.WriteFile(filepath.Join(dir, "broker.pub"), spki.Advanced(bp.Sexp()), 0o644)
	block, _ := pemutil.Serialize(vendorKey)
	os.WriteFile(filepath.Join(dir, "vendor.pem"), pem.EncodeToMemory(block), 0o600)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	for k, v := range map[string]string{
		"SITE": "http://" + addr, "BROKER_URL": "http://127.0.0.1:1", "BROKER_KEY": filepath.Join(dir, "broker.pub"),
		"VENDOR_KEY": filepath.Join(dir, "vendor.pem"), "SPENT_DB": filepath.Join(dir, "spent.db"),
		"SECRET": filepath.Join(dir, "gate.secret"), "ROOT": filepath.Join(dir, "site"),
		"XDG_DATA_HOME": filepath.Join(dir, "data"), "XDG_CONFIG_HOME": filepath.Join(dir, "config"),
	} {
		t.Setenv(k, v)
	}
	b, sec, anchors, err := coupons.Create(coupons.Params{Vendor: vendor, Broker: bp.Hash(), Owner: ap.Hash(), Lanes: 2, Length: 64,
		Currency: "EUR", Unit: unit, NotAfter: time.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := b.Sign(alice)
	user, _ := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(bp), Subject: spki.HashPrincipal(ap.Hash()), Tag: coupons.UserTag("a", "EUR")}, brokerKey)
	h, err := delegation.NewOwner(sb, user, sec, anchors, alice)
	if err != nil {
		t.Fatal(err)
	}
	if h.Funding, err = coupons.SignFunding(sb.Book, brokerKey, time.Time{}); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr, h
}

func site(t *testing.T, files map[string]string) {
	for name, body := range files {
		p := filepath.Join(os.Getenv("ROOT"), name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(body), 0o644)
	}
}

// load adapts and runs an example Caddyfile.
func load(t *testing.T, caddyfile string) {
	t.Helper()
	src, err := os.ReadFile(caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	cfg, warn, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": caddyfile})
	if err != nil {
		t.Fatalf("%s does not adapt: %v", caddyfile, err)
	}
	for _, w := range warn {
		t.Logf("%s: %v", caddyfile, w)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("%s does not run: %v", caddyfile, err)
	}
	t.Cleanup(func() { caddy.Stop() })
}

func get(t *testing.T, c *http.Client, url string, want int) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := new(strings.Builder)
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d, want %d: %s", url, resp.StatusCode, want, b)
	}
	return b.String()
}

func TestPublisher(t *testing.T) {
	url, h := env(t, "news.example", coupons.NanosPerUnit/1000)
	site(t, map[string]string{"index.html": "free", "premium/a.html": "premium"})
	load(t, "publisher/Caddyfile")
	get(t, http.DefaultClient, url+"/", 200)
	get(t, http.DefaultClient, url+"/premium/a.html", 402)
	tr, _ := wallet.NewTransport(h)
	if body := get(t, &http.Client{Transport: tr}, url+"/premium/a.html", 200); body != "premium" {
		t.Fatalf("body %q", body)
	}
	if tr.Spent() != 2 {
		t.Errorf("spent %d coupons, the Caddyfile says 2", tr.Spent())
	}
	// The gate's own endpoints are reachable though the matcher is
	// /premium/*: the receipt commitment is served, signed.
	if body := get(t, http.DefaultClient, url+"/.well-known/ecoupons/vendor", 200); !strings.Contains(body, "ecoupons-receipts") {
		t.Errorf("receipt commitment: %q", body)
	}
}

// TestStreaming: an ordinary player (a plain HTTP client) plays the stream
// through the wallet's paying proxy: one coupon per segment.
func TestStreaming(t *testing.T) {
	url, h := env(t, "video.example", coupons.NanosPerUnit/2000)
	files := map[string]string{"live/playlist.m3u8": "#EXTM3U\n"}
	for i := 0; i < 6; i++ {
		files[fmt.Sprintf("live/seg%d.ts", i)] = strings.Repeat("x", 1000)
	}
	site(t, files)
	load(t, "streaming/Caddyfile")
	tr, _ := wallet.NewTransport(h)
	up, _ := neturl.Parse(url)
	proxy := httptest.NewServer(wallet.NewProxy(up, &wallet.Router{For: func(string) (*wallet.Transport, error) { return tr, nil }}))
	defer proxy.Close()
	player := http.DefaultClient
	get(t, player, url+"/live/seg0.ts", 402) // without the proxy, the player is asked to pay
	get(t, player, proxy.URL+"/live/playlist.m3u8", 200)
	for i := 0; i < 6; i++ {
		get(t, player, fmt.Sprintf("%s/live/seg%d.ts", proxy.URL, i), 200)
	}
	if tr.Spent() != 6 {
		t.Errorf("6 segments cost %d coupons", tr.Spent())
	}
}

// TestFleet runs three nodes of fleet/Caddyfile in one Caddy, each on its
// own port and all on one Redis, behind a round-robin reverse proxy (one
// address), and pays through that address: consecutive payments of one
// lane land on different nodes and are all accepted once.
func TestFleet(t *testing.T) {
	t.Setenv("REDIS_URL", testredis.Start(t))
	lb, h := env(t, "news.example", coupons.NanosPerUnit/1000)
	src, err := os.ReadFile("fleet/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	var servers []any
	var upstreams []any
	for i := 0; i < 3; i++ {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := l.Addr().String()
		l.Close()
		t.Setenv("SITE", "http://"+addr)
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, nil)
		if err != nil {
			t.Fatal(err)
		}
		var c map[string]any
		json.Unmarshal(cfg, &c)
		for _, srv := range c["apps"].(map[string]any)["http"].(map[string]any)["servers"].(map[string]any) {
			servers = append(servers, srv)
		}
		upstreams = append(upstreams, map[string]any{"dial": addr})
	}
	all := map[string]any{}
	for i, srv := range servers {
		all[fmt.Sprintf("node%d", i)] = srv
	}
	all["lb"] = map[string]any{"listen": []string{strings.TrimPrefix(lb, "http://")}, "automatic_https": map[string]any{"disable": true},
		"routes": []any{map[string]any{"handle": []any{map[string]any{"handler": "reverse_proxy", "upstreams": upstreams,
			"load_balancing": map[string]any{"selection_policy": map[string]any{"policy": "round_robin"}}}}}}}
	cfg, _ := json.Marshal(map[string]any{"admin": map[string]any{"disabled": true}, "apps": map[string]any{"http": map[string]any{"servers": all}}})
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caddy.Stop() })
	tr, _ := wallet.NewTransport(h, 0)
	nodes := map[string]bool{}
	for k := 0; k < 9; k++ {
		body := get(t, &http.Client{Transport: tr}, lb+"/premium/x", 200)
		if !strings.HasPrefix(body, "premium content from ") {
			t.Fatalf("body %q", body)
		}
		nodes[body] = true
	}
	if len(nodes) != 3 {
		t.Errorf("the payments of one lane were served by %d nodes, want all 3: %v", len(nodes), nodes)
	}
	get(t, http.DefaultClient, lb+"/", 200)
	if tr.Spent() != 9 {
		t.Errorf("9 requests cost %d coupons", tr.Spent())
	}
}
