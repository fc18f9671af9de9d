// Package examples runs every example's Caddyfile for real: each test
// adapts the Caddyfile with paths from the environment, loads it into an
// in-process Caddy on a free port, and pays through it with the wallet.
package examples

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"net/http"
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
}

func TestStreaming(t *testing.T) {
	url, h := env(t, "video.example", coupons.NanosPerUnit/2000)
	files := map[string]string{"live/playlist.m3u8": "#EXTM3U\n"}
	for i := 0; i < 6; i++ {
		files["live/seg"+string(rune('0'+i))+".ts"] = strings.Repeat("x", 1000)
	}
	site(t, files)
	load(t, "streaming/Caddyfile")
	tr, _ := wallet.NewTransport(h)
	c := &http.Client{Transport: tr}
	get(t, c, url+"/live/playlist.m3u8", 200)
	for i := 0; i < 6; i++ {
		get(t, c, url+"/live/seg"+string(rune('0'+i))+".ts", 200)
	}
	if tr.Spent() != 6 {
		t.Errorf("6 segments cost %d coupons", tr.Spent())
	}
}

func TestFleet(t *testing.T) {
	t.Setenv("REDIS_URL", testredis.Start(t))
	url, h := env(t, "news.example", coupons.NanosPerUnit/1000)
	load(t, "fleet/Caddyfile")
	tr, _ := wallet.NewTransport(h)
	for k := 0; k < 3; k++ {
		if body := get(t, &http.Client{Transport: tr}, url+"/premium/x", 200); !strings.HasPrefix(body, "premium content from ") {
			t.Fatalf("body %q", body)
		}
	}
	get(t, http.DefaultClient, url+"/", 200)
}
