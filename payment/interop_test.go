package payment

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestInteropChallengeIDs recomputes challenge ids other implementations
// computed (testdata/interop-challenge-ids.jsonl): JCS of the request and
// opaque objects, base64url, the draft's slot layout, HMAC-SHA256. Their
// secrets are shorter than a Binder takes, so the test calls the HMAC
// directly.
func TestInteropChallengeIDs(t *testing.T) {
	f, err := os.Open("testdata/interop-challenge-ids.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var v struct {
			Name, Secret, Realm, Method, Intent, Expires, Digest, ID string
			Request, Opaque                                          json.RawMessage
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatal(err)
		}
		n++
		req, err := Canonicalize(v.Request)
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		c := &Challenge{Realm: v.Realm, Method: v.Method, Intent: v.Intent, Request: b64.EncodeToString(req), Expires: v.Expires, Digest: v.Digest}
		if v.Opaque != nil {
			op, err := Canonicalize(v.Opaque)
			if err != nil {
				t.Fatalf("%s: %v", v.Name, err)
			}
			c.Opaque = b64.EncodeToString(op)
		}
		if got := b64.EncodeToString(mac([]byte(v.Secret), c)); got != v.ID {
			t.Errorf("%s: id %s, want %s", v.Name, got, v.ID)
		}
	}
	if n < 10 {
		t.Errorf("only %d vectors", n)
	}
}

// TestDraftExamples parses the examples of draft-httpauth-payment: its
// challenge (the folded header joined), credential and receipt.
func TestDraftExamples(t *testing.T) {
	ch := `Payment id="x7Tg2pLqR9mKvNwY3hBcZa", realm="api.example.com", method="example", intent="charge", expires="2025-01-15T12:05:00Z", request="eyJhbW91bnQiOiIxMDAwIiwiY3VycmVuY3kiOiJVU0QiLCJyZWNpcGllbnQiOiJhY2N0XzEyMyJ9"`
	cs, err := ParseChallenges(ch)
	if err != nil || len(cs) != 1 || cs[0].Method != "example" || cs[0].ID != "x7Tg2pLqR9mKvNwY3hBcZa" {
		t.Fatalf("challenge: %+v %v", cs, err)
	}
	// The example's request is already in JCS form.
	j, _ := b64.DecodeString(cs[0].Request)
	if c, err := Canonicalize(j); err != nil || string(c) != string(j) {
		t.Errorf("request %s is not its own JCS form: %s %v", j, c, err)
	}
	cr, err := ParseCredential("Payment eyJjaGFsbGVuZ2UiOnsiaWQiOiJ4N1RnMnBMcVI5bUt2TndZM2hCY1phIiwicmVhbG0iOiJhcGkuZXhhbXBsZS5jb20iLCJtZXRob2QiOiJleGFtcGxlIiwiaW50ZW50IjoiY2hhcmdlIiwicmVxdWVzdCI6ImV5SmhiVzkxYm5RaU9pSXhNREF3SWl3aVkzVnljbVZ1WTNraU9pSlZVMFFpTENKeVpXTnBjR2xsYm5RaU9pSmhZMk4wWHpFeU15SjkiLCJleHBpcmVzIjoiMjAyNS0wMS0xNVQxMjowNTowMFoifSwicGF5bG9hZCI6eyJwcm9vZiI6IjB4YWJjMTIzLi4uIn19")
	if err != nil {
		t.Fatal(err)
	}
	if cr.Challenge != cs[0] {
		t.Errorf("the credential echoes %+v, the challenge is %+v", cr.Challenge, cs[0])
	}
	if _, _, err := cr.ECoupon(); err == nil {
		t.Error("an 'example' credential decoded as ecoupon")
	}
	r, err := ParseReceipt("eyJzdGF0dXMiOiJzdWNjZXNzIiwibWV0aG9kIjoiaW52b2ljZSIsInRpbWVzdGFtcCI6IjIwMjUtMDEtMTVUMTI6MDA6MDBaIiwicmVmZXJlbmNlIjoiaW52XzEyMzQ1In0")
	if err != nil || r.Method != "invoice" || r.Reference != "inv_12345" {
		t.Errorf("receipt %+v %v", r, err)
	}
}
