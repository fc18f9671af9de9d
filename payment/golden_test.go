package payment

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testutil"
	"github.com/ecoupons/ecoupons/tesla"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// checkGolden compares got with testdata/name, or rewrites it under -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	testutil.Golden(t, filepath.Join("testdata", name), got, *update)
}

// The worked example of docs/payment-method-ecoupon.md.
var (
	goldenNow     = time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	goldenSecret  = sha256.Sum256([]byte("ecoupons test payment secret"))
	goldenBook    = sha256.Sum256([]byte("ecoupons test book"))
	goldenCoupon  = sha256.Sum256([]byte("ecoupons test coupon 1"))
	goldenBinding = sha256.Sum256([]byte("ecoupons test binding 1"))
	// goldenOpen stands for a lane-open document: the codec carries its
	// bytes unread (docs/PROTOCOL.md §11 shows real ones).
	goldenOpen = []byte("{KDEzOmVjb3Vwb25zLW9wZW4p}")
)

func goldenChallenge(t testing.TB) *Challenge {
	b, err := NewBinder(goldenSecret[:])
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Issue("news.example", IntentCharge, testRequest(), goldenNow.Add(5*time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func goldenPayment() *coupons.Payment {
	p := &coupons.Payment{Lane: coupons.LaneID{Book: goldenBook, Lane: 1}, Index: 1, Value: goldenCoupon, HasMAC: true}
	copy(p.MAC[:], goldenBinding[:])
	return p
}

func goldenCredential(t testing.TB) *Credential {
	cr, err := NewCredential(goldenChallenge(t), goldenPayment(), goldenOpen)
	if err != nil {
		t.Fatal(err)
	}
	return cr
}

func goldenTESLA() *coupons.Receipt {
	mac := sha256.Sum256([]byte("ecoupons test receipt mac"))
	key := sha256.Sum256([]byte("ecoupons test receipt key"))
	r := &coupons.Receipt{Commitment: "q3Yz0Wm1cXw8b2Vt", Packet: tesla.Packet{Interval: 42, DisclosedIndex: 40, DisclosedKey: key}}
	copy(r.Packet.MAC[:], mac[:])
	return r
}

func TestGoldenChallenge(t *testing.T) {
	c := goldenChallenge(t)
	checkGolden(t, "challenge.txt", []byte(c.String()+"\n"))
	j, _ := b64.DecodeString(c.Request)
	checkGolden(t, "request.json", append(j, '\n'))
	var b strings.Builder
	fmt.Fprintf(&b, "secret = %x\n", goldenSecret)
	fmt.Fprintf(&b, "input = %s\n", BindingInput(c))
	fmt.Fprintf(&b, "id = %s\n", c.ID)
	checkGolden(t, "binding.txt", []byte(b.String()))
	// The vector checks against an HMAC computed here, not by the Binder.
	want := hexHMAC(goldenSecret[:], BindingInput(c))
	id, _ := b64.DecodeString(c.ID)
	if hex.EncodeToString(id) != want {
		t.Errorf("id %x, HMAC %s", id, want)
	}
}

func TestGoldenCredential(t *testing.T) {
	cr := goldenCredential(t)
	h, err := cr.Header()
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "credential.txt", []byte(h+"\n"))
	j, _ := cr.JSON()
	checkGolden(t, "credential.json", append(j, '\n'))
	back, err := ParseCredential(h)
	if err != nil {
		t.Fatal(err)
	}
	p, open, err := back.ECoupon()
	if err != nil || *p != *goldenPayment() || !bytes.Equal(open, goldenOpen) {
		t.Errorf("decoded %+v %q %v", p, open, err)
	}
}

func TestGoldenProblem(t *testing.T) {
	p := NewProblem(coupons.CodeCouponSpent, "coupon 7 of this lane is spent already")
	p.ChallengeID = goldenChallenge(t).ID
	p.Resume = 8
	p.Hint = "pay from coupon 8 on"
	checkGolden(t, "problem.json", append(p.JSON(), '\n'))
}

func TestGoldenReceipt(t *testing.T) {
	r := NewReceipt(goldenPayment().Lane, 1, goldenTESLA(), goldenNow.Add(3*time.Second))
	h := r.Header()
	checkGolden(t, "receipt.txt", []byte(h+"\n"))
	checkGolden(t, "receipt.json", append(r.JSON(), '\n'))
	back, err := ParseReceipt(h)
	if err != nil || *back != *r {
		t.Fatalf("parsed %+v, %v", back, err)
	}
	tr, err := back.TESLA()
	if err != nil || tr.Header() != goldenTESLA().Header() {
		t.Errorf("TESLA receipt %+v, %v", tr, err)
	}
}

// TestMethodDocMatchesGoldenFiles keeps the worked examples of
// docs/payment-method-ecoupon.md identical to the golden files: the fenced
// block after each "<!-- golden: path -->" marker must be the file's text.
func TestMethodDocMatchesGoldenFiles(t *testing.T) {
	doc, err := os.ReadFile("../docs/payment-method-ecoupon.md")
	if err != nil {
		t.Fatal(err)
	}
	marker := regexp.MustCompile(`^<!-- golden: ([^ ]+) -->$`)
	lines := strings.Split(string(doc), "\n")
	found := 0
	for i, line := range lines {
		m := marker.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		found++
		want, err := os.ReadFile(filepath.Join("..", m[1]))
		if err != nil {
			t.Errorf("line %d: %v", i+1, err)
			continue
		}
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
			t.Errorf("line %d: no fenced block after the marker", i+1)
			continue
		}
		var block []string
		for _, l := range lines[i+2:] {
			if strings.HasPrefix(l, "```") {
				break
			}
			block = append(block, l)
		}
		if got := strings.Join(block, "\n"); got != strings.TrimSuffix(string(want), "\n") {
			t.Errorf("line %d: the block differs from %s:\n got %q\nwant %q", i+1, m[1], got, want)
		}
	}
	if found < 6 {
		t.Errorf("%d golden blocks, want at least 6", found)
	}
}

func hexHMAC(key, msg []byte) string {
	// HMAC-SHA256 by its definition (RFC 2104), independent of crypto/hmac.
	const block = 64
	k := make([]byte, block)
	copy(k, key)
	ipad, opad := make([]byte, block), make([]byte, block)
	for i := range k {
		ipad[i], opad[i] = k[i]^0x36, k[i]^0x5c
	}
	inner := sha256.Sum256(append(ipad, msg...))
	outer := sha256.Sum256(append(opad, inner[:]...))
	return hex.EncodeToString(outer[:])
}

// TestGoldenSessionChallenge is the challenge of a metered route (intent
// session): a window of 16 units, one coupon per 10 events; its request
// round-trips, and a charge credential's terms are not a session's.
func TestGoldenSessionChallenge(t *testing.T) {
	b, err := NewBinder(goldenSecret[:])
	if err != nil {
		t.Fatal(err)
	}
	r := testRequest()
	r.Price, r.Meter, r.Window = 1, "events 10", 16
	c, err := b.Issue("news.example", IntentSession, r, goldenNow.Add(5*time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "session-challenge.txt", []byte(c.String()+"\n"))
	j, _ := b64.DecodeString(c.Request)
	checkGolden(t, "session-request.json", append(j, '\n'))
	back, err := DecodeRequest(c.Request)
	if err != nil || back.Meter != "events 10" || back.Window != 16 {
		t.Fatalf("DecodeRequest: %+v %v", back, err)
	}
	charge := testRequest()
	charge.Price = 1
	if err := back.sameTerms(charge); !errors.Is(err, ErrInvalidChallenge) {
		t.Errorf("a session's terms taken for a charge route's: %v", err)
	}
	for _, bad := range []struct {
		meter  string
		window uint32
	}{{"events 10", 0}, {"", 16}, {"frames 10", 16}, {"bytes 1MiB", 4}} {
		r.Meter, r.Window = bad.meter, bad.window
		if _, err := EncodeRequest(r); !errors.Is(err, ErrBadRequest) {
			t.Errorf("meter %q window %d: %v", bad.meter, bad.window, err)
		}
	}
}
