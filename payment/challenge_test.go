package payment

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func testSecret(label string) []byte {
	s := sha256.Sum256([]byte("ecoupons test payment secret " + label))
	return s[:]
}

func TestParseAuthChallengesMany(t *testing.T) {
	h := `Basic realm="x", Payment id="a1", realm="news \"example\" \\ site", method="ecoupon",` +
		` intent="charge", request="eyJ9", expires="2026-12-03T06:00:00Z", Bearer abc/d+e==,, Payment ID=b2,REALM = r2 ,` +
		"\tmethod=other, intent=session, request=eyJ9, future=\"x\", Negotiate"
	acs, err := ParseAuthChallenges(h)
	if err != nil {
		t.Fatal(err)
	}
	var schemes []string
	for _, c := range acs {
		schemes = append(schemes, c.Scheme)
	}
	if got := strings.Join(schemes, " "); got != "Basic Payment Bearer Payment Negotiate" {
		t.Fatalf("schemes %q", got)
	}
	if acs[2].Token68 != "abc/d+e==" {
		t.Errorf("token68 %q", acs[2].Token68)
	}
	if v, _ := acs[1].Param("realm"); v != `news "example" \ site` {
		t.Errorf("realm %q", v)
	}
	cs, err := ParseChallenges(h)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].ID != "a1" || cs[1].ID != "b2" || cs[1].Realm != "r2" || cs[1].Intent != "session" {
		t.Fatalf("challenges %+v", cs)
	}
	if c := SelectECoupon(cs, IntentCharge); c == nil || c.ID != "a1" {
		t.Errorf("SelectECoupon: %+v", c)
	}
	// Round trip through the formatter.
	again, err := ParseChallenges(cs[0].String())
	if err != nil || len(again) != 1 || again[0] != cs[0] {
		t.Errorf("round trip: %+v, %v", again, err)
	}
}

func TestParseAuthChallengesRefuses(t *testing.T) {
	for _, h := range []string{
		`Payment id="a", id="b"`,
		`Payment id="a`,
		"Payment id=\"a\x01\"",
		`Payment id="a" realm="b"`,
		`Payment id=a=b`,
		`Payment foo bar`,
		`=x`,
		`Payment,id=x`,
		`Payment id="a\`,
		strings.Repeat("a", MaxChallengeLen+1),
	} {
		if _, err := ParseAuthChallenges(h); !errors.Is(err, ErrBadAuthParams) {
			t.Errorf("%.40q: %v, want ErrBadAuthParams", h, err)
		}
	}
	if _, err := ParseAuthChallenges(strings.Repeat("a", MaxChallengeLen+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized: %v", err)
	}
}

func TestParseChallengesReportsBadOnes(t *testing.T) {
	h := `Payment id="", realm=r, method=ecoupon, intent=charge, request=eyJ9, Payment id=ok, realm=r, method=ecoupon, intent=charge, request=eyJ9, Payment id=x, realm=r, method=ECoupon, intent=charge, request=eyJ9`
	cs, err := ParseChallenges(h)
	if len(cs) != 1 || cs[0].ID != "ok" {
		t.Errorf("kept %+v", cs)
	}
	if !errors.Is(err, ErrBadChallenge) {
		t.Errorf("err %v", err)
	}
	var pe *Error
	if !errors.As(err, &pe) || pe.Field != "id" {
		t.Errorf("first error %v", err)
	}
}

func testRequest() *ECouponRequest {
	return &ECouponRequest{
		Vendor: "news.example", Price: 2, Unit: "0.001", Currency: "EUR", Broker: "https://broker.example",
		Nonce: "AAAAAAAAAAEeHKbZ6yplZnNq0TrMNbQs", Lease: 32,
	}
}

func TestBinder(t *testing.T) {
	if _, err := NewBinder(make([]byte, 31)); !errors.Is(err, ErrWeakSecret) {
		t.Errorf("short secret: %v", err)
	}
	if err := new(Binder).Bind(&Challenge{}); !errors.Is(err, ErrWeakSecret) {
		t.Errorf("zero Binder: %v", err)
	}
	old, _ := NewBinder(testSecret("old"))
	b, err := NewBinder(testSecret("new"), testSecret("old"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	c, err := b.Issue("news.example", IntentCharge, testRequest(), now.Add(5*time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseChallenges(c.String())
	if err != nil || len(parsed) != 1 {
		t.Fatal(parsed, err)
	}
	p := parsed[0]
	if err := b.Verify(&p, now); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if err := old.Verify(&p, now); !errors.Is(err, ErrInvalidChallenge) {
		t.Errorf("old secret verifies the new one's id: %v", err)
	}
	co, _ := old.Issue("news.example", IntentCharge, testRequest(), now.Add(time.Minute), true)
	if err := b.Verify(co, now); err != nil {
		t.Errorf("rotated: %v", err)
	}
	if err := b.Verify(&p, now.Add(5*time.Minute)); !errors.Is(err, ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	for name, tamper := range map[string]func(c *Challenge){
		"realm":   func(c *Challenge) { c.Realm = "other.example" },
		"intent":  func(c *Challenge) { c.Intent = IntentSession },
		"request": func(c *Challenge) { r := testRequest(); r.Price = 1; c.Request, _ = EncodeRequest(r) },
		"expires": func(c *Challenge) { c.Expires = "2027-01-01T00:00:00Z" },
		"header":  func(c *Challenge) { c.Header = HeaderPaymentAuthorization },
		"digest":  func(c *Challenge) { c.Digest = "sha-256=:AAAA:" },
		"id":      func(c *Challenge) { c.ID = c.ID[:len(c.ID)-2] + "AA" },
	} {
		x := p
		tamper(&x)
		if err := b.Verify(&x, now); !errors.Is(err, ErrInvalidChallenge) {
			t.Errorf("tampered %s: %v", name, err)
		}
	}
	x := p
	x.Description = "not bound"
	if err := b.Verify(&x, now); err != nil {
		t.Errorf("description changed: %v", err)
	}
	x = p
	x.Realm = "a|b"
	if err := b.Verify(&x, now); !errors.Is(err, ErrBadChallenge) {
		t.Errorf("realm with '|': %v", err)
	}
	x = p
	x.Expires = ""
	if err := b.Bind(&x); !errors.Is(err, ErrBadChallenge) {
		t.Errorf("bind without expires: %v", err)
	}
}

// TestBindingLayout checks the two slot layouts the draft fixes.
func TestBindingSecret(t *testing.T) {
	s := BindingSecret([]byte("master"))
	if len(s) != MinSecretLen || hexHMAC([]byte("master"), []byte("ecoupons payment binding v1")) != fmt.Sprintf("%x", s) {
		t.Errorf("%x", s)
	}
	if _, err := NewBinder(s); err != nil {
		t.Error(err)
	}
}

func TestBindingLayout(t *testing.T) {
	c := &Challenge{Realm: "r", Method: "m", Intent: "i", Request: "q", Expires: "e", Opaque: "o"}
	if got := string(BindingInput(c)); got != "r|m|i|q|e||o" {
		t.Errorf("without header: %q", got)
	}
	c.Header = HeaderPaymentAuthorization
	c.Digest = "d"
	if got := string(BindingInput(c)); got != "r|m|i|q|e|d|Payment-Authorization|o" {
		t.Errorf("with header: %q", got)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	r := testRequest()
	s, err := EncodeRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := b64.DecodeString(s)
	want := `{"amount":"2","currency":"eur","methodDetails":{"broker":"https://broker.example","lease":32,"nonce":"AAAAAAAAAAEeHKbZ6yplZnNq0TrMNbQs","unit":"0.001"},"recipient":"news.example"}`
	if string(j) != want {
		t.Errorf("request JSON\n got %s\nwant %s", j, want)
	}
	got, err := DecodeRequest(s)
	if err != nil || *got != *r {
		t.Errorf("decoded %+v, %v", got, err)
	}
	for _, bad := range []string{
		`{"amount":"0","currency":"eur","recipient":"v","methodDetails":{"unit":"1","nonce":"n"}}`,
		`{"amount":"02","currency":"eur","recipient":"v","methodDetails":{"unit":"1","nonce":"n"}}`,
		`{"amount":"2","currency":"euro","recipient":"v","methodDetails":{"unit":"1","nonce":"n"}}`,
		`{"amount":"2","currency":"eur","recipient":"v","methodDetails":{"unit":"1.","nonce":"n"}}`,
		`{"amount":"2","currency":"eur","recipient":"v"}`,
		`[]`,
	} {
		if _, err := DecodeRequest(b64.EncodeToString([]byte(bad))); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if _, err := DecodeRequest("eyJ9="); !errors.Is(err, ErrBadRequest) {
		t.Errorf("padded: %v", err)
	}
}
