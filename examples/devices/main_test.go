package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ecoupons/ecoupons/internal/softhsm"
	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
	_ "go.step.sm/crypto/kms/pkcs11"
)

// TestDevices runs the scenario, with the smart card's key on a SoftHSM2
// token when SoftHSM2 is installed (required under CI=true).
func TestDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("the devices scenario takes a few seconds")
	}
	var card crypto.Signer
	if _, err := exec.LookPath("softhsm2-util"); err == nil || os.Getenv("CI") == "true" {
		uri := softhsm.Token(t, "devices")
		km, err := kms.New(context.Background(), apiv1.Options{Type: apiv1.PKCS11, URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		defer km.Close()
		resp, err := km.CreateKey(&apiv1.CreateKeyRequest{Name: "pkcs11:id=7003;object=card", SignatureAlgorithm: apiv1.ECDSAWithSHA256})
		if err != nil {
			t.Fatal(err)
		}
		if card, err = km.CreateSigner(&resp.CreateSignerRequest); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Log("SoftHSM2 not installed: the smart card's key is in memory")
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		card = k
	}
	var out bytes.Buffer
	if err := run(&out, t.TempDir(), freeAddr(), freeAddr(), card); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "the card opens a new lane and keeps paying") {
		t.Fatalf("unexpected output:\n%s", out.String())
	}
}
