package brokerapi

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/ecoupons/ecoupons/spki"
)

func vendorCertDoc(t *testing.T, signer ed25519.PrivateKey, issuer *spki.PublicKey, subject spki.KeyHash, tag spki.Sexp) []byte {
	t.Helper()
	tg, err := spki.ParseTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(issuer), Subject: spki.HashPrincipal(subject), Tag: tg}, signer)
	if err != nil {
		t.Fatal(err)
	}
	return spki.Transport(sc.Sexp())
}

// TestVendorCertFromAnotherBrokerRefused: a gate checking its vendor's
// registration takes only a certificate its broker signed, for its
// vendor name, and reads the currency the vendor is paid in.
func TestVendorCertFromAnotherBrokerRefused(t *testing.T) {
	newKey := func() (ed25519.PrivateKey, *spki.PublicKey) {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		p, err := spki.NewPublicKey(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		return k, p
	}
	bk, bp := newKey()
	ok, op := newKey()
	_, vp := newKey()
	tag := spki.L("ecoupons-vendor", spki.L("name", "news.example"), spki.L("currency", "USD"))
	vc, err := CheckVendorCert(vendorCertDoc(t, bk, bp, vp.Hash(), tag), []*spki.PublicKey{op, bp}, "news.example")
	if err != nil || vc.Currency != "USD" || vc.Key != vp.Hash() || vc.Name != "news.example" {
		t.Fatalf("a good certificate: %+v %v", vc, err)
	}
	for name, c := range map[string]struct {
		doc    []byte
		vendor string
	}{
		"another broker":   {vendorCertDoc(t, ok, op, vp.Hash(), tag), "news.example"},
		"another vendor":   {vendorCertDoc(t, bk, bp, vp.Hash(), tag), "shop.example"},
		"not a vendor tag": {vendorCertDoc(t, bk, bp, vp.Hash(), spki.L("ecoupons-user", spki.L("name", "news.example"))), "news.example"},
		"garbage":          {[]byte("(((("), "news.example"},
		"empty":            {nil, "news.example"},
	} {
		if _, err := CheckVendorCert(c.doc, []*spki.PublicKey{bp}, c.vendor); !errors.Is(err, ErrVendorCert) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
