package coupons

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/spki"
)

func refChain(tag LaneTag, length uint32, seed Value) []Value {
	c := make([]Value, length+1)
	c[length] = seed
	for i := length; i > 0; i-- {
		c[i-1] = Step(&tag, i-1, &c[i])
	}
	return c
}

func TestVerifyNext(t *testing.T) {
	w := newWorld(t)
	b := w.book.Book
	tag := b.LaneTag(1)
	c := refChain(tag, b.Length, w.secrets.Seed(1))
	if c[0] != w.anchors[1] {
		t.Fatal("anchor differs from the chain's w_0")
	}
	last, lastW := uint32(0), c[0]
	for _, i := range []uint32{1, 2, 5, 6, 10, 14, 16} {
		if err := VerifyNext(&tag, b.Length, last, &lastW, i, &c[i], 4); err != nil {
			t.Fatalf("coupon %d: %v", i, err)
		}
		last, lastW = i, c[i]
	}
	cases := []struct {
		name    string
		last, i uint32
		w       Value
		maxJump uint32
		want    error
	}{
		{"reused coupon", 5, 5, c[5], 4, ErrReplay},
		{"lower index", 5, 3, c[3], 4, ErrReplay},
		{"jump beyond the bound", 1, 9, c[9], 4, ErrJumpTooLarge},
		{"beyond the lane", 15, 17, c[15], 4, ErrBeyondLane},
		{"wrong value", 5, 6, c[7], 4, ErrBadCoupon},
		{"coupon from another lane", 5, 6, refChain(b.LaneTag(2), 16, w.secrets.Seed(2))[6], 4, ErrBadCoupon},
		{"coupon from another book", 5, 6, refChain(NewLaneTag(testSecrets("other").Salt, 1), 16, testSecrets("other").Seed(1))[6], 4, ErrBadCoupon},
		{"same seed, other lane tag", 5, 6, refChain(b.LaneTag(2), 16, w.secrets.Seed(1))[6], 4, ErrBadCoupon},
	}
	for _, tc := range cases {
		lw := c[tc.last]
		if err := VerifyNext(&tag, b.Length, tc.last, &lw, tc.i, &tc.w, tc.maxJump); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestMerkleProofs(t *testing.T) {
	for n := 1; n <= 17; n++ {
		anchors := make([]Value, n)
		for i := range anchors {
			anchors[i][0], anchors[i][1] = byte(i), byte(n)
		}
		root := MerkleRoot(anchors)
		for s := range anchors {
			proof, err := MerkleProof(anchors, uint32(s))
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyMerkleProof(root, uint32(n), uint32(s), &anchors[s], proof); err != nil {
				t.Fatalf("n=%d s=%d: %v", n, s, err)
			}
			// The proof of lane s does not prove the anchor at another index,
			// nor another anchor, nor in a tree of another size.
			other := anchors[s]
			other[31] ^= 1
			if VerifyMerkleProof(root, uint32(n), uint32(s), &other, proof) == nil {
				t.Fatalf("n=%d s=%d: forged anchor accepted", n, s)
			}
			if n > 1 && VerifyMerkleProof(root, uint32(n), uint32((s+1)%n), &anchors[s], proof) == nil {
				t.Fatalf("n=%d s=%d: proof moved to another lane accepted", n, s)
			}
			if len(proof) > 0 {
				bad := append([][32]byte(nil), proof...)
				bad[0][0] ^= 1
				if VerifyMerkleProof(root, uint32(n), uint32(s), &anchors[s], bad) == nil {
					t.Fatalf("n=%d s=%d: forged path accepted", n, s)
				}
			}
		}
	}
}

func TestBookRoundTripAndSignature(t *testing.T) {
	w := newWorld(t)
	for _, enc := range [][]byte{spki.Canonical(w.book.Sexp()), spki.Advanced(w.book.Sexp()), spki.Transport(w.book.Sexp())} {
		x, err := spki.Parse(enc)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := ParseSignedBook(x)
		if err != nil {
			t.Fatal(err)
		}
		if err := sb.Verify(); err != nil {
			t.Fatal(err)
		}
		if sb.Book.ID() != w.book.Book.ID() || sb.Book.Unit != 1_000_000 || sb.Book.Length != 16 {
			t.Fatal("book fields changed in the round trip")
		}
	}
	if _, err := w.book.Book.Sign(w.mallory); !errors.Is(err, spki.ErrWrongSigner) {
		t.Errorf("signing by a non-owner: %v", err)
	}
	fv, _ := w.book.Book.FaceValue()
	if fv != 4*16*1_000_000 {
		t.Errorf("face value %d", fv)
	}
}

func TestParseBookErrors(t *testing.T) {
	w := newWorld(t)
	good := w.book.Book.Sexp()
	mutate := func(i int, v spki.Sexp) spki.List {
		l := append(spki.List(nil), good...)
		l[i] = v
		return l
	}
	bad := []spki.Sexp{
		spki.L("ecoupons-book"),
		mutate(1, spki.L("version", "2")),
		mutate(2, spki.L("vendor", "News.Example")),
		mutate(3, spki.L("broker", "x")),
		mutate(5, spki.L("salt", "short")),
		mutate(6, spki.L("lanes", "0")),
		mutate(6, spki.L("lanes", "007")),
		mutate(7, spki.L("length", "12")),
		mutate(7, spki.L("length", "4294967296")),
		mutate(8, spki.L("unit", "-1", "EUR")),
		mutate(8, spki.L("unit", "0.001", "eur")),
		mutate(8, spki.L("unit", "0.0000000001", "EUR")),
		mutate(8, spki.L("unit", "0", "EUR")),
		mutate(9, spki.L("not-after", "2026-12-31T00:00:00Z")),
		mutate(10, spki.L("root", "x")),
		mutate(6, spki.L("lanes", "16777217")),
		mutate(7, spki.L("length", "2147483648")),
	}
	for i, x := range bad {
		if _, err := ParseBook(x); !errors.Is(err, ErrBadBook) {
			t.Errorf("case %d (%s): %v", i, x, err)
		}
	}
	// A book of 2^24 lanes × 2^30 coupons × 1000 EUR overflows: refused.
	huge := mutate(8, spki.L("unit", "1000", "EUR"))
	huge[6], huge[7] = spki.L("lanes", "16777216"), spki.L("length", "1073741824")
	if _, err := ParseBook(huge); !errors.Is(err, ErrBadAmount) || !errors.Is(err, ErrBadBook) {
		t.Errorf("overflowing face value: %v", err)
	}
}

func TestAmounts(t *testing.T) {
	good := map[string]int64{"0.001": 1_000_000, "12": 12 * NanosPerUnit, "12.5": 12_500_000_000, "0.000000001": 1, "0": 0, "9223372036.854775807": MaxAmount}
	for s, want := range good {
		got, err := ParseAmount(s)
		if err != nil || got != want {
			t.Errorf("ParseAmount(%q) = %d, %v; want %d", s, got, err, want)
		}
		if back := FormatAmount(got); back != s {
			t.Errorf("FormatAmount(%d) = %q, want %q", got, back, s)
		}
	}
	for _, s := range []string{"", ".5", "5.", "-1", "+1", "1e3", "01", "1.0000000001", "9223372036.854775808", "99999999999", " 1", "1,5", "0x10"} {
		if _, err := ParseAmount(s); !errors.Is(err, ErrBadAmount) {
			t.Errorf("ParseAmount(%q) accepted", s)
		}
	}
	if _, err := MulAmount(1<<40, 1<<30); !errors.Is(err, ErrBadAmount) {
		t.Errorf("overflow not detected")
	}
	if _, err := ChargeCap(9, 10, 2); !errors.Is(err, ErrCapExceeded) {
		t.Errorf("cap not enforced")
	}
	if n, err := ChargeCap(9, 0, 2); err != nil || n != 11 {
		t.Errorf("no cap: %d %v", n, err)
	}
}

func TestPaymentHeader(t *testing.T) {
	w := newWorld(t)
	p := Payment{Lane: LaneID{Book: w.book.Book.ID(), Lane: 3}, Index: 7, HasMAC: true}
	p.Value[0], p.MAC[15] = 0xfe, 0x01
	h := p.Header()
	var q Payment
	if err := ParsePayment(h, &q); err != nil {
		t.Fatal(err)
	}
	if q != p {
		t.Fatalf("round trip: %+v != %+v", q, p)
	}
	// Case-insensitive scheme, quoted values, whitespace, unknown parameters.
	alt := "ecoupon  lane=\"" + p.Lane.String() + "\" ,i=7,\tw=" + string(appendB64(nil, p.Value[:])) + ", future=x, m=" + string(appendB64(nil, p.MAC[:]))
	if err := ParsePayment(alt, &q); err != nil || q != p {
		t.Fatalf("equivalent header refused: %v", err)
	}
	lane := p.Lane.String()
	wv := string(appendB64(nil, p.Value[:]))
	bad := []string{
		"",
		"Basic abc",
		"ECoupon",
		"ECouponlane=x",
		"ECoupon lane=" + lane + ", i=7",
		"ECoupon lane=" + lane + ", i=0, w=" + wv,
		"ECoupon lane=" + lane + ", i=07, w=" + wv,
		"ECoupon lane=" + lane + ", i=4294967296, w=" + wv,
		"ECoupon lane=" + lane + ", i=7, w=" + wv + "A",
		"ECoupon lane=" + lane + ", i=7, w=" + wv[:42] + "B",
		"ECoupon lane=" + lane + ", i=7, i=8, w=" + wv,
		"ECoupon lane=" + lane[:40] + ", i=7, w=" + wv,
		"ECoupon lane=" + lane + "x, i=7, w=" + wv,
		"ECoupon lane=" + lane + ", i=7, w=" + wv + ", m=short",
		"ECoupon lane=" + lane + ", i=7 w=" + wv,
		"ECoupon lane=\"" + lane + ", i=7, w=" + wv,
		"ECoupon =x",
		"ECoupon lane=" + lane + ", i=7, w=" + wv + ", x=\"a\\\"\"",
		"ECoupon " + string(make([]byte, 600)),
	}
	for _, s := range bad {
		if err := ParsePayment(s, &q); !errors.Is(err, ErrBadHeader) {
			t.Errorf("ParsePayment(%q) = %v", clip(s), err)
		}
	}
}

func TestRequestDigest(t *testing.T) {
	r := Request{Method: "GET", Host: "news.example", Path: "/premium/a", Query: "x=1", Lane: LaneID{Lane: 2}, Index: 5, Nonce: "n"}
	d := r.Digest()
	// Every field is bound, and the length prefixes stop shifting bytes
	// between fields.
	variants := []Request{r, r, r, r, r, r, r, r, r, r, r, r}
	variants[0].Method = "POST"
	variants[1].Host = "news.example."
	variants[2].Path = "/premium/ax"
	variants[3].Query = ""
	variants[4].Lane.Lane = 3
	variants[5].Index = 6
	variants[6].Nonce = "m"
	variants[7].Path, variants[7].Query = "/premium/ax=1", ""
	// The body (by its SHA-256) and the Range header are bound too.
	sum := sha256.Sum256([]byte("another body"))
	variants[8].ContentDigest = sum[:]
	variants[9].Range = "bytes=0-99"
	variants[10].ContentDigest, variants[10].Range = []byte("bytes=0-99"), ""
	variants[11].Query, variants[11].ContentDigest = "", []byte("\x00\x00\x00\x03x=1")
	for i, v := range variants {
		if v.Digest() == d {
			t.Errorf("variant %d has the same digest", i)
		}
	}
	if r.Digest() != d {
		t.Error("digest not deterministic")
	}
	// A request past the stack buffer digests as if it fitted.
	long := r
	long.Path = "/" + strings.Repeat("p", 300)
	want := sha256.New()
	want.Write([]byte(LabelRequest))
	for _, f := range []string{long.Method, long.Host, long.Path, long.Query, "", long.Range} {
		want.Write(binary.BigEndian.AppendUint32(nil, uint32(len(f))))
		want.Write([]byte(f))
	}
	want.Write(long.Lane.Book[:])
	want.Write(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, long.Lane.Lane), long.Index))
	want.Write(binary.BigEndian.AppendUint32(nil, uint32(len(long.Nonce))))
	want.Write([]byte(long.Nonce))
	if got := long.Digest(); !bytes.Equal(got[:], want.Sum(nil)) {
		t.Error("the digest of a long request differs from its definition")
	}
	if n := testing.AllocsPerRun(100, func() { d = r.Digest() }); n != 0 {
		t.Errorf("Digest of a short request: %v allocations", n)
	}
}

// TestContentDigestHeader: the Content-Digest value round-trips, other
// algorithms are skipped, and malformed values are refused.
func TestContentDigestHeader(t *testing.T) {
	sum := sha256.Sum256([]byte(`{"comment":"hello"}`))
	v := ContentDigestHeader(&sum)
	if got, err := ParseContentDigest(v); err != nil || got != sum {
		t.Fatalf("ParseContentDigest(%q) = %x, %v", v, got, err)
	}
	if got, err := ParseContentDigest("sha-512=:AAAA:, " + v); err != nil || got != sum {
		t.Fatalf("with another algorithm first: %x, %v", got, err)
	}
	for _, bad := range []string{"", "sha-512=:AAAA:", "sha-256=AAAA", "sha-256=:AAAA:", v + ", " + v, "sha-256", "=x, " + v,
		"sha-256=:" + base64.RawStdEncoding.EncodeToString(sum[:]) + ":"} {
		if _, err := ParseContentDigest(bad); !errors.Is(err, ErrBadContentDigest) {
			t.Errorf("ParseContentDigest(%q) = %v", bad, err)
		}
	}
}

func TestCreateRandomBooksDiffer(t *testing.T) {
	p := Params{Vendor: "news.example", Lanes: 2, Length: 4, Currency: "EUR", Unit: 1, NotAfter: t0}
	a, _, _, err := Create(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _, _, _ := Create(p, nil)
	if a.ID() == b.ID() || a.Salt == b.Salt {
		t.Error("two books share an ID or salt")
	}
	calls := 0
	if _, _, _, err := Create(Params{Vendor: "news.example", Lanes: 5, Length: 4, Currency: "EUR", Unit: 1, NotAfter: t0}, func(done, total uint32) {
		calls++
		if total != 5 || done > total {
			t.Errorf("progress %d/%d", done, total)
		}
	}); err != nil || calls != 5 {
		t.Errorf("progress called %d times: %v", calls, err)
	}
	if _, _, _, err := Create(Params{Vendor: "news.example", Lanes: 1, Length: 4, Currency: "EUR", Unit: 1}, nil); !errors.Is(err, ErrBadBook) {
		t.Errorf("book without expiry: %v", err)
	}
	_ = time.Second
}
