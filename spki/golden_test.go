package spki

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the generated golden files in testdata/")

// checkGolden compares got with testdata/name, or rewrites it under -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	testutil.Golden(t, filepath.Join("testdata", name), got, *update)
}

// goldenCert is the documented example: alice grants bob lanes 0–9 of a
// book at news.example, with propagate, for December 2026.
func goldenCert(t *testing.T) *SignedCert {
	alice, bob := testEd25519("alice"), testEd25519("bob")
	c := &Cert{
		Issuer:    KeyPrincipal(pubOf(t, alice)),
		Subject:   HashPrincipal(pubOf(t, bob).Hash()),
		Propagate: true,
		Tag:       mustTag(t, `(ecoupons-spend (vendor news.example) (lanes (* range numeric ge "0" le "9")))`),
		Validity: Validity{
			NotBefore: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
			NotAfter:  time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC),
		},
		Comment: "phone",
	}
	sc, err := SignCert(c, alice)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestGoldenKeys(t *testing.T) {
	ed := pubOf(t, testEd25519("alice"))
	ec := pubOf(t, testP256(t, "card"))
	checkGolden(t, "key-ed25519.adv", append(Advanced(ed.Sexp()), '\n'))
	checkGolden(t, "key-ed25519.can", Canonical(ed.Sexp()))
	checkGolden(t, "key-ed25519.hash.adv", append(Advanced(ed.Hash().Sexp()), '\n'))
	checkGolden(t, "key-ecdsa-p256.adv", append(Advanced(ec.Sexp()), '\n'))
	checkGolden(t, "key-ecdsa-p256.can", Canonical(ec.Sexp()))
	checkGolden(t, "key-ecdsa-p256.hash.adv", append(Advanced(ec.Hash().Sexp()), '\n'))
}

func TestGoldenCert(t *testing.T) {
	sc := goldenCert(t)
	checkGolden(t, "cert.adv", append(AdvancedIndent(sc.Sexp()), '\n'))
	checkGolden(t, "cert.can", Canonical(sc.Sexp()))
	checkGolden(t, "cert.transport", append(Transport(sc.Sexp()), '\n'))
	// The golden bytes parse and verify: a reader of docs/PROTOCOL.md can
	// check a signature by hand against them.
	raw, err := os.ReadFile("testdata/cert.can")
	if err != nil {
		t.Fatal(err)
	}
	x, err := ParseCanonical(raw)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseSignedCert(x)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Verify(); err != nil {
		t.Fatal(err)
	}
}
