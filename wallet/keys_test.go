package wallet

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecoupons/ecoupons/internal/softhsm"
	"github.com/ecoupons/ecoupons/spki"
	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
)

// TestPassphrase: a wallet created with a passphrase keeps its key
// encrypted, and opens only with that passphrase.
func TestPassphrase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "w")
	w, err := InitWith(dir, KeyOptions{Passphrase: []byte("correct horse")})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "key.pem"))
	if !strings.Contains(string(raw), "ENCRYPTED PRIVATE KEY") {
		t.Fatalf("key.pem is not encrypted:\n%s", raw)
	}
	if _, err := Load(dir); !errors.Is(err, ErrPassphrase) {
		t.Fatalf("without the passphrase: %v", err)
	}
	if _, err := LoadWith(dir, KeyOptions{Passphrase: []byte("wrong")}); !errors.Is(err, ErrPassphrase) {
		t.Fatalf("with a wrong passphrase: %v", err)
	}
	w2, err := LoadWith(dir, KeyOptions{Passphrase: []byte("correct horse")})
	if err != nil {
		t.Fatal(err)
	}
	if w2.PublicKey().Hash() != w.PublicKey().Hash() {
		t.Fatal("another key after reloading")
	}
	if _, err := InitWith(dir, KeyOptions{}); err == nil {
		t.Fatal("init over an existing wallet")
	}
}

// TestSmartCardWallet: the wallet's own key on a smart card (SoftHSM2):
// config.json names it without the PIN, and the wallet signs with it.
func TestSmartCardWallet(t *testing.T) {
	uri := softhsm.Token(t, "wallet")
	km, err := kms.New(context.Background(), apiv1.Options{Type: apiv1.PKCS11, URI: uri})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := km.CreateKey(&apiv1.CreateKeyRequest{Name: "pkcs11:id=7010;object=wallet", SignatureAlgorithm: apiv1.ECDSAWithSHA256})
	km.Close()
	if err != nil {
		t.Fatal(err)
	}
	base, _, _ := strings.Cut(uri, "?")
	keyURI := base + ";id=7010;object=wallet"
	dir := filepath.Join(t.TempDir(), "w")
	if _, err := InitWith(dir, KeyOptions{SmartCard: keyURI}); err == nil {
		t.Fatal("a smart card opened without its PIN")
	}
	// (Before any login: PKCS#11 logins last as long as the process.)
	if _, err := InitWith(dir, KeyOptions{SmartCard: keyURI, PIN: "0000"}); err == nil {
		t.Fatal("the card opened with a wrong PIN")
	}
	w, err := InitWith(dir, KeyOptions{SmartCard: keyURI + "?pin-value=" + softhsm.PIN})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "key.pem")); err == nil {
		t.Fatal("a key file was written for a smart-card wallet")
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if strings.Contains(string(cfg), "pin-value") || !strings.Contains(string(cfg), "object=wallet") {
		t.Fatalf("config.json: %s", cfg)
	}
	w2, err := LoadWith(dir, KeyOptions{PIN: softhsm.PIN})
	if err != nil {
		t.Fatal(err)
	}
	if w2.PublicKey().Hash() != w.PublicKey().Hash() {
		t.Fatal("another key after reloading")
	}
	card, err := spki.NewPublicKey(resp.PublicKey)
	if err != nil || !w2.PublicKey().Equal(card) {
		t.Fatalf("the wallet's key is not the card's: %v", err)
	}
	d := sha256.Sum256([]byte("a book"))
	if _, err := w2.Key.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatalf("signing on the card: %v", err)
	}
}
