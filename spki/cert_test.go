package spki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"
)

// testEd25519 returns a deterministic Ed25519 key named by label.
func testEd25519(label string) ed25519.PrivateKey { return testutil.Key(label) }

// testP256 returns a deterministic ECDSA P-256 key named by label.
func testP256(t testing.TB, label string) *ecdsa.PrivateKey { return testutil.KeyP256(t, label) }

func pubOf(t testing.TB, s crypto.Signer) *PublicKey {
	t.Helper()
	k, err := NewPublicKey(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func makeCert(t testing.TB, issuer crypto.Signer, subject *PublicKey, tag string, propagate bool, v Validity) *SignedCert {
	t.Helper()
	c := &Cert{
		Issuer:    KeyPrincipal(pubOf(t, issuer)),
		Subject:   HashPrincipal(subject.Hash()),
		Propagate: propagate,
		Tag:       mustTag(t, tag),
		Validity:  v,
	}
	sc, err := SignCert(c, issuer)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestKeysRoundTrip(t *testing.T) {
	for _, s := range []crypto.Signer{testEd25519("alice"), testP256(t, "card")} {
		k := pubOf(t, s)
		for _, enc := range [][]byte{Canonical(k.Sexp()), Advanced(k.Sexp()), Transport(k.Sexp())} {
			x, err := Parse(enc)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParsePublicKey(x)
			if err != nil {
				t.Fatal(err)
			}
			if !back.Equal(k) || back.Algorithm() != k.Algorithm() {
				t.Errorf("%s key does not round-trip", k.Algorithm())
			}
		}
	}
}

func TestParsePublicKeyErrors(t *testing.T) {
	cases := []struct {
		in  string
		err error
	}{
		{"(public-key (ed25519 |AAAA|))", ErrBadKey},
		{"(public-key (rsa-pkcs1-sha256 (e #03#) (n |AAAA|)))", ErrBadKey},
		{"(public-key (rsa-pkcs1-sha256 |AAAA|))", ErrUnsupportedKey},
		{"(public-key (ecdsa-p256 |BAAA|))", ErrBadKey},
		{"(public-key)", ErrBadKey},
		{"(private-key (ed25519 |AAAA|))", ErrBadKey},
		{"(public-key (ed25519 [h]|AAAA|))", ErrBadKey},
	}
	for _, c := range cases {
		x, err := Parse([]byte(c.in))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParsePublicKey(x); !errors.Is(err, c.err) {
			t.Errorf("ParsePublicKey(%s) = %v, want %v", c.in, err, c.err)
		}
	}
	// An off-curve point is refused.
	bad := make([]byte, 65)
	bad[0] = 4
	bad[64] = 1
	if _, err := ParsePublicKey(L("public-key", L("ecdsa-p256", bad))); !errors.Is(err, ErrBadKey) {
		t.Errorf("off-curve point: %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), nil)
	if p384 != nil {
		if _, err := NewPublicKey(&p384.PublicKey); !errors.Is(err, ErrUnsupportedKey) {
			t.Errorf("P-384: %v", err)
		}
	}
}

func TestCertSignVerifyRoundTrip(t *testing.T) {
	alice, card := testEd25519("alice"), testP256(t, "card")
	for _, issuer := range []crypto.Signer{alice, card} {
		sc := makeCert(t, issuer, pubOf(t, testEd25519("bob")), `(ecoupons-spend (lanes (* range numeric ge "0" le "9")))`, true,
			Validity{NotBefore: t0, NotAfter: t0.Add(24 * time.Hour)})
		if err := sc.Verify(); err != nil {
			t.Fatal(err)
		}
		for _, enc := range [][]byte{Canonical(sc.Sexp()), Advanced(sc.Sexp()), AdvancedIndent(sc.Sexp()), Transport(sc.Sexp())} {
			x, err := Parse(enc)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseSignedCert(x)
			if err != nil {
				t.Fatal(err)
			}
			if err := back.Verify(); err != nil {
				t.Fatalf("re-parsed certificate does not verify: %v", err)
			}
			if back.Cert.Hash() != sc.Cert.Hash() || !back.Cert.Propagate || !back.Cert.Validity.NotAfter.Equal(t0.Add(24*time.Hour)) {
				t.Errorf("fields lost in round trip")
			}
		}
	}
}

func TestCertTamperingDetected(t *testing.T) {
	alice := testEd25519("alice")
	sc := makeCert(t, alice, pubOf(t, testEd25519("bob")), "(read)", false, Validity{})
	// Change the tag after signing: the sequence no longer matches.
	forged := *sc.Cert
	forged.raw = nil
	forged.Tag = mustTag(t, "(*)")
	if _, err := ParseSignedCert(L("sequence", forged.Sexp(), sc.Signature.Sexp())); !errors.Is(err, ErrHashMismatch) {
		t.Errorf("tampered tag: %v", err)
	}
	// Recompute the hash in the signature: the signature itself fails.
	sig := *sc.Signature
	sig.Hash = forged.Hash()
	if err := (&SignedCert{Cert: &forged, Signature: &sig}).Verify(); !errors.Is(err, ErrBadSignature) {
		t.Errorf("re-hashed forgery: %v", err)
	}
	// A signature by someone else than the issuer.
	mallory := testEd25519("mallory")
	msig, _ := Sign(mallory, sc.Cert.Sexp())
	if err := (&SignedCert{Cert: sc.Cert, Signature: msig}).Verify(); !errors.Is(err, ErrWrongSigner) {
		t.Errorf("foreign signature: %v", err)
	}
	if _, err := SignCert(sc.Cert, mallory); !errors.Is(err, ErrWrongSigner) {
		t.Errorf("SignCert by non-issuer: %v", err)
	}
	// A truncated signature value.
	short := *sc.Signature
	short.Value = short.Value[:10]
	if err := (&SignedCert{Cert: sc.Cert, Signature: &short}).Verify(); !errors.Is(err, ErrBadSignature) {
		t.Errorf("short signature: %v", err)
	}
}

func TestParseCertErrors(t *testing.T) {
	alice := pubOf(t, testEd25519("alice"))
	iss := string(Advanced(alice.Sexp()))
	cases := []struct {
		in  string
		err error
	}{
		{"(cert)", ErrBadCert},
		{"(cert (issuer " + iss + ") (tag (*)))", ErrBadCert},
		{"(cert (subject " + iss + ") (issuer " + iss + ") (tag (*)))", ErrBadCert},
		{"(cert (issuer " + iss + ") (subject " + iss + ") (tag (*)) (tag (*)))", ErrBadCert},
		{"(cert (issuer " + iss + ") (subject " + iss + ") (tag (* bogus)))", ErrBadTag},
		{"(cert (issuer " + iss + ") (subject " + iss + ") (tag (*)) (valid (not-after \"2026-13-01_00:00:00\")))", ErrBadCert},
		{"(cert (issuer " + iss + ") (subject " + iss + ") (tag (*)) (valid (online crl |AA==|)))", ErrUnsupported},
		{"(cert (issuer " + iss + ") (subject (name " + iss + " phone)) (tag (*)))", ErrUnsupported},
		{"(cert (version #01#) (issuer " + iss + ") (subject " + iss + ") (tag (*)))", ErrUnsupported},
		{"(cert (issuer " + iss + ") (subject " + iss + ") (propagate x) (tag (*)))", ErrBadCert},
		{"(cert (issuer (hash md5 |AAAA|)) (subject " + iss + ") (tag (*)))", ErrBadHash},
		{"(cert (issuer " + iss + ") (subject " + iss + ") (bogus) (tag (*)))", ErrBadCert},
		{"(cert x)", ErrBadCert},
	}
	for _, c := range cases {
		x, err := Parse([]byte(c.in))
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if _, err := ParseCert(x); !errors.Is(err, c.err) {
			t.Errorf("ParseCert(%.60s…) = %v, want %v", c.in, err, c.err)
		}
	}
}

func TestParseSequenceErrors(t *testing.T) {
	alice := testEd25519("alice")
	sc := makeCert(t, alice, pubOf(t, testEd25519("bob")), "(read)", false, Validity{})
	cases := []struct {
		s   Sexp
		err error
	}{
		{L("sequence", sc.Cert.Sexp()), ErrBadCert},
		{L("sequence", sc.Signature.Sexp()), ErrMalformedSignature},
		{L("sequence", sc.Cert.Sexp(), sc.Cert.Sexp()), ErrBadCert},
		{L("sequence", "junk"), ErrBadCert},
		{L("seq"), ErrBadCert},
		{L("sequence", sc.Cert.Sexp(), L("signature", "x")), ErrMalformedSignature},
	}
	for _, c := range cases {
		if _, err := ParseSequence(c.s); !errors.Is(err, c.err) {
			t.Errorf("ParseSequence(%s) = %v, want %v", c.s, err, c.err)
		}
	}
	// Public keys in a sequence are allowed (RFC 2693 style).
	certs, err := ParseSequence(L("sequence", pubOf(t, alice).Sexp(), sc.Cert.Sexp(), sc.Signature.Sexp()))
	if err != nil || len(certs) != 1 {
		t.Errorf("sequence with key: %v", err)
	}
}

func TestValidity(t *testing.T) {
	v := Validity{NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	if err := v.Check(t0.Add(-time.Second)); !errors.Is(err, ErrNotYetValid) {
		t.Errorf("before: %v", err)
	}
	if err := v.Check(t0.Add(time.Hour + time.Second)); !errors.Is(err, ErrExpired) {
		t.Errorf("after: %v", err)
	}
	for _, at := range []time.Time{t0, t0.Add(time.Hour)} {
		if err := v.Check(at); err != nil {
			t.Errorf("bounds are inclusive: %v", err)
		}
	}
	w := v.Intersect(Validity{NotBefore: t0.Add(time.Minute)})
	if !w.NotBefore.Equal(t0.Add(time.Minute)) || !w.NotAfter.Equal(t0.Add(time.Hour)) {
		t.Errorf("Intersect = %+v", w)
	}
	if (Validity{}).Intersect(v) != v {
		t.Errorf("unbounded ∩ v != v")
	}
}

// chainFixture: alice (root) → bob (propagate, lanes 0-9) → card (lanes 0-4).
type chainFixture struct {
	alice, bob ed25519.PrivateKey
	card       *ecdsa.PrivateKey
	ab, bc     *SignedCert
}

const tagLanes09 = `(ecoupons-spend (lanes (* range numeric ge "0" le "9")))`
const tagLanes04 = `(ecoupons-spend (lanes (* range numeric ge "0" le "4")))`

func newChainFixture(t testing.TB) *chainFixture {
	f := &chainFixture{alice: testEd25519("alice"), bob: testEd25519("bob"), card: testP256(t, "card")}
	day := Validity{NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(24 * time.Hour)}
	f.ab = makeCert(t, f.alice, pubOf(t, f.bob), tagLanes09, true, day)
	f.bc = makeCert(t, f.bob, pubOf(t, f.card), tagLanes04, false, Validity{})
	return f
}

func (f *chainFixture) req(t testing.TB, lane string, at time.Time) ChainRequest {
	return ChainRequest{
		Root:    pubOf(t, f.alice).Hash(),
		Subject: pubOf(t, f.card).Hash(),
		Tag:     mustTag(t, `(ecoupons-spend (lanes "`+lane+`"))`),
		Time:    at,
	}
}

func TestFindChain(t *testing.T) {
	f := newChainFixture(t)
	chain, err := FindChain([]*SignedCert{f.bc, f.ab}, f.req(t, "3", t0))
	if err != nil {
		t.Fatal(err)
	}
	if len(chain.Certs) != 2 || chain.Result.Issuer.Hash != pubOf(t, f.alice).Hash() || chain.Result.Subject.Hash != pubOf(t, f.card).Hash() {
		t.Fatalf("unexpected chain %+v", chain.Result)
	}
	if !chain.Result.Tag.Equal(mustTag(t, tagLanes04)) {
		t.Errorf("reduced tag = %s", chain.Result.Tag)
	}
	if !chain.Result.Validity.NotAfter.Equal(t0.Add(24 * time.Hour)) {
		t.Errorf("reduced validity = %+v", chain.Result.Validity)
	}
	// The root spending itself needs no chain.
	self := f.req(t, "3", t0)
	self.Subject = self.Root
	if c, err := FindChain(nil, self); err != nil || len(c.Certs) != 0 {
		t.Errorf("root as subject: %v", err)
	}
}

func TestFindChainFailures(t *testing.T) {
	f := newChainFixture(t)
	certs := []*SignedCert{f.ab, f.bc}
	expect := func(name string, certs []*SignedCert, req ChainRequest, want error) {
		t.Helper()
		_, err := FindChain(certs, req)
		var ce *ChainError
		if !errors.Is(err, want) || !errors.As(err, &ce) {
			t.Errorf("%s: err = %v, want %v", name, err, want)
		}
	}
	expect("lane outside the sub-grant", certs, f.req(t, "7", t0), ErrTagNotCovered)
	expect("expired", certs, f.req(t, "3", t0.Add(48*time.Hour)), ErrExpired)
	expect("not yet valid", certs, f.req(t, "3", t0.Add(-2*time.Hour)), ErrNotYetValid)
	expect("missing link", []*SignedCert{f.bc}, f.req(t, "3", t0), ErrNoPath)
	expect("no certificates", nil, f.req(t, "3", t0), ErrNoPath)

	noProp := makeCert(t, f.alice, pubOf(t, f.bob), tagLanes09, false, Validity{})
	expect("not propagated", []*SignedCert{noProp, f.bc}, f.req(t, "3", t0), ErrNotPropagated)

	forged := *f.ab
	sig := *f.ab.Signature
	sig.Value = append([]byte(nil), sig.Value...)
	sig.Value[0] ^= 1
	forged.Signature = &sig
	expect("bad signature", []*SignedCert{&forged, f.bc}, f.req(t, "3", t0), ErrBadSignature)

	long := f.req(t, "3", t0)
	long.MaxLength = 1
	expect("too long", certs, long, ErrChainTooLong)

	// A working path wins over a broken one.
	if _, err := FindChain([]*SignedCert{&forged, noProp, f.ab, f.bc}, f.req(t, "3", t0)); err != nil {
		t.Errorf("good path among bad ones: %v", err)
	}
	// Cycles terminate.
	ba := makeCert(t, f.bob, pubOf(t, f.alice), "(*)", true, Validity{})
	expect("cycle", []*SignedCert{f.ab, ba}, f.req(t, "3", t0), ErrNoPath)
}

func TestReduce(t *testing.T) {
	f := newChainFixture(t)
	r, err := Reduce(f.ab.Cert.Tuple(), f.bc.Cert.Tuple())
	if err != nil || r.Propagate {
		t.Fatalf("Reduce: %v %+v", err, r)
	}
	if _, err := Reduce(f.bc.Cert.Tuple(), f.ab.Cert.Tuple()); !errors.Is(err, ErrNoPath) {
		t.Errorf("mismatched subject: %v", err)
	}
	disjoint := f.bc.Cert.Tuple()
	disjoint.Tag = mustTag(t, "(other)")
	if _, err := Reduce(f.ab.Cert.Tuple(), disjoint); !errors.Is(err, ErrTagNotCovered) {
		t.Errorf("disjoint tags: %v", err)
	}
}

// TestFindChainWorkIsBounded: certificates offering many paths (three
// keys delegating to one another, self-delegations, large set tags) and a
// request no path satisfies cost the search a bounded amount of tag
// algebra and at most searchPaths reductions, not a reduction per path
// ordering; the honest single path with the same tags still succeeds.
func TestFindChainWorkIsBounded(t *testing.T) {
	var inner, elems strings.Builder
	for i := 0; i < 16; i++ {
		fmt.Fprintf(&inner, ` (v "%d")`, i)
	}
	for i := 0; i < 16; i++ {
		fmt.Fprintf(&elems, ` (item "%d" (* set%s))`, i, inner.String())
	}
	big := `(* set` + elems.String() + `)` // each intersection with itself: about 4,400 steps
	root, spender := testEd25519("root"), testEd25519("spender")
	ks := []ed25519.PrivateKey{testEd25519("k1"), testEd25519("k2"), testEd25519("k3")}
	var certs []*SignedCert
	for _, k := range append(ks, root) {
		certs = append(certs, makeCert(t, k, pubOf(t, k), big, true, Validity{})) // self-delegations
	}
	for _, k := range ks {
		certs = append(certs, makeCert(t, root, pubOf(t, k), big, true, Validity{}), makeCert(t, k, pubOf(t, spender), big, true, Validity{}))
		for _, l := range ks {
			if l[0] != k[0] {
				certs = append(certs, makeCert(t, k, pubOf(t, l), big, true, Validity{}))
			}
		}
	}
	req := ChainRequest{Root: pubOf(t, root).Hash(), Subject: pubOf(t, spender).Hash(), Time: t0,
		Covers: func(*Tag) error { return errors.New("never") }}
	_, s, err := findChain(certs, req, 8)
	var ce *ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("a request no path satisfies: %v", err)
	}
	if work := searchWork - s.op.steps; work > searchWork+1000 || s.paths > searchPaths {
		t.Fatalf("the search did %d tag steps (bound %d) over %d paths (bound %d)", work, searchWork, s.paths, searchPaths)
	}
	if !s.op.exhausted() && s.paths < searchPaths {
		t.Fatalf("the search ended within its bounds after %d paths: the test no longer makes it work hard", s.paths)
	}
	// The same large tags on the one honest path.
	honest := []*SignedCert{makeCert(t, root, pubOf(t, ks[0]), big, true, Validity{}), makeCert(t, ks[0], pubOf(t, spender), big, false, Validity{})}
	req.Covers = nil
	req.Tag = mustTag(t, `(item "7" (v "3"))`)
	if _, err := FindChain(honest, req); err != nil {
		t.Fatalf("the honest path: %v", err)
	}
}
