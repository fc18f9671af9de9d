package caddymodule

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
)

// TestBrowserGetsAPaymentPage: a navigation (Accept: text/html) to a paid
// resource gets a readable 402 page saying what it costs in the reader's
// terms and how to pay, with the same challenges as the JSON answer; an
// API client (Accept: application/json, or none) still gets JSON; markup
// in the vendor's terms is escaped.
func TestBrowserGetsAPaymentPage(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 3)
	rec := serve(g, "GET", "/premium/x?y=1", http.Header{"Accept": {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}})
	body := rec.Body.String()
	if rec.Code != http.StatusPaymentRequired || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("navigation: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	for _, want := range []string{`<html lang="en">`, "0.003 EUR", "3 e-coupons of 0.001 EUR", "news.example",
		"ecoupons wallet get http://localhost:9080/premium/x?y=1", `name="viewport"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "ECoupon ") || rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("the page's headers: %v", rec.Header())
	}
	for _, accept := range []string{"application/json", "", "application/json, text/html"} {
		rec := serve(g, "GET", "/premium/x", http.Header{"Accept": {accept}})
		wantRefusal(t, rec, http.StatusPaymentRequired, coupons.CodePaymentRequired)
	}
	// A POST is never answered with the page (a form's submission is not
	// a navigation to read).
	if rec := serve(g, "POST", "/premium/x", http.Header{"Accept": {"text/html"}}); strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Error("a POST got the HTML page")
	}
}

// TestPaymentPageTemplate: payment_page replaces the page; a template
// that does not parse is refused at provisioning, a missing file too.
func TestPaymentPageTemplate(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	dir := t.TempDir()
	page := filepath.Join(dir, "402.html")
	os.WriteFile(page, []byte(`<p>Pay {{.Amount}} {{.Currency}} to {{.Vendor}} for {{.Path}}</p>`), 0o644)
	g := newGateWith(t, w, `{"backend":"memory"}`, 2, func(g *Gate) { g.PaymentPage = page })
	rec := serve(g, "GET", "/premium/<b>", http.Header{"Accept": {"text/html"}})
	if got := rec.Body.String(); !strings.Contains(got, "Pay 0.002 EUR to news.example for /premium/%3Cb%3E") {
		t.Fatalf("the publisher's page: %q", got)
	}
	for _, bad := range []string{`{{.Amount`, ""} {
		file := filepath.Join(dir, "bad.html")
		if bad == "" {
			file = filepath.Join(dir, "missing.html")
		} else {
			os.WriteFile(file, []byte(bad), 0o644)
		}
		if _, err := loadPage402(file); err == nil {
			t.Errorf("payment_page %q accepted", bad)
		}
	}
}

// TestCORSLetsAllowedOriginsPay: a web app on an allowed origin gets its
// preflight answered without payment (no coupon, no 402) and can read the
// challenge and the paid answer's headers; another origin gets no CORS
// headers; malformed origins are refused at provisioning.
func TestCORSLetsAllowedOriginsPay(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGateWith(t, w, `{"backend":"memory"}`, 1, func(g *Gate) { g.CORSOrigins = []string{"https://app.example"} })
	pre := serve(g, "OPTIONS", "/premium/x", http.Header{"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"GET"},
		"Access-Control-Request-Headers": {"authorization,ecoupon-open"}})
	if pre.Code != http.StatusNoContent || pre.Header().Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(pre.Header().Get("Access-Control-Allow-Headers"), "ECoupon-Open") {
		t.Fatalf("preflight: %d %v", pre.Code, pre.Header())
	}
	rec := serve(g, "GET", "/premium/x", http.Header{"Origin": {"https://app.example"}})
	if rec.Code != 402 || !strings.Contains(rec.Header().Get("Access-Control-Expose-Headers"), "WWW-Authenticate") {
		t.Fatalf("the challenge to an allowed origin: %d %v", rec.Code, rec.Header())
	}
	pays := payments(t, g, w, 0, 1, 1)
	h := http.Header{"Origin": {"https://app.example"}}
	for k, v := range pays[0] {
		h[k] = v
	}
	if rec := serve(g, "GET", "/premium/x", h); rec.Code != 200 || !strings.Contains(rec.Header().Get("Access-Control-Expose-Headers"), "ECoupon-Balance") {
		t.Fatalf("a paid request from an allowed origin: %d %v", rec.Code, rec.Header())
	}
	if rec := serve(g, "GET", "/premium/x", http.Header{"Origin": {"https://evil.example"}}); rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("another origin got CORS headers: %v", rec.Header())
	}
	if rec := serve(g, "OPTIONS", "/premium/x", http.Header{"Origin": {"https://evil.example"}, "Access-Control-Request-Method": {"GET"}}); rec.Code == http.StatusNoContent {
		t.Fatal("another origin's preflight answered")
	}
	for _, bad := range [][]string{{"app.example"}, {"https://app.example/path"}, {"*", "https://a.example"}, {"ftp://a.example"}} {
		if err := checkCORSOrigins(bad); err == nil {
			t.Errorf("cors_origins %q accepted", bad)
		}
	}
}
