package coupons

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"

	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/tesla"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// checkGolden compares got with testdata/name, or rewrites it under -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	testutil.Golden(t, filepath.Join("testdata", name), got, *update)
}

// TestGoldenChain documents lane 1 of the test book (L = 16): its tag and
// every chain value from the seed down to the anchor.
func TestGoldenChain(t *testing.T) {
	w := newWorld(t)
	sec := w.secrets
	var b strings.Builder
	fmt.Fprintf(&b, "# Lane 1 of the test book. salt = SHA-256(\"ecoupons test salt book\"),\n")
	fmt.Fprintf(&b, "# master = SHA-256(\"ecoupons test master book\"), L = 16.\n")
	fmt.Fprintf(&b, "# seed = HKDF-SHA256(master, salt, %q || be32(1), 32)\n", LabelSeed)
	fmt.Fprintf(&b, "# tag  = SHA-256(%q || salt || be32(1))[:16]\n", LabelLane)
	fmt.Fprintf(&b, "# w_i  = SHA-256(%q || tag || be32(i) || w_{i+1})\n", LabelStep)
	fmt.Fprintf(&b, "salt = %x\nmaster = %x\n", sec.Salt, sec.Master)
	tag := w.book.Book.LaneTag(1)
	fmt.Fprintf(&b, "tag = %x\n", tag)
	c := refChain(tag, 16, sec.Seed(1))
	for i := 16; i >= 0; i-- {
		fmt.Fprintf(&b, "w_%d = %x\n", i, c[i])
	}
	checkGolden(t, "chain.txt", []byte(b.String()))
}

// TestGoldenMerkle documents the anchors of the test book's 4 lanes, the
// root and the proof of lane 2.
func TestGoldenMerkle(t *testing.T) {
	w := newWorld(t)
	var b strings.Builder
	b.WriteString("# leaf(s) = SHA-256(0x00 || be32(s) || anchor_s); node = SHA-256(0x01 || left || right)\n")
	for s, a := range w.anchors {
		fmt.Fprintf(&b, "anchor_%d = %x\n", s, a)
	}
	fmt.Fprintf(&b, "root = %x\n", w.book.Book.Root)
	proof, _ := MerkleProof(w.anchors, 2)
	for k, p := range proof {
		fmt.Fprintf(&b, "proof(2)[%d] = %x\n", k, p)
	}
	checkGolden(t, "merkle.txt", []byte(b.String()))
}

func TestGoldenBook(t *testing.T) {
	w := newWorld(t)
	checkGolden(t, "book.adv", append(spki.AdvancedIndent(w.book.Sexp()), '\n'))
	id := w.book.Book.ID()
	checkGolden(t, "book.id", []byte(hex.EncodeToString(id[:])+"\n"))
}

// TestGoldenPayment documents the payment of coupon 1 of lane 1 for
// GET https://news.example/premium/a?x=1 answering nonce "nonce-1", then
// coupon 2 for a POST with a body and coupon 3 for a GET with a Range.
func TestGoldenPayment(t *testing.T) {
	w := newWorld(t)
	pp := w.payer(1)
	r := Request{Method: "GET", Host: "news.example", Path: "/premium/a", Query: "x=1", Lane: pp.lane, Index: 1, Nonce: "nonce-1"}
	d := r.Digest()
	p := Pay(pp.lane, 1, pp.chain[1], &pp.chain[2], &d)
	var b strings.Builder
	fmt.Fprintf(&b, "# GET https://news.example/premium/a?x=1, nonce \"nonce-1\", coupon 1 of lane 1\n")
	fmt.Fprintf(&b, "digest = %x\n", d)
	fmt.Fprintf(&b, "Authorization: %s\n", p.Header())
	// A request with a body states its SHA-256 in Content-Digest and binds
	// it; a Range header is bound as sent.
	body := []byte(`{"comment":"hello"}`)
	sum := sha256.Sum256(body)
	r = Request{Method: "POST", Host: "news.example", Path: "/premium/a", ContentDigest: sum[:], Lane: pp.lane, Index: 2, Nonce: "nonce-1"}
	d = r.Digest()
	p = Pay(pp.lane, 2, pp.chain[2], &pp.chain[3], &d)
	fmt.Fprintf(&b, "# POST https://news.example/premium/a with body %s, coupon 2 of lane 1\n", body)
	fmt.Fprintf(&b, "%s: %s\n", HeaderContentDigest, ContentDigestHeader(&sum))
	fmt.Fprintf(&b, "digest = %x\n", d)
	fmt.Fprintf(&b, "Authorization: %s\n", p.Header())
	r = Request{Method: "GET", Host: "news.example", Path: "/premium/a", Range: "bytes=0-99", Lane: pp.lane, Index: 3, Nonce: "nonce-1"}
	d = r.Digest()
	p = Pay(pp.lane, 3, pp.chain[3], &pp.chain[4], &d)
	fmt.Fprintf(&b, "# GET https://news.example/premium/a with Range: bytes=0-99, coupon 3 of lane 1\n")
	fmt.Fprintf(&b, "digest = %x\n", d)
	fmt.Fprintf(&b, "Authorization: %s\n", p.Header())
	checkGolden(t, "payment.txt", []byte(b.String()))
}

// TestGoldenFunding documents the broker's book certificate of the test
// book (valid from a day before 2026-12-01_12:00:00 to the book's expiry).
func TestGoldenFunding(t *testing.T) {
	w := newWorld(t)
	checkGolden(t, "funding.adv", append(spki.AdvancedIndent(w.funding.Sexp()), '\n'))
	if err := VerifyFunding(w.funding, w.book.Book, t0, nil); err != nil {
		t.Fatal(err)
	}
}

// TestGoldenOpen documents a lane open by the book's owner.
func TestGoldenOpen(t *testing.T) {
	w := newWorld(t)
	o := w.open(t, w.alice, 1)
	checkGolden(t, "open.adv", append(spki.AdvancedIndent(o.Sexp()), '\n'))
	if _, err := VerifyOpen(roundTrip(t, o), w.policy); err != nil {
		t.Fatal(err)
	}
}

// TestGoldenReceipt documents a receipt-chain commitment (vendor key
// "vendor", seed SHA-256("ecoupons test receipt seed"), 8 intervals of 1 s
// from 2026-12-01_12:00:00, delay 2) and the receipt of coupon 1 of lane 1
// (the payment of TestGoldenPayment) sent in interval 3.
func TestGoldenReceipt(t *testing.T) {
	w := newWorld(t)
	seed := tesla.Key(sha256.Sum256([]byte("ecoupons test receipt seed")))
	chain, err := tesla.NewChain(seed, 8)
	if err != nil {
		t.Fatal(err)
	}
	sched := tesla.Schedule{T0: t0, Interval: time.Second, Delay: 2}
	c := &ReceiptCommitment{Vendor: "news.example", Schedule: sched, Intervals: 8, Commitment: chain.Commitment()}
	if err := c.Sign(testKey("vendor")); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "receipt-commitment.adv", append(spki.AdvancedIndent(c.Sexp()), '\n'))
	pp := w.payer(1)
	r := Request{Method: "GET", Host: "news.example", Path: "/premium/a", Query: "x=1", Lane: pp.lane, Index: 1, Nonce: "nonce-1"}
	d := r.Digest()
	s, err := tesla.NewSender(chain, sched, func() time.Time { return t0.Add(3500 * time.Millisecond) })
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Authenticate(ReceiptMessage(pp.lane, 1, 1, &d))
	if err != nil {
		t.Fatal(err)
	}
	rc := Receipt{Commitment: c.ID(), Packet: p}
	checkGolden(t, "receipt.txt", []byte("ECoupon-Receipt: "+rc.Header()+"\n"))
	x, _ := spki.Parse(spki.Canonical(c.Sexp()))
	if _, err := ParseReceiptCommitment(x); err != nil {
		t.Fatal(err)
	}
}
