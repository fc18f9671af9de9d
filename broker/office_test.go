package broker

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chromedp/chromedp"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testbrowser"
	"github.com/ecoupons/ecoupons/spki"
)

// officeWorld: alice with a registered book, 12 coupons of it redeemed by
// news.example, and a grant to her phone registered at the broker.
func officeWorld(t *testing.T) (*fixture, *httptest.Server, []*spki.SignedCert) {
	f := newFixture(t)
	bk := f.newBook(t, 4, 16, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.Redeem(ctx, pub(t, f.vendor).Hash(), []Redemption{bk.coupon(0, 10, true), bk.coupon(1, 2, true)}); err != nil {
		t.Fatal(err)
	}
	tag, err := coupons.SpendTag(bk.sb.Book.ID(), "news.example", 2, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	grant, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(pub(t, f.alice)), Subject: spki.KeyPrincipal(pub(t, testKey("phone"))), Tag: tag,
		Validity: spki.Validity{NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(7 * 24 * time.Hour)}}, f.alice)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.b.RegisterGrant(ctx, pub(t, f.alice).Hash(), grant, "phone <script>"); err != nil {
		t.Fatal(err)
	}
	// A second grant to the same phone (lane 1), a minute later.
	tag1, _ := coupons.SpendTag(bk.sb.Book.ID(), "news.example", 1, 1, 0)
	grant1, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(pub(t, f.alice)), Subject: spki.KeyPrincipal(pub(t, testKey("phone"))), Tag: tag1,
		Validity: spki.Validity{NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(7 * 24 * time.Hour)}}, f.alice)
	if err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(time.Minute)
	if err := f.b.RegisterGrant(ctx, pub(t, f.alice).Hash(), grant1, "phone, lane 1"); err != nil {
		t.Fatal(err)
	}
	// Only the issuer may register a grant, and only for a book held here.
	if err := f.b.RegisterGrant(ctx, pub(t, f.vendor).Hash(), grant, "x"); err == nil {
		t.Fatal("a grant registered by someone who did not issue it")
	}
	srv := httptest.NewServer(&API{Broker: f.b})
	t.Cleanup(srv.Close)
	return f, srv, []*spki.SignedCert{grant, grant1}
}

// browser starts a headless Chromium for the test, or skips (fails under
// CI=true) when none is installed.
func browser(t *testing.T) context.Context {
	t.Helper()
	ctx, _ := testbrowser.Start(t, t.TempDir(), 60*time.Second)
	return ctx
}

func TestOfficeInBrowser(t *testing.T) { onBoth(t, testOfficeInBrowser) }

// testOfficeInBrowser drives the back office in a real headless Chromium:
// a user signs in with a signed link, sees balance, book and device,
// revokes the device with a click; a used link is refused; the vendor sees
// its revenue and redemptions.
func testOfficeInBrowser(t *testing.T) {
	f, srv, grants := officeWorld(t)
	bctx := browser(t)
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.Join(strings.Fields(s), " ")
	}

	// Without a session: the sign-in page, no data.
	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL+OfficePath)); err != nil {
		t.Fatal(err)
	}
	if got := text("body"); !strings.Contains(got, "not signed in") || strings.Contains(got, "Balance") {
		t.Fatalf("page without a session: %q", got)
	}

	link, err := OfficeLoginURL(srv.URL, fixtureBroker(t), f.alice, f.now)
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#balance"))); err != nil {
		t.Fatal(err)
	}
	// 10 EUR topped up, a book of 4 x 16 x 0.001 held (0.064): 9.936 left;
	// 12 coupons redeemed, 0.052 still held.
	if got := text("tr.account"); !strings.Contains(got, "9.936 EUR") || !strings.Contains(got, "pre-paid") {
		t.Errorf("balance row: %q", got)
	}
	if got := text("tr.book"); !strings.Contains(got, "news.example") || !strings.Contains(got, "0.064 EUR") ||
		!strings.Contains(got, "0.012 EUR (12 coupons on 2 of 4 lanes)") || !strings.Contains(got, "0.052 EUR") || !strings.Contains(got, "active") {
		t.Errorf("book row: %q", got)
	}
	// The device's name is shown as text, never as markup.
	if got := text("#devices + table"); !strings.Contains(got, "phone <script>") || strings.Count(got, "active") != 2 {
		t.Errorf("devices: %q", got)
	}
	// The phone is lost: revoke its newest grant, and every other grant
	// given to it, with a click.
	if err := chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`tr.device input[name="key"]`)),
		chromedp.Click(chromedp.CSS(`tr.device button.revoke`)),
		chromedp.WaitVisible(chromedp.CSS("#notice"))); err != nil {
		t.Fatal(err)
	}
	if got := text("#devices + table"); strings.Count(got, "revoked") != 2 || strings.Contains(got, "active") {
		t.Errorf("devices after revocation: %q", got)
	}
	doc, err := f.b.RevocationList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ph := pub(t, testKey("phone")).Hash()
	for _, g := range grants {
		if h := g.Cert.Hash(); !strings.Contains(string(doc), string(h[:])) {
			t.Errorf("the revocation list does not name a grant of the phone")
		}
	}
	if strings.Contains(string(doc), string(ph[:])) {
		t.Errorf("the revocation list names the phone's key: only the phone may revoke it")
	}

	// The link works once.
	if err := chromedp.Do(bctx, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#error-reason"))); err != nil {
		t.Fatal(err)
	}
	if got := text("#error-reason"); !strings.Contains(got, "nonce already used") {
		t.Errorf("a used link: %q", got)
	}

	// The vendor signs in (after signing out as alice).
	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL+OfficePath), chromedp.Click(chromedp.CSS(`form.inline button`)),
		chromedp.WaitVisible(chromedp.CSS("#signin"))); err != nil {
		t.Fatal(err)
	}
	if got := text("body"); !strings.Contains(got, "not signed in") {
		t.Fatalf("after signing out: %q", got)
	}
	vlink, _ := OfficeLoginURL(srv.URL, fixtureBroker(t), f.vendor, f.now)
	if err := chromedp.Do(bctx, chromedp.Navigate(vlink), chromedp.WaitVisible(chromedp.CSS(".vendor-balance"))); err != nil {
		t.Fatal(err)
	}
	if got := text(".vendor-balance"); got != "0.012 EUR" {
		t.Errorf("vendor balance: %q", got)
	}
	if got := text(".revenue-total"); got != "0.012 EUR" {
		t.Errorf("revenue: %q", got)
	}
	if got := text("tr.revenue"); !strings.HasPrefix(got, "2026-12-01 1 0.012 EUR") {
		t.Errorf("revenue row: %q", got)
	}
	if got := text("tr.redemption"); !strings.HasSuffix(got, "0.012 EUR") {
		t.Errorf("redemption row: %q", got)
	}
	// The chart: 30 bars, the redemption day's the only one drawn, at full
	// height, with its amount.
	bars, err := chromedp.Run(bctx, chromedp.AttributesAll(chromedp.CSSAll("svg.chart rect.bar")))
	if err != nil {
		t.Fatal(err)
	}
	if len(bars) != 30 {
		t.Fatalf("%d bars, want 30 (one per day)", len(bars))
	}
	for _, b := range bars {
		if b["data-day"] == "2026-12-01" {
			if b["data-amount"] != "0.012" || b["height"] != "128.0" {
				t.Errorf("the redemption day's bar: %v", b)
			}
		} else if b["height"] != "0.0" {
			t.Errorf("a day without revenue has a bar: %v", b)
		}
	}
	if href, err := chromedp.Run(bctx, chromedp.AttributeValue(chromedp.CSS("a.csv"), "href")); err != nil || !strings.Contains(href.Value, "format=csv") {
		t.Errorf("CSV download link: %q %v", href.Value, err)
	}
	// ECOUPONS_SCREENSHOT=file.png keeps a picture of the vendor's page.
	if path := os.Getenv("ECOUPONS_SCREENSHOT"); path != "" {
		if png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)); err == nil {
			os.WriteFile(path, png, 0o644)
		}
	}
	if got := text("body"); !strings.Contains(got, "redeemed 12 coupons on 2 lanes of 1 books") || strings.Contains(got, "Devices") {
		t.Errorf("vendor page: %q", got)
	}
}

// TestOfficeStatementDownloads: a signed-in vendor downloads its statement
// as CSV and JSON, files named after the account and the days, amounts
// with their currency; another key's account is refused, and nothing is
// served without a session.
func TestOfficeStatementDownloads(t *testing.T) {
	f, srv, _ := officeWorld(t)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	get := func(u string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	q := func(account, format string) string {
		return srv.URL + OfficePath + "statement?" + url.Values{"account": {account}, "from": {"2026-11-02"}, "to": {"2026-12-02"}, "format": {format}}.Encode()
	}
	if resp, _ := get(q("vendor:news.example", "csv")); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a session: %d", resp.StatusCode)
	}
	link, _ := OfficeLoginURL(srv.URL, fixtureBroker(t), f.vendor, f.now)
	if resp, _ := get(link); resp.StatusCode != 200 {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	var account string
	if err := f.b.DB.db.QueryRow(`SELECT account FROM vendors WHERE name = 'news.example'`).Scan(&account); err != nil {
		t.Fatal(err)
	}
	resp, body := get(q(account, "csv"))
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), `attachment; filename="statement-`) {
		t.Fatalf("CSV: %d %v", resp.StatusCode, resp.Header)
	}
	if !strings.Contains(body, "day,kind,transactions,amount,currency\n") || !strings.Contains(body, "2026-12-01,redeem,1,0.012,EUR\n") {
		t.Errorf("CSV statement:\n%s", body)
	}
	resp, body = get(q(account, "json"))
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Disposition"), `.json"`) ||
		!strings.Contains(body, `"currency":"EUR"`) || !strings.Contains(body, `"amount":"0.012"`) {
		t.Errorf("JSON statement: %d %v\n%s", resp.StatusCode, resp.Header, body)
	}
	var alice string
	f.b.DB.db.QueryRow(`SELECT account FROM users LIMIT 1`).Scan(&alice)
	if resp, _ := get(q(alice, "csv")); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Content-Disposition") != "" {
		t.Errorf("another key's account: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := get(q(account, "xml")); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("format xml: %d", resp.StatusCode)
	}
}

// TestOfficeRefusesForgedForms: a revocation without the session's form
// token, or of a grant the session's key did not issue, changes nothing;
// an expired session is signed out.
func TestOfficeRefusesForgedForms(t *testing.T) {
	f, srv, grants := officeWorld(t)
	grant := grants[0]
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	link, _ := OfficeLoginURL(srv.URL, fixtureBroker(t), f.alice, f.now)
	resp, err := c.Get(link)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("login: %v %v", resp, err)
	}
	resp.Body.Close()
	gh := grant.Cert.Hash()
	post := func(form url.Values) int {
		resp, err := c.PostForm(srv.URL+OfficePath+"revoke", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(url.Values{"grant": {base64.RawURLEncoding.EncodeToString(gh[:])}, "csrf": {"forged"}}); code != 403 {
		t.Errorf("forged form token: %d", code)
	}
	if code := post(url.Values{"grant": {base64.RawURLEncoding.EncodeToString(make([]byte, 32))}, "csrf": {csrfFor(t, jar, srv.URL)}}); code != 403 {
		t.Errorf("someone else's grant: %d", code)
	}
	if code := post(url.Values{"grant": {hex.EncodeToString(gh[:])}, "csrf": {csrfFor(t, jar, srv.URL)}}); code != 400 {
		t.Errorf("a grant spelled in hex (not the office's spelling): %d, want 400", code)
	}
	var n int
	f.b.DB.db.QueryRow(`SELECT COUNT(*) FROM revoked`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d revocations after refused forms", n)
	}
	f.now = f.now.Add(OfficeSession + time.Minute)
	resp, _ = c.Get(srv.URL + OfficePath)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("expired session: %d", resp.StatusCode)
	}
}

func csrfFor(t *testing.T, jar http.CookieJar, base string) string {
	u, _ := url.Parse(base + OfficePath)
	for _, c := range jar.Cookies(u) {
		if c.Name == officeCookie {
			return csrfToken(c.Value)
		}
	}
	t.Fatal("no session cookie")
	return ""
}

// TestGrantNames: device names are stored as valid UTF-8 without control
// characters, cut between characters, on SQLite and PostgreSQL.
func TestGrantNames(t *testing.T) { onBoth(t, testGrantNames) }

func testGrantNames(t *testing.T) {
	f := newFixture(t)
	bk := f.newBook(t, 2, 16, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	for k, name := range []string{strings.Repeat("a", 63) + "é", "bad \xff byte", "tab\tand\x00nul"} {
		tag, _ := coupons.SpendTag(bk.sb.Book.ID(), "news.example", uint32(k%2), uint32(k%2), 0)
		g, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(pub(t, f.alice)), Subject: spki.KeyPrincipal(pub(t, testKey(fmt.Sprint("dev", k)))), Tag: tag}, f.alice)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.b.RegisterGrant(ctx, pub(t, f.alice).Hash(), g, name); err != nil {
			t.Fatalf("%q: %v", name, err)
		}
	}
	rows, err := f.b.DB.db.Query(`SELECT name FROM grants ORDER BY created, hash`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		rows.Scan(&n)
		if !utf8.ValidString(n) || len(n) > 64 || strings.ContainsAny(n, "\t\x00") {
			t.Errorf("stored name %q", n)
		}
	}
}
