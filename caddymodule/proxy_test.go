package caddymodule

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/wallet"
)

// hlsServer serves a free playlist and segments that pass the gate.
func hlsServer(t testing.TB, g *Gate) *httptest.Server {
	seg := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		_, err := w.Write([]byte(strings.Repeat("s", 2048)))
		return err
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/live/playlist.m3u8" {
			w.Write([]byte("#EXTM3U\n#EXTINF:2.0,\nseg0.ts\n#EXTINF:2.0,\nseg1.ts\n#EXTINF:2.0,\nseg2.ts\n#EXT-X-ENDLIST\n"))
			return
		}
		if err := g.ServeHTTP(w, r, seg); err != nil {
			http.Error(w, err.Error(), 500)
		}
	}))
	if tt, ok := t.(*testing.T); ok {
		tt.Cleanup(srv.Close)
	}
	return srv
}

// TestWalletProxy: an ordinary HTTP client (a player) fetches an HLS
// playlist and its segments through the wallet's proxy, which pays one
// coupon per segment.
func TestWalletProxy(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	up := hlsServer(t, g)
	tr, err := wallet.NewTransport(w.owner)
	if err != nil {
		t.Fatal(err)
	}
	router := &wallet.Router{For: func(vendor string) (*wallet.Transport, error) { return tr, nil }}
	u, _ := url.Parse(up.URL)
	proxy := httptest.NewServer(wallet.NewProxy(u, router))
	defer proxy.Close()

	resp, err := http.Get(proxy.URL + "/live/playlist.m3u8")
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var segs []string
	for _, line := range strings.Split(string(pl), "\n") {
		if strings.HasSuffix(line, ".ts") {
			segs = append(segs, line)
		}
	}
	if len(segs) != 3 {
		t.Fatalf("playlist: %q", pl)
	}
	for _, s := range segs {
		resp, err := http.Get(proxy.URL + "/live/" + s)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) != 2048 {
			t.Fatalf("segment %s through the proxy: %d, %d bytes", s, resp.StatusCode, len(b))
		}
	}
	if tr.Spent() != 3 {
		t.Errorf("3 segments cost %d coupons", tr.Spent())
	}
	// A client's own Authorization is not forwarded upstream.
	req, _ := http.NewRequest("GET", proxy.URL+"/live/seg0.ts", nil)
	req.Header.Set("Authorization", "Basic c2VjcmV0")
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("request with its own Authorization: %v %v", err, resp)
	}
	resp.Body.Close()
}

// BenchmarkProxySegment is the wallet proxy's cost per paid segment: the
// player asks the proxy, which pays the gate (memory store) in process.
// Compare with BenchmarkDirectSegment, the same gate paid directly.
func BenchmarkProxySegment(b *testing.B) {
	benchSegments(b, true)
}

// BenchmarkDirectSegment: the same paid segments fetched by a client that
// pays itself (the wallet's RoundTripper, no proxy).
func BenchmarkDirectSegment(b *testing.B) {
	benchSegments(b, false)
}

func benchSegments(b *testing.B, viaProxy bool) {
	w := bigWorld(b)
	g := newGate(b, w, `{"backend":"memory"}`, 1)
	up := hlsServer(b, g)
	defer up.Close()
	tr, err := wallet.NewTransport(w.owner)
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: tr}
	target := up.URL
	if viaProxy {
		u, _ := url.Parse(up.URL)
		proxy := httptest.NewServer(wallet.NewProxy(u, &wallet.Router{For: func(string) (*wallet.Transport, error) { return tr, nil }}))
		defer proxy.Close()
		client, target = http.DefaultClient, proxy.URL
	}
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Get(target + "/live/seg0.ts")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
