package blindfund

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"
	"github.com/ecoupons/ecoupons/spki"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var (
	t0    = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	face  = int64(1_024_000_000) // 1.024 EUR
	keyMu sync.Mutex
	keys  = map[string]*rsa.PrivateKey{}
)

// denom is a test denomination of 1.024 EUR for December 2026 (keys are
// made once per name: RSA key generation is slow).
func denom(t testing.TB, name string) (*Denomination, *rsa.PrivateKey) {
	keyMu.Lock()
	defer keyMu.Unlock()
	sk := keys[name]
	if sk == nil {
		var err error
		if sk, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
		keys[name] = sk
	}
	return &Denomination{Face: face, Currency: "EUR", NotBefore: t0, NotAfter: t0.AddDate(0, 2, 0), Key: &sk.PublicKey}, sk
}

func fund(t testing.TB, d *Denomination, sk *rsa.PrivateKey, book [32]byte) *Proof {
	t.Helper()
	req, blinded, err := Blind(d, book, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := Sign(sk, blinded)
	if err != nil {
		t.Fatal(err)
	}
	p, err := req.Finish(bs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBlindFundingRoundTrip: a reader blinds its book's ID, the broker
// signs what it cannot read, the reader's proof verifies at a gate, and
// survives its encoding.
func TestBlindFundingRoundTrip(t *testing.T) {
	d, sk := denom(t, "a")
	book := [32]byte{1, 2, 3}
	p := fund(t, d, sk, book)
	now := t0.Add(time.Hour)
	if err := p.Verify(d, book, face, "EUR", now.AddDate(0, 0, 30), now); err != nil {
		t.Fatal(err)
	}
	back, err := ParseProof(spki.Transport(p.Sexp()))
	if err != nil || back.Denomination != p.Denomination || back.Prefix != p.Prefix || !bytes.Equal(back.Signature, p.Signature) {
		t.Fatalf("proof round trip: %+v %v", back, err)
	}
	dd, err := ParseDenomination(spki.Advanced(d.Sexp()))
	if err != nil || dd.ID() != d.ID() {
		t.Fatalf("denomination round trip: %v", err)
	}
}

// TestBrokerCannotLinkTheBook: what the broker signs is blinded — it
// contains neither the book's ID nor the message, and two requests for
// the same book look unrelated — and the proof the book carries is not
// the signature the broker returned.
func TestBrokerCannotLinkTheBook(t *testing.T) {
	d, sk := denom(t, "a")
	book := [32]byte{7, 7, 7}
	r1, b1, err := Blind(d, book, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, b2, _ := Blind(d, book, rand.Reader)
	id := d.ID()
	if bytes.Equal(b1, b2) || bytes.Contains(b1, book[:]) || bytes.Contains(b1, message(id, book)) {
		t.Fatal("the blinded message shows the book, or two requests for one book match")
	}
	bs, _ := Sign(sk, b1)
	p, err := r1.Finish(bs)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(p.Signature, bs) {
		t.Fatal("the proof is the signature the broker saw")
	}
}

// TestForgedOrMisusedProofsRefused: an altered book (commitment), a proof
// checked under another denomination's key, a book of another face value
// or currency, a key out of its period, a book outliving its key, a
// tampered signature — each refused with its error.
func TestForgedOrMisusedProofsRefused(t *testing.T) {
	d, sk := denom(t, "a")
	other, otherSK := denom(t, "b")
	book := [32]byte{9}
	p := fund(t, d, sk, book)
	now := t0.Add(24 * time.Hour)
	exp := now.AddDate(0, 0, 30)
	tampered := *p
	tampered.Signature = append([]byte(nil), p.Signature...)
	tampered.Signature[10] ^= 1
	// A proof under the other key, relabelled as the first denomination.
	relabelled := fund(t, other, otherSK, book)
	relabelled.Denomination = d.ID()
	cases := []struct {
		name string
		err  error
		run  func() error
	}{
		{"altered book", ErrBadSignature, func() error { return p.Verify(d, [32]byte{8}, face, "EUR", exp, now) }},
		{"another denomination", ErrWrongDenomination, func() error { return p.Verify(other, book, face, "EUR", exp, now) }},
		{"relabelled proof", ErrBadSignature, func() error { return relabelled.Verify(d, book, face, "EUR", exp, now) }},
		{"face value", ErrWrongDenomination, func() error { return p.Verify(d, book, face*2, "EUR", exp, now) }},
		{"currency", ErrWrongDenomination, func() error { return p.Verify(d, book, face, "USD", exp, now) }},
		{"before the period", ErrKeyExpired, func() error { return p.Verify(d, book, face, "EUR", exp, t0.Add(-time.Second)) }},
		{"key expired", ErrKeyExpired, func() error { return p.Verify(d, book, face, "EUR", exp, d.NotAfter.Add(time.Second)) }},
		{"book outlives key", ErrKeyExpired, func() error { return p.Verify(d, book, face, "EUR", d.NotAfter.Add(time.Hour), now) }},
		{"tampered signature", ErrBadSignature, func() error { return tampered.Verify(d, book, face, "EUR", exp, now) }},
	}
	for _, c := range cases {
		if err := c.run(); !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
	}
	if _, err := Sign(sk, []byte("short")); !errors.Is(err, ErrFormat) {
		t.Errorf("a blinded message of the wrong size: %v", err)
	}
}

// TestGolden: testdata holds a denomination (its key), a proof and the
// book it funds, made once; they still parse, encode to the same bytes
// and verify (-update makes them again).
func TestGolden(t *testing.T) {
	keyFile, denomFile, proofFile := filepath.Join("testdata", "denomination-key.pem"), filepath.Join("testdata", "denomination.txt"), filepath.Join("testdata", "proof.txt")
	book := [32]byte{0xb0, 0x0c}
	if *update {
		d, sk := denom(t, "golden")
		p := fund(t, d, sk, book)
		der := x509.MarshalPKCS1PrivateKey(sk)
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o644)
		os.WriteFile(denomFile, append(spki.Advanced(d.Sexp()), '\n'), 0o644)
		os.WriteFile(proofFile, append(spki.Advanced(p.Sexp()), '\n'), 0o644)
	}
	db, err := os.ReadFile(denomFile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ParseDenomination(db)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := os.ReadFile(proofFile)
	p, err := ParseProof(pb)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(spki.Advanced(p.Sexp()), '\n'); !bytes.Equal(got, pb) {
		t.Fatal("the proof does not encode back to its golden bytes")
	}
	if got := append(spki.Advanced(d.Sexp()), '\n'); !bytes.Equal(got, db) {
		t.Fatal("the denomination does not encode back to its golden bytes")
	}
	if err := p.Verify(d, book, face, "EUR", t0.AddDate(0, 1, 0), t0.Add(time.Hour)); err != nil {
		t.Fatalf("the golden proof: %v", err)
	}
	// The key file is the denomination's.
	kb, _ := os.ReadFile(keyFile)
	blk, _ := pem.Decode(kb)
	sk, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil || sk.PublicKey.N.Cmp(d.Key.N) != 0 {
		t.Fatalf("the golden key: %v", err)
	}
}

// TestParseRefusesJunk: denominations and proofs that do not parse, or
// that name weak keys or empty periods, are refused with ErrFormat.
func TestParseRefusesJunk(t *testing.T) {
	d, _ := denom(t, "a")
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	bad := *d
	bad.Key = &weak.PublicKey
	short := *d
	short.NotAfter = d.NotBefore
	for _, b := range [][]byte{nil, []byte("(x)"), []byte("(ecoupon-denomination)"), spki.Transport(bad.Sexp()), spki.Transport(short.Sexp())} {
		if _, err := ParseDenomination(b); !errors.Is(err, ErrFormat) {
			t.Errorf("denomination %q: %v", b, err)
		}
	}
	for _, b := range [][]byte{nil, []byte("(ecoupon-blind-funding)"), []byte("(ecoupon-blind-funding (denomination |AA==|) (prefix |AA==|) (signature |AA==|))")} {
		if _, err := ParseProof(b); !errors.Is(err, ErrFormat) {
			t.Errorf("proof %q: %v", b, err)
		}
	}
}

func FuzzParseProof(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "proof.txt")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProof(b)
		if err != nil {
			return
		}
		back, err := ParseProof(spki.Transport(p.Sexp()))
		if err != nil || back.Denomination != p.Denomination || back.Prefix != p.Prefix || !bytes.Equal(back.Signature, p.Signature) {
			t.Fatalf("a parsed proof does not round-trip: %v", err)
		}
	})
}

func FuzzParseDenomination(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "denomination.txt")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDenomination(b)
		if err != nil {
			return
		}
		if back, err := ParseDenomination(spki.Canonical(d.Sexp())); err != nil || back.ID() != d.ID() {
			t.Fatalf("a parsed denomination does not round-trip: %v", err)
		}
	})
}

func BenchmarkBaselineSHA256_32(b *testing.B)     { testutil.BenchSHA256_32(b) }
func BenchmarkBaselineEd25519Verify(b *testing.B) { testutil.BenchEd25519Verify(b) }

// BenchmarkBlindSign is the broker's cost per anonymous book (a 2048-bit
// RSA private-key operation, blinded).
func BenchmarkBlindSign(b *testing.B) {
	d, sk := denom(b, "a")
	_, blinded, err := Blind(d, [32]byte{1}, rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	base := testutil.Ed25519VerifyNs()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sign(sk, blinded); err != nil {
			b.Fatal(err)
		}
	}
	testutil.ReportEd25519Multiple(b, base)
}

// BenchmarkVerifyProof is a gate's cold check of an anonymous book's
// proof (once per book; cached after).
func BenchmarkVerifyProof(b *testing.B) {
	d, sk := denom(b, "a")
	book := [32]byte{1}
	p := fund(b, d, sk, book)
	now := t0.Add(time.Hour)
	base := testutil.Ed25519VerifyNs()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Verify(d, book, face, "EUR", now, now); err != nil {
			b.Fatal(err)
		}
	}
	testutil.ReportEd25519Multiple(b, base)
}

// TestBlindSeededRepeats: a request blinded from a stored seed is the
// same after a crash (same blinded message, so the broker's retry answer
// unblinds), and another seed gives an unlinkable one.
func TestBlindSeededRepeats(t *testing.T) {
	d, sk := denom(t, "seeded")
	book := [32]byte{7}
	seed := [32]byte{1, 2, 3}
	r1, b1, err := BlindSeeded(d, book, seed)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := Sign(sk, b1)
	if err != nil {
		t.Fatal(err)
	}
	r2, b2, err := BlindSeeded(d, book, seed)
	if err != nil || !bytes.Equal(b1, b2) {
		t.Fatalf("the same seed blinds differently: %v", err)
	}
	p, err := r2.Finish(bs) // the request rebuilt after the "crash"
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(d, book, face, "EUR", t0.AddDate(0, 1, 0), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := r1.Finish(bs); err != nil {
		t.Fatal(err)
	}
	if _, b3, _ := BlindSeeded(d, book, [32]byte{9}); bytes.Equal(b1, b3) {
		t.Fatal("another seed gives the same blinded message")
	}
}

// TestGoldenFlow is the blind-signing flow as a vector (docs/PROTOCOL.md
// §20): under the golden denomination and key, the book b00c…, blinded
// from the seed 5eed…, the blinded message, the broker's blind signature
// (deterministic: RSA), and the book's proof are those of
// testdata/flow.txt.
func TestGoldenFlow(t *testing.T) {
	path := filepath.Join("testdata", "flow.txt")
	db, _ := os.ReadFile(filepath.Join("testdata", "denomination.txt"))
	d, err := ParseDenomination(db)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := os.ReadFile(filepath.Join("testdata", "denomination-key.pem"))
	blk, _ := pem.Decode(kb)
	sk, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	book := [32]byte{0xb0, 0x0c}
	seed := [32]byte{0x5e, 0xed}
	req, blinded, err := BlindSeeded(d, book, seed)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := Sign(sk, blinded)
	if err != nil {
		t.Fatal(err)
	}
	p, err := req.Finish(bs)
	if err != nil {
		t.Fatal(err)
	}
	id := d.ID()
	var out bytes.Buffer
	fmt.Fprintf(&out, "# RSABSSA-SHA384-PSS-Randomized (RFC 9474) under the denomination of denomination.txt\n")
	fmt.Fprintf(&out, "denomination  %x\nbook          %x\nseed          %x\n", id, book, seed)
	fmt.Fprintf(&out, "message       %x\n", message(id, book))
	fmt.Fprintf(&out, "prefix        %x\nblinded       %x\nblind_sig     %x\nsignature     %x\n", p.Prefix, blinded, bs, p.Signature)
	fmt.Fprintf(&out, "proof         %s\n", spki.Advanced(p.Sexp()))
	testutil.Golden(t, path, out.Bytes(), *update)
	if err := p.Verify(d, book, face, "EUR", t0.AddDate(0, 1, 0), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
}
