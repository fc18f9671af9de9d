package spki

import (
	"context"
	"testing"

	"github.com/ecoupons/ecoupons/internal/softhsm"
	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
	_ "go.step.sm/crypto/kms/pkcs11"
	"go.step.sm/crypto/kms/softkms"
)

func TestSoftKMSSigners(t *testing.T) {
	ctx := context.Background()
	km, err := softkms.New(ctx, apiv1.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []apiv1.SignatureAlgorithm{apiv1.PureEd25519, apiv1.ECDSAWithSHA256} {
		resp, err := km.CreateKey(&apiv1.CreateKeyRequest{SignatureAlgorithm: alg})
		if err != nil {
			t.Fatal(err)
		}
		signer, err := km.CreateSigner(&resp.CreateSignerRequest)
		if err != nil {
			t.Fatal(err)
		}
		sc := makeCert(t, signer, pubOf(t, testEd25519("bob")), "(read)", false, Validity{})
		if err := sc.Verify(); err != nil {
			t.Errorf("%v: %v", alg, err)
		}
	}
}

// TestPKCS11Signer signs a certificate with an ECDSA P-256 key that lives on
// a SoftHSM2 token, the stand-in for a smart card.
func TestPKCS11Signer(t *testing.T) {
	uri := softhsm.Token(t, "spki-test")
	ctx := context.Background()
	km, err := kms.New(ctx, apiv1.Options{Type: apiv1.PKCS11, URI: uri})
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	resp, err := km.CreateKey(&apiv1.CreateKeyRequest{Name: "pkcs11:id=7001;object=card", SignatureAlgorithm: apiv1.ECDSAWithSHA256})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := km.CreateSigner(&resp.CreateSignerRequest)
	if err != nil {
		t.Fatal(err)
	}
	card := pubOf(t, signer)
	if card.Algorithm() != AlgECDSAP256 {
		t.Fatalf("token key is %s", card.Algorithm())
	}
	sc := makeCert(t, signer, pubOf(t, testEd25519("bob")), "(read)", true, Validity{})
	x, err := Parse(Transport(sc.Sexp()))
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseSignedCert(x)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Verify(); err != nil {
		t.Fatalf("certificate signed on the token does not verify: %v", err)
	}
}
