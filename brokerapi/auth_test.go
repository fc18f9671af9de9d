package brokerapi

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"
	"github.com/ecoupons/ecoupons/spki"
)

// TestSignedRequestVerifiesOnlyAtItsBroker: a request signed with
// SignRequest verifies for the broker it names, within the replay window,
// and for no other broker, body or time.
func TestSignedRequestVerifiesOnlyAtItsBroker(t *testing.T) {
	k := testutil.Key("alice")
	pub, _ := spki.NewPublicKey(k.Public())
	bk, _ := spki.NewPublicKey(testutil.Key("broker").Public())
	other, _ := spki.NewPublicKey(testutil.Key("other").Public())
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"items":[]}`)
	req, _ := http.NewRequest("POST", "https://broker.example/v1/redeem?x=1", nil)
	if err := SignRequest(req, body, k, bk.Hash(), now); err != nil {
		t.Fatal(err)
	}
	h := req.Header.Get(HeaderSignature)
	s, err := VerifySignature(h, bk.Hash(), "POST", "/v1/redeem?x=1", body, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Key.Equal(pub) || s.TS != now.Unix() || len(s.Nonce) != 16 {
		t.Fatalf("verified %+v", s)
	}
	for name, c := range map[string]struct {
		h, uri string
		self   spki.KeyHash
		body   string
		at     time.Time
		want   error
	}{
		"unsigned":       {"", "/v1/redeem?x=1", bk.Hash(), string(body), now, ErrUnsigned},
		"another broker": {h, "/v1/redeem?x=1", other.Hash(), string(body), now, ErrWrongBroker},
		"another path":   {h, "/v1/redeem", bk.Hash(), string(body), now, ErrBadAuth},
		"another body":   {h, "/v1/redeem?x=1", bk.Hash(), `{}`, now, ErrBadAuth},
		"too late":       {h, "/v1/redeem?x=1", bk.Hash(), string(body), now.Add(ReplayWindow + time.Second), ErrReplayed},
		"malformed":      {"key=a, key=b", "/v1/redeem?x=1", bk.Hash(), string(body), now, ErrBadAuth},
	} {
		if _, err := VerifySignature(c.h, c.self, "POST", c.uri, []byte(c.body), c.at); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	link, err := OfficeLoginURL("https://broker.example/", bk.Hash(), k, now)
	if err != nil || !strings.HasPrefix(link, "https://broker.example"+OfficePath+"login?auth=") {
		t.Fatalf("%s, %v", link, err)
	}
}
