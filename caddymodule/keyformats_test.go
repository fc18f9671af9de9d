package caddymodule

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.step.sm/crypto/pemutil"
)

// TestGateTakesPEMAndEncryptedKeys: broker_key as a PEM "PUBLIC KEY"
// (what openssl pkey -pubout writes) is the broker's key as much as its
// S-expression, and vendor_key may be encrypted PKCS#8 with its passphrase
// in vendor_key_passphrase_file; a wrong passphrase fails provisioning
// with a message saying so.
func TestGateTakesPEMAndEncryptedKeys(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	dir := t.TempDir()
	pkix, err := x509.MarshalPKIXPublicKey(w.broker.Public())
	if err != nil {
		t.Fatal(err)
	}
	pemPub := filepath.Join(dir, "broker.pem.pub")
	os.WriteFile(pemPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), 0o644)
	vk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc, err := pemutil.Serialize(vk, pemutil.WithPassword([]byte("s3cret")))
	if err != nil {
		t.Fatal(err)
	}
	vendorKey := filepath.Join(dir, "vendor.pem")
	os.WriteFile(vendorKey, pem.EncodeToMemory(enc), 0o600)
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("s3cret\n"), 0o600)

	g := newGateWith(t, w, `{"backend":"memory"}`, 1, func(g *Gate) {
		g.BrokerKeys = []string{pemPub}
		g.VendorKey, g.VendorKeyPassphraseFile = vendorKey, pass
	})
	if g.vendorSigner == nil {
		t.Fatal("the encrypted vendor key was not loaded")
	}
	if rec := serve(g, "GET", "/premium/x", payments(t, g, w, 0, 1, 1)[0]); rec.Code != 200 {
		t.Fatalf("a book of the broker named by a PEM public key: %d %s", rec.Code, rec.Body)
	}

	os.WriteFile(pass, []byte("wrong\n"), 0o600)
	bad := &Gate{Vendor: "news.example", BrokerKeys: []string{pemPub}, VendorKey: vendorKey, VendorKeyPassphraseFile: pass,
		SecretFile: filepath.Join(dir, "secret2"), StoreRaw: []byte(`{"backend":"memory"}`)}
	err = provisionOnly(t, bad)
	if err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Fatalf("a wrong passphrase: %v", err)
	}
}

// provisionOnly provisions g in a fresh Caddy context and returns the
// error, cleaning up whatever it opened.
func provisionOnly(t *testing.T, g *Gate) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err := g.Provision(ctx)
	g.Cleanup()
	return err
}
