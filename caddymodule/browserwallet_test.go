package caddymodule

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/chromedp/chromedp"
	"go.step.sm/crypto/pemutil"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/internal/testbrowser"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
)

// site is a publisher behind a gate: a paid article, paid HLS segments, a
// free page that plays them, and the gate's well-known paths.
type site struct {
	srv      *httptest.Server
	articles atomic.Int32 // paid articles served
	segments atomic.Int32 // paid segments served
}

const hlsPage = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Stream</title></head><body>
<h1>Stream</h1><p id="result">loading</p>
<script>
(async () => {
  const out = [];
  for (let i = 0; i < 4; i++) {
    const r = await fetch('/premium/seg' + i + '.ts');
    const b = await r.arrayBuffer();
    out.push('seg' + i + ':' + r.status + ':' + b.byteLength);
  }
  document.getElementById('result').textContent = out.join(' ');
})();
</script></body></html>`

func newSite(t *testing.T, g *Gate) *site {
	s := &site{}
	upstream := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		switch {
		case strings.HasPrefix(r.URL.Path, "/premium/seg"):
			s.segments.Add(1)
			w.Header().Set("Content-Type", "video/mp2t")
			w.Write(make([]byte, 188*40))
		case strings.HasPrefix(r.URL.Path, "/premium/"):
			s.articles.Add(1)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, `<!doctype html><html lang="en"><head><title>Article</title></head><body><h1 id="article">The paid article</h1><p>%s</p></body></html>`, r.URL.Path)
		default:
			http.NotFound(w, r)
		}
		return nil
	})
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/hls.html":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write([]byte(hlsPage))
		case strings.HasPrefix(r.URL.Path, "/premium/"), strings.HasPrefix(r.URL.Path, wellKnownPrefix):
			if err := g.ServeHTTP(w, r, upstream); err != nil {
				http.Error(w, err.Error(), 500)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// spentAt is the coupons the gate accepted on lanes of h's book.
func spentAt(t *testing.T, g *Gate, h *delegation.Holder, lanes ...uint32) uint32 {
	t.Helper()
	var n uint32
	for _, l := range lanes {
		r, err := g.store.Get(context.Background(), coupons.LaneID{Book: h.Book.Book.ID(), Lane: l})
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n += r.State.Last
	}
	return n
}

// grantFor is what `ecoupons wallet delegate --to CODE --cap … --lanes
// lo-hi` does: the owner's portion grant to the device a pairing code
// names.
func grantFor(t *testing.T, owner *delegation.Holder, code string, lo, hi uint32, capNanos int64) string {
	t.Helper()
	return string(spki.Transport(issueFor(t, owner, code, lo, hi, capNanos).Sexp()))
}

// issueFor is grantFor returning the grant.
func issueFor(t *testing.T, owner *delegation.Holder, code string, lo, hi uint32, capNanos int64) *delegation.Grant {
	t.Helper()
	x, err := spki.Parse([]byte(code))
	if err != nil {
		t.Fatalf("pairing code %q: %v", code, err)
	}
	dev, err := delegation.ParseDevice(x)
	if err != nil {
		t.Fatal(err)
	}
	g, err := owner.Issue(dev, lo, hi, delegation.GrantOptions{Cap: capNanos, NotAfter: time.Now().Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestBrowserWalletPaysInChromium drives the browser wallet (the Go wallet
// as WebAssembly in the gate's service worker) in a real headless
// Chromium: the gated article gets the HTML 402 page; enabling the wallet
// shows a pairing code, the owner grants it a capped portion, the page
// imports it and the reload renders the article, paid; a page fetching 4
// HLS segments pays one coupon per segment; after the browser restarts on
// the same profile the lanes continue (the gate would refuse a coupon
// paid twice); the reader's spending limit stops a payment with a message
// on the page; and a web app on another origin pays through CORS with
// ecoupons.fetch, from a wallet of its own.
func TestBrowserWalletPaysInChromium(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	app := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(rw, `<!doctype html><html lang="en"><head><title>App</title><script src="%s/.well-known/ecoupons/ecoupons.js"></script></head><body><p id="app">app</p></body></html>`,
			r.URL.Query().Get("gate"))
	}))
	t.Cleanup(app.Close)
	// The gate issues receipts (vendor_key): the wallet keeps them.
	block, err := pemutil.Serialize(testKey("vendor"))
	if err != nil {
		t.Fatal(err)
	}
	vendorKey := filepath.Join(t.TempDir(), "vendor.pem")
	if err := os.WriteFile(vendorKey, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newGateWith(t, w, `{"backend":"memory"}`, 1, func(g *Gate) { g.CORSOrigins, g.VendorKey = []string{app.URL}, vendorKey })
	s := newSite(t, g)
	profile := t.TempDir()
	shots := os.Getenv("ECOUPONS_SCREENSHOTS") // a directory: keep the pages' pictures there
	ctx, stop := testbrowser.Start(t, profile, 120*time.Second)
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.Join(strings.Fields(v), " ")
	}
	shoot := func(name string) {
		if shots == "" {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	article := s.srv.URL + "/premium/article.html"
	// fitsPhone checks that nothing sticks out of a 360 px wide screen.
	// labelled checks that every control of the page has a label.
	labelled := func(page string) {
		t.Helper()
		bare, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('input, select, textarea')].filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id).join(' ')`))
		if err != nil || bare != "" {
			t.Errorf("%s: controls without a label: %q %v", page, bare, err)
		}
	}
	fitsPhone := func(page string) {
		t.Helper()
		wide, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 361 && !e.closest('.scroll')).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).join(', ')`))
		if err != nil || wide != "" {
			t.Errorf("%s is wider than 360 px: %s %v", page, wide, err)
		}
	}

	// 1. The navigation gets the HTML 402 page, at phone width too.
	do("402 page", chromedp.EmulateViewport(360, 800), chromedp.Navigate(article), chromedp.WaitVisible(chromedp.CSS("#bw-enable")))
	if got := text("body"); !strings.Contains(got, "0.001 EUR") || !strings.Contains(got, "Pay from this browser") || s.articles.Load() != 0 {
		t.Fatalf("the 402 page: %q (articles served %d)", got, s.articles.Load())
	}
	fitsPhone("the 402 page")
	shoot("page402.png")

	// 2. Enable: the service worker is registered, the page shows the
	// browser's pairing code.
	do("enable", chromedp.Click(chromedp.CSS("#bw-enable")), chromedp.WaitVisible(chromedp.CSS("#bw-code")))
	code, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById('bw-code').value || null`, chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil || !strings.HasPrefix(code, "{") {
		t.Fatalf("pairing code %q: %v", code, err)
	}
	fitsPhone("the 402 page with the pairing code")
	labelled("the 402 page")
	shoot("page402-pairing.png")
	// 3. The owner grants the browser 100 coupons (0.100 EUR); the page
	// imports the grant and reloads: the article, paid.
	grant := grantFor(t, w.owner, code, 0, 1, 100_000_000)
	do("import", chromedp.SetValue(chromedp.CSS("#bw-grant"), grant), chromedp.Click(chromedp.CSS("#bw-import")),
		chromedp.WaitVisible(chromedp.CSS("#article")))
	if got := text("#article"); got != "The paid article" || s.articles.Load() != 1 || spentAt(t, g, w.owner, 0, 1) != 1 {
		t.Fatalf("after the import: %q, %d articles served, %d coupons", got, s.articles.Load(), spentAt(t, g, w.owner, 0, 1))
	}

	// 4. A page that fetches 4 HLS segments pays one coupon for each.
	do("hls", chromedp.Navigate(s.srv.URL+"/hls.html"))
	res, err := chromedp.Run(ctx, chromedp.Poll[string](`(t => t.startsWith('seg') ? t : null)(document.getElementById('result').textContent)`,
		chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil || res != "seg0:200:7520 seg1:200:7520 seg2:200:7520 seg3:200:7520" {
		t.Fatalf("segments: %q %v", res, err)
	}
	if n := spentAt(t, g, w.owner, 0, 1); n != 5 || s.segments.Load() != 4 {
		t.Fatalf("4 segments: %d segments served, %d coupons in all (want 5)", s.segments.Load(), n)
	}

	// 5. The browser restarts on the same profile: the service worker and
	// the lanes in IndexedDB continue where they were.
	stop()
	ctx, stop = testbrowser.Start(t, profile, 120*time.Second)
	do("after restart", chromedp.EmulateViewport(360, 800), chromedp.Navigate(s.srv.URL+"/premium/second.html"), chromedp.WaitVisible(chromedp.CSS("#article")))
	if n := spentAt(t, g, w.owner, 0, 1); n != 6 || s.articles.Load() != 2 {
		t.Fatalf("after the restart: %d coupons, %d articles (want 6, 2)", n, s.articles.Load())
	}

	// 6. The wallet page: balance, lanes, payments; a limit of 0.001 EUR
	// a day at this site lets one more article through and stops the
	// next with a message on the 402 page.
	do("wallet page", chromedp.Navigate(s.srv.URL+"/.well-known/ecoupons/wallet"), chromedp.WaitVisible(chromedp.CSS("#limits-section")))
	do("balance", discard(chromedp.Poll[bool](`document.getElementById('balance').textContent.includes('0.094')`, chromedp.WithPollingTimeout(20*time.Second))))
	if got := text("body"); !strings.Contains(got, "0.094 EUR") || !strings.Contains(got, "/premium/seg3.ts") || !strings.Contains(got, "news.example") ||
		strings.Contains(got, "undefined") || strings.Contains(got, "NaN") {
		t.Fatalf("wallet page: %q", got)
	}
	if got := text("#receipts tbody"); strings.Count(got, "/premium/") != 6 || !strings.Contains(got, "/premium/seg3.ts") ||
		strings.Contains(got, "rejected") || strings.Contains(got, "unverifiable") {
		t.Fatalf("the wallet page's receipts (want the 6 paid requests', none rejected): %q", got)
	}
	// Once the vendor disclosed the keys (receipt_delay intervals later),
	// the page shows the receipts authenticated.
	for k := 0; !strings.Contains(text("#receipts tbody"), "authenticated"); k++ {
		if k == 10 {
			t.Fatalf("no receipt authenticated: %q", text("#receipts tbody"))
		}
		time.Sleep(time.Second)
		do("wallet page again", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#limits-section")),
			discard(chromedp.Poll[bool](`document.querySelector('#receipts tbody').textContent.includes('/premium/')`, chromedp.WithPollingTimeout(20*time.Second))))
	}
	do("limit", chromedp.SetValue(chromedp.CSS("#limit-max"), "0.001"), chromedp.SetValue(chromedp.CSS("#limit-host"), "127.0.0.1"),
		chromedp.Click(chromedp.CSS("#limit-form button[type=submit]")),
		discard(chromedp.Poll[bool](`document.getElementById('bw-status').textContent.startsWith('Limit set')`, chromedp.WithPollingTimeout(20*time.Second))),
		discard(chromedp.Poll[bool](`document.querySelector('#limits tbody').textContent.includes('0.001 EUR')`, chromedp.WithPollingTimeout(20*time.Second))))
	fitsPhone("the wallet page")
	labelled("the wallet page")
	shoot("wallet.png")
	do("within the limit", chromedp.Navigate(s.srv.URL+"/premium/third.html"), chromedp.WaitVisible(chromedp.CSS("#article")))
	do("past the limit", chromedp.Navigate(s.srv.URL+"/premium/fourth.html"), chromedp.WaitVisible(chromedp.CSS("#ecoupons-wallet-message")))
	if got := text("#ecoupons-wallet-message"); !strings.Contains(got, "spending limit stops this payment") {
		t.Fatalf("the limit's message: %q", got)
	}
	// In its place on the page, which stays in standards mode.
	if in, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.compatMode === 'CSS1Compat' && !!document.querySelector('section.wallet > #ecoupons-wallet-message')`)); err != nil || !in {
		t.Errorf("the message is not in the wallet's section of the 402 page (%v)", err)
	}
	if n := spentAt(t, g, w.owner, 0, 1); n != 7 || s.articles.Load() != 3 {
		t.Fatalf("with the limit: %d coupons, %d articles (want 7, 3)", n, s.articles.Load())
	}
	shoot("page402-limit.png")

	// 7. A web app on another origin loads the wallet as a library, pairs,
	// imports a grant of its own and pays through CORS.
	do("app", chromedp.Navigate(app.URL+"/?gate="+s.srv.URL), chromedp.WaitVisible(chromedp.CSS("#app")))
	appCode, err := chromedp.Run(ctx, chromedp.Evaluate[string](`ecouponsLoaded.then(e => e.pairingCode('app')).then(p => p.code)`, chromedp.EvalAwaitPromise))
	if err != nil || appCode == code {
		t.Fatalf("the app's pairing code %q: %v", appCode, err)
	}
	appGrant := grantFor(t, w.owner, appCode, 2, 3, 10_000_000)
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(async () => {
		const e = await ecouponsLoaded;
		await e.importGrant(%q);
		const r = await e.fetch(%q);
		return r.status + ' ' + r.headers.get('ECoupon-Balance') + ' ' + (await r.text());
	})()`, appGrant, s.srv.URL+"/premium/app.html"), chromedp.EvalAwaitPromise))
	if err != nil || !strings.HasPrefix(got, "200 ") || !strings.Contains(got, "The paid article") {
		t.Fatalf("the app's paid fetch: %q %v", got, err)
	}
	if n := spentAt(t, g, w.owner, 2, 3); n != 1 || s.articles.Load() != 4 {
		t.Fatalf("the app: %d coupons on its lanes, %d articles (want 1, 4)", n, s.articles.Load())
	}
}

// doer returns a function running browser actions that fails the test
// with what was being done.
func doer(t *testing.T, ctx context.Context) func(what string, actions ...chromedp.Action[chromedp.Void]) {
	return func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// pair opens the paid page at url (the 402 page), enables the browser
// wallet and returns the pairing code it shows.
func pair(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	doer(t, ctx)("enable", chromedp.Navigate(url), chromedp.Click(chromedp.CSS("#bw-enable")), chromedp.WaitVisible(chromedp.CSS("#bw-code")))
	code, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById('bw-code').value || null`, chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil || !strings.HasPrefix(code, "{") {
		t.Fatalf("pairing code %q: %v", code, err)
	}
	return code
}

// importGrant pastes g into the 402 page and imports it: the page
// reloads, paid.
func importGrant(t *testing.T, ctx context.Context, g *delegation.Grant) {
	t.Helper()
	doer(t, ctx)("import", chromedp.SetValue(chromedp.CSS("#bw-grant"), string(spki.Transport(g.Sexp()))), chromedp.Click(chromedp.CSS("#bw-import")),
		chromedp.WaitVisible(chromedp.CSS("#article")))
}

// discard makes an action of one whose value is not needed.
func discard[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, t)
		return chromedp.Void{}, err
	}
}

// TestRevokedBrowserStopsPaying: the owner revokes the browser's grant
// (the broker's next revocation list names it); within the gate's
// revocations_every the browser's payments are refused, the lane is
// retired, and the reader sees why on the 402 page.
func TestRevokedBrowserStopsPaying(t *testing.T) {
	const every = time.Second
	w := newWorld(t, "news.example", t0Later())
	ls := newListSource(t, w)
	g := newGateWith(t, w, `{"backend":"memory"}`, 1, func(g *Gate) {
		g.Revocations, g.RevocationsEvery = []string{ls.url}, caddy.Duration(every)
	})
	s := newSite(t, g)
	ctx, _ := testbrowser.Start(t, t.TempDir(), 120*time.Second)
	do := doer(t, ctx)
	code := pair(t, ctx, s.srv.URL+"/premium/a.html")
	grant := issueFor(t, w.owner, code, 0, 0, 50_000_000)
	importGrant(t, ctx, grant)

	ls.publish(t, w, 2, [][32]byte{grant.Cert().Cert.Hash()}, nil)
	revoked := time.Now()
	served := s.articles.Load()
	for k := 0; ; k++ {
		do("after the revocation", chromedp.Navigate(fmt.Sprintf("%s/premium/r%d.html", s.srv.URL, k)),
			chromedp.WaitVisible(chromedp.CSS("#article, #ecoupons-wallet-message")))
		if s.articles.Load() == served {
			break // refused
		}
		served = s.articles.Load()
		if time.Since(revoked) > every+2*time.Second {
			t.Fatalf("the revoked browser still pays %v after the revocation", time.Since(revoked))
		}
	}
	v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#ecoupons-wallet-message")))
	if err != nil || !strings.Contains(v, "revoked") {
		t.Fatalf("the message after the revocation: %q %v", v, err)
	}
	// And it stays refused: the lane is retired, nothing more is revealed.
	before := spentAt(t, g, w.owner, 0)
	do("again", chromedp.Navigate(s.srv.URL+"/premium/again.html"), chromedp.WaitVisible(chromedp.CSS("#ecoupons-wallet-message")))
	if spentAt(t, g, w.owner, 0) != before || s.articles.Load() != served {
		t.Fatal("a coupon was accepted after the revocation")
	}
}

// TestBrowserWalletServedThroughCaddy: in a real Caddy, the ecoupon
// directive on /premium/* serves the browser wallet's files under
// /.well-known/ecoupons/ (the service worker allowed to control the whole
// site), and the HTML 402 page carries the control that enables it.
func TestBrowserWalletServedThroughCaddy(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	tc := caddytest.NewTester(t)
	tc.InitServer(testCaddyfile(w, ""), "caddyfile")
	resp, body := do(t, tc, "GET", "/.well-known/ecoupons/sw.js", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Service-Worker-Allowed") != "/" || !strings.Contains(body, "wallet.wasm") {
		t.Fatalf("sw.js: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, body := do(t, tc, "GET", "/.well-known/ecoupons/wallet", nil); resp.StatusCode != 200 || !strings.Contains(body, `<label for="limit-max">`) {
		t.Fatalf("the wallet page: %d", resp.StatusCode)
	}
	if resp, _ := do(t, tc, "HEAD", "/.well-known/ecoupons/wallet.wasm", http.Header{"Accept-Encoding": {"gzip"}}); resp.StatusCode != 200 ||
		resp.Header.Get("Content-Type") != "application/wasm" || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("wallet.wasm: %d %v", resp.StatusCode, resp.Header)
	}
	resp, body = do(t, tc, "GET", "/premium/a", http.Header{"Accept": {"text/html"}})
	if resp.StatusCode != 402 || !strings.Contains(body, `id="bw-enable"`) || !strings.Contains(body, `src="/.well-known/ecoupons/client.js"`) ||
		!strings.Contains(body, `<div id="ecoupons-wallet-note"></div>`) {
		t.Fatalf("the 402 page: %d %s", resp.StatusCode, body)
	}
}

// TestBrowserWalletPauseAndForget: the reader pauses the wallet on the
// wallet page: a navigation gets the 402 page saying so and no coupon
// leaves; resumed, it pays again. Forgotten, the wallet's keys, grants and
// lanes are gone: it pays nothing and names a new key.
func TestBrowserWalletPauseAndForget(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	s := newSite(t, g)
	ctx, _ := testbrowser.Start(t, t.TempDir(), 120*time.Second)
	do := doer(t, ctx)
	code := pair(t, ctx, s.srv.URL+"/premium/a.html")
	importGrant(t, ctx, issueFor(t, w.owner, code, 0, 0, 20_000_000))

	wallet := s.srv.URL + "/.well-known/ecoupons/wallet"
	do("pause", chromedp.Navigate(wallet), chromedp.WaitVisible(chromedp.CSS("#pause")),
		discard(chromedp.Poll[bool](`document.getElementById('pause').textContent === 'Pause payments'`, chromedp.WithPollingTimeout(20*time.Second))),
		chromedp.Click(chromedp.CSS("#pause")),
		discard(chromedp.Poll[bool](`document.getElementById('state').textContent.startsWith('Paused')`, chromedp.WithPollingTimeout(20*time.Second))))
	do("paused", chromedp.Navigate(s.srv.URL+"/premium/b.html"), chromedp.WaitVisible(chromedp.CSS("#ecoupons-wallet-message")))
	if v, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#ecoupons-wallet-message"))); !strings.Contains(v, "paused") || spentAt(t, g, w.owner, 0) != 1 {
		t.Fatalf("paused: %q, %d coupons", v, spentAt(t, g, w.owner, 0))
	}
	do("resume", chromedp.Navigate(wallet), chromedp.WaitVisible(chromedp.CSS("#pause")),
		discard(chromedp.Poll[bool](`document.getElementById('pause').textContent === 'Resume payments'`, chromedp.WithPollingTimeout(20*time.Second))),
		chromedp.Click(chromedp.CSS("#pause")),
		discard(chromedp.Poll[bool](`document.getElementById('state').textContent.startsWith('On')`, chromedp.WithPollingTimeout(20*time.Second))))
	do("resumed", chromedp.Navigate(s.srv.URL+"/premium/c.html"), chromedp.WaitVisible(chromedp.CSS("#article")))
	if spentAt(t, g, w.owner, 0) != 2 {
		t.Fatalf("resumed: %d coupons, want 2", spentAt(t, g, w.owner, 0))
	}

	// Forget (the page's button asks to confirm; the API does not).
	do("wallet page", chromedp.Navigate(wallet), chromedp.WaitVisible(chromedp.CSS("#pause")))
	after, err := chromedp.Run(ctx, chromedp.Evaluate[string](`ecoupons.forget().then(() => ecoupons.pairingCode()).then(p => p.code)`, chromedp.EvalAwaitPromise))
	if err != nil || after == code || !strings.HasPrefix(after, "{") {
		t.Fatalf("after forget, the pairing code %q (was %q): %v", after, code, err)
	}
	do("forgotten", chromedp.Navigate(s.srv.URL+"/premium/d.html"), chromedp.WaitVisible(chromedp.CSS("#ecoupons-wallet-message")))
	if v, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#ecoupons-wallet-message"))); !strings.Contains(v, "no coupons") || spentAt(t, g, w.owner, 0) != 2 {
		t.Fatalf("forgotten: %q, %d coupons", v, spentAt(t, g, w.owner, 0))
	}

	// A link carrying a grant for the new key imports it.
	link := wallet + "#grant=" + url.QueryEscape(grantFor(t, w.owner, after, 1, 1, 5_000_000))
	do("link", chromedp.Navigate(link),
		discard(chromedp.Poll[bool](`document.getElementById('balance').textContent.includes('0.005 EUR')`, chromedp.WithPollingTimeout(20*time.Second))))
	do("paid again", chromedp.Navigate(s.srv.URL+"/premium/e.html"), chromedp.WaitVisible(chromedp.CSS("#article")))
	if spentAt(t, g, w.owner, 1) != 1 {
		t.Fatalf("after the link's grant: %d coupons on lane 1", spentAt(t, g, w.owner, 1))
	}
}
