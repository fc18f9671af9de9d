package caddymodule

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv("ECOUPONS_GATE_CHILD"); cfg != "" {
		runGateChild(cfg) // never returns
	}
	// caddy run writes to ~/.config/caddy and ~/.local/share/caddy: keep
	// tests inside temporary directories.
	dir, err := os.MkdirTemp("", "ecoupons-caddy-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func testKey(label string) ed25519.PrivateKey { return testutil.Key(label) }

// world is a broker, a user with a book of 4 lanes × 64 coupons at
// news.example, and the broker key file the gate is configured with.
type world struct {
	broker, alice ed25519.PrivateKey
	owner         *delegation.Holder
	brokerKeyFile string
	// The book's secrets and anchors, the user certificate: what a CLI
	// wallet keeps of the book (cliWallet).
	secrets *coupons.Secrets
	anchors []coupons.Value
	user    *spki.SignedCert
}

func newWorld(t testing.TB, vendor string, notAfter time.Time) *world {
	return newWorldL(t, vendor, notAfter, 64)
}

// newWorldL is newWorld with lanes of length coupons.
func newWorldL(t testing.TB, vendor string, notAfter time.Time, length uint32) *world {
	t.Helper()
	w := &world{broker: testKey("broker"), alice: testKey("alice")}
	bp, _ := spki.NewPublicKey(w.broker.Public())
	ap, _ := spki.NewPublicKey(w.alice.Public())
	w.brokerKeyFile = filepath.Join(t.TempDir(), "broker.pub")
	if err := os.WriteFile(w.brokerKeyFile, spki.Advanced(bp.Sexp()), 0o644); err != nil {
		t.Fatal(err)
	}
	b, sec, anchors, err := coupons.Create(coupons.Params{Vendor: vendor, Broker: bp.Hash(), Owner: ap.Hash(), Lanes: 4, Length: length,
		Currency: "EUR", Unit: 1_000_000, NotAfter: notAfter}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Sign(w.alice)
	if err != nil {
		t.Fatal(err)
	}
	user, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(bp), Subject: spki.HashPrincipal(ap.Hash()),
		Tag: coupons.UserTag("acct-alice", "EUR")}, w.broker)
	if err != nil {
		t.Fatal(err)
	}
	w.secrets, w.anchors, w.user = sec, anchors, user
	if w.owner, err = delegation.NewOwner(sb, user, sec, anchors, w.alice); err != nil {
		t.Fatal(err)
	}
	if w.owner.Funding, err = coupons.SignFunding(sb.Book, w.broker, time.Time{}); err != nil {
		t.Fatal(err)
	}
	return w
}

// client pays from one lane of a holder.
type client struct {
	t      testing.TB
	tc     *caddytest.Tester
	h      *delegation.Holder
	lane   coupons.LaneID
	cursor *coupons.Cursor
	nonce  string
	opened bool
	// editOpen, when set, changes the lane-open document before it is
	// sent (an attacker's client).
	editOpen func(*coupons.Open)
}

func newClient(t testing.TB, tc *caddytest.Tester, h *delegation.Holder, lane uint32) *client {
	b := h.Book.Book
	c, _, err := h.Cursor(lane)
	if err != nil {
		t.Fatalf("lane %d: %v", lane, err)
	}
	return &client{t: t, tc: tc, h: h, lane: coupons.LaneID{Book: b.ID(), Lane: lane}, cursor: c}
}

var nonceRe = regexp.MustCompile(`nonce=([A-Za-z0-9_-]+)`)

// challenge fetches a 402 and returns its nonce.
func (c *client) challenge(path string) string {
	resp, body := c.get(path, nil)
	if resp.StatusCode != http.StatusPaymentRequired {
		c.t.Fatalf("GET %s without payment: %d %s", path, resp.StatusCode, body)
	}
	m := nonceRe.FindStringSubmatch(resp.Header.Get("WWW-Authenticate"))
	if m == nil {
		c.t.Fatalf("no nonce in %q", resp.Header.Get("WWW-Authenticate"))
	}
	return m[1]
}

// payment spends n coupons for a request to path on the test server.
func (c *client) payment(method, path string, n int) http.Header {
	return c.paymentFor("localhost:9080", method, path, n)
}

// paymentFor spends n coupons for a request to path on host.
func (c *client) paymentFor(host, method, path string, n int) http.Header {
	return c.paymentWith(host, method, path, nil, "", n)
}

// paymentWith spends n coupons for a request to path on host with a body
// (stated in Content-Digest when not empty) and a Range header (when not
// "").
func (c *client) paymentWith(host, method, path string, body []byte, rng string, n int) http.Header {
	var i uint32
	var w, next coupons.Value
	var hasNext bool
	for k := 0; k < n; k++ {
		var err error
		if i, w, next, hasNext, err = c.cursor.Next(); err != nil {
			c.t.Fatal(err)
		}
	}
	u := strings.SplitN(path, "?", 2)
	q := ""
	if len(u) == 2 {
		q = u[1]
	}
	r := coupons.Request{Method: method, Host: host, Path: u[0], Query: q, Range: rng, Lane: c.lane, Index: i, Nonce: c.nonce}
	h := http.Header{}
	if len(body) > 0 {
		sum := sha256.Sum256(body)
		r.ContentDigest = sum[:]
		h.Set(coupons.HeaderContentDigest, coupons.ContentDigestHeader(&sum))
	}
	if rng != "" {
		h.Set("Range", rng)
	}
	d := r.Digest()
	var np *coupons.Value
	if hasNext {
		np = &next
	}
	p := coupons.Pay(c.lane, i, w, np, &d)
	h.Set("Authorization", p.Header())
	if !c.opened {
		if c.nonce == "" {
			c.t.Fatal("no nonce")
		}
		o, err := c.h.Open(c.lane.Lane, c.nonce)
		if err != nil {
			c.t.Fatal(err)
		}
		if c.editOpen != nil {
			c.editOpen(o)
		}
		h.Set(HeaderOpen, string(spki.Transport(o.Sexp())))
		c.opened = true
	}
	return h
}

func (c *client) get(path string, h http.Header) (*http.Response, string) {
	return do(c.t.(*testing.T), c.tc, "GET", path, h)
}

func do(t *testing.T, tc *caddytest.Tester, method, path string, h http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://localhost:9080"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := tc.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func errorCode(t *testing.T, body string) string {
	var v struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("body is not JSON: %q", body)
	}
	return v.Error
}

// caddyGlobals are the global options of the test Caddyfiles.
const caddyGlobals = `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	skip_install_trust
}
`

func testCaddyfile(w *world, extra string) string {
	return caddyGlobals + fmt.Sprintf(`localhost:9080 {
	ecoupon /premium/* {
		vendor news.example
		broker_key %s
		price 2
		unit 0.001 EUR
		store memory
		max_jump 16
		lane_rate -1
		%s
	}
	respond /premium/fail "upstream down" 503
	respond /premium/* "premium content" 200
	respond /free "free" 200
}
`, w.brokerKeyFile, extra)
}

func TestGatePaysEndToEnd(t *testing.T) {
	w := newWorld(t, "news.example", time.Now().Add(24*time.Hour))
	tc := caddytest.NewTester(t)
	tc.InitServer(testCaddyfile(w, ""), "caddyfile")

	if resp, body := do(t, tc, "GET", "/free", nil); resp.StatusCode != 200 || body != "free" {
		t.Fatalf("free page: %d %q", resp.StatusCode, body)
	}
	c := newClient(t, tc, w.owner, 0)
	c.nonce = c.challenge("/premium/a")

	// The 402 is complete: header and JSON body agree.
	resp, body := c.get("/premium/a", nil)
	wa := resp.Header.Get("WWW-Authenticate")
	for _, want := range []string{`ECoupon realm="news.example"`, `vendor="news.example"`, `price=2`, `unit="0.001"`, `currency=EUR`, `nonce=`} {
		if !strings.Contains(wa, want) {
			t.Errorf("WWW-Authenticate %q lacks %s", wa, want)
		}
	}
	if errorCode(t, body) != "payment_required" || !strings.Contains(body, `"price": 2`) || !strings.Contains(body, `"hint"`) {
		t.Errorf("402 body: %s", body)
	}

	// Open the lane with the first payment, then pay on.
	for k := 0; k < 10; k++ {
		resp, body := c.get("/premium/a?page="+fmt.Sprint(k), c.payment("GET", "/premium/a?page="+fmt.Sprint(k), 2))
		if resp.StatusCode != 200 || body != "premium content" {
			t.Fatalf("paid request %d: %d %s", k, resp.StatusCode, body)
		}
		// The balance comes with the lane's open (k = 0), then only once
		// 16 requests or fewer are left (TestBalanceHeaderOnOpenAndNearTheEnd).
		want := ""
		if k == 0 {
			want = fmt.Sprint(64 - 2*(k+1))
		}
		if got := resp.Header.Get(HeaderBalance); got != want {
			t.Errorf("payment %d: balance %q, want %q", k, got, want)
		}
	}

	// A replayed coupon is refused with a reason.
	c2 := *c
	stale, _, _ := coupons.NewCursor(w.owner.Book.Book.LaneTag(0), 64, mustSeed(t, w.owner, 0))
	c2.cursor = stale
	resp, body = c2.get("/premium/a", c2.payment("GET", "/premium/a", 2))
	if resp.StatusCode != 402 || errorCode(t, body) != "coupon_spent" {
		t.Errorf("replay: %d %s", resp.StatusCode, body)
	}

	// Paying one coupon for a two-coupon page: kept as credit, 402.
	resp, body = c.get("/premium/b", c.payment("GET", "/premium/b", 1))
	if resp.StatusCode != 402 || errorCode(t, body) != "insufficient_payment" || resp.Header.Get(HeaderCredit) != "1" {
		t.Errorf("underpayment: %d %s credit %q", resp.StatusCode, body, resp.Header.Get(HeaderCredit))
	}
	// One more coupon plus the credit pays.
	resp, body = c.get("/premium/b", c.payment("GET", "/premium/b", 1))
	if resp.StatusCode != 200 {
		t.Errorf("credit + coupon: %d %s", resp.StatusCode, body)
	}

	// An upstream 5xx leaves the price as credit, which the next payment uses.
	resp, _ = c.get("/premium/fail", c.payment("GET", "/premium/fail", 2))
	if resp.StatusCode != 503 {
		t.Fatalf("failing upstream: %d", resp.StatusCode)
	}
	resp, body = c.get("/premium/c", c.payment("GET", "/premium/c", 1))
	if resp.StatusCode != 200 || resp.Header.Get(HeaderCredit) != "1" {
		t.Errorf("after the refund, one coupon pays: %d %s credit %q", resp.StatusCode, body, resp.Header.Get(HeaderCredit))
	}

	// An index jump beyond max_jump.
	resp, body = c.get("/premium/a", c.payment("GET", "/premium/a", 20))
	if resp.StatusCode != 402 || errorCode(t, body) != "index_jump_too_large" {
		t.Errorf("jump: %d %s", resp.StatusCode, body)
	}
}

func mustSeed(t *testing.T, h *delegation.Holder, lane uint32) coupons.Value {
	s, ok := h.Seed(lane)
	if !ok {
		t.Fatal("no seed")
	}
	return s
}

func TestGateRefusesBadInput(t *testing.T) {
	w := newWorld(t, "news.example", time.Now().Add(24*time.Hour))
	tc := caddytest.NewTester(t)
	tc.InitServer(testCaddyfile(w, "max_open_bytes 8192"), "caddyfile")
	c := newClient(t, tc, w.owner, 1)
	nonce := c.challenge("/premium/a")

	expect := func(name string, h http.Header, status int, code string) {
		t.Helper()
		resp, body := do(t, tc, "GET", "/premium/a", h)
		if resp.StatusCode != status || errorCode(t, body) != code {
			t.Errorf("%s: %d %s, want %d %s", name, resp.StatusCode, body, status, code)
		}
	}
	expect("malformed header", http.Header{"Authorization": {"ECoupon lane=x"}}, 400, "bad_payment_header")
	expect("oversized header", http.Header{"Authorization": {"ECoupon " + strings.Repeat("a", 2000)}}, 400, "bad_payment_header")
	expect("other scheme", http.Header{"Authorization": {"Basic YTpi"}}, 402, "payment_required")

	c.nonce = nonce
	h := c.payment("GET", "/premium/a", 2)
	noOpen := http.Header{"Authorization": h["Authorization"]}
	expect("lane not open", noOpen, 402, "lane_not_open")

	garbage := http.Header{"Authorization": h["Authorization"], HeaderOpen: {"{not base64!}"}}
	expect("garbage open", garbage, 400, "bad_open")

	huge := http.Header{"Authorization": h["Authorization"], HeaderOpen: {strings.Repeat("A", 9000)}}
	expect("oversized open", huge, 413, "open_too_large")

	c2 := newClient(t, tc, w.owner, 2)
	c2.nonce = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	expect("forged nonce", c2.payment("GET", "/premium/a", 2), 402, "bad_nonce")

	// A book made out to another vendor.
	other := newWorld(t, "other.example", time.Now().Add(24*time.Hour))
	c3 := newClient(t, tc, other.owner, 0)
	c3.nonce = nonce
	expect("wrong vendor", c3.payment("GET", "/premium/a", 2), 402, "wrong_vendor")

	// An expired book.
	old := newWorld(t, "news.example", time.Now().Add(-time.Hour))
	c4 := newClient(t, tc, old.owner, 0)
	c4.nonce = nonce
	expect("expired book", c4.payment("GET", "/premium/a", 2), 402, "book_expired")

	// A delegate outside its grant.
	phoneKey := testKey("phone")
	enc, _ := ecdhKey(t)
	dev, err := delegation.NewDevice("phone", phoneKey, enc.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	g, err := w.owner.Issue(dev, 3, 3, delegation.GrantOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ph, err := delegation.Accept(g, phoneKey, enc, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c5 := newClient(t, tc, ph, 3)
	c5.nonce = nonce
	resp, body := do(t, tc, "GET", "/premium/a", c5.payment("GET", "/premium/a", 2))
	if resp.StatusCode != 200 {
		t.Errorf("delegate on its own lane: %d %s", resp.StatusCode, body)
	}
	// The phone presents its grant for lane 2, which it does not hold: it
	// cannot even build the open; a forged open naming lane 2 with the
	// phone's grant fails verification.
	o, _ := ph.Open(3, nonce)
	o.Lane = 2
	o.Anchor = mustAnchor(t, w, 2)
	forged := http.Header{"Authorization": c2.payment("GET", "/premium/a", 2)["Authorization"], HeaderOpen: {string(spki.Transport(o.Sexp()))}}
	resp, body = do(t, tc, "GET", "/premium/a", forged)
	if resp.StatusCode != 400 && resp.StatusCode != 402 {
		t.Errorf("forged open: %d %s", resp.StatusCode, body)
	}
}

func ecdhKey(t *testing.T) (*ecdh.PrivateKey, error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k, nil
}

func mustAnchor(t *testing.T, w *world, lane uint32) coupons.Value {
	b := w.owner.Book.Book
	tag := b.LaneTag(lane)
	return coupons.Walk(&tag, b.Length, mustSeed(t, w.owner, lane), 0)
}

func t0Later() time.Time { return time.Now().Add(24 * time.Hour) }

// grantDevice makes a device called name, has from grant it lanes lo…hi
// with opt, and returns the device's holder of the accepted grant.
func grantDevice(t *testing.T, name string, from *delegation.Holder, lo, hi uint32, opt delegation.GrantOptions) *delegation.Holder {
	t.Helper()
	k := testKey(name)
	enc, err := ecdhKey(t)
	if err != nil {
		t.Fatal(err)
	}
	d, err := delegation.NewDevice(name, k, enc.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	gr, err := from.Issue(d, lo, hi, opt)
	if err != nil {
		t.Fatal(err)
	}
	h, err := delegation.Accept(gr, k, enc, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// gateNonce fetches a 402 from g and returns its challenge nonce.
func gateNonce(g *Gate) string {
	return nonceRe.FindStringSubmatch(serve(g, "GET", "/premium/x", nil).Header().Get("WWW-Authenticate"))[1]
}
