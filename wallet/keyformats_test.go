package wallet

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestWalletOpensKeysOpenSSLWrites: a wallet whose key.pem is what people
// have — openssl ecparam -genkey output (EC PARAMETERS then SEC1), or
// PKCS#8 encrypted with scrypt — opens with the right passphrase, says a
// passphrase is needed without one, and that it is wrong with another
// (before, an scrypt key answered "a (correct) passphrase is needed" to
// the correct one).
func TestWalletOpensKeysOpenSSLWrites(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is not installed (CI=true)")
		}
		t.Skip("openssl is not installed: skipping the keys it writes")
	}
	dir := filepath.Join(t.TempDir(), "w")
	if _, err := Init(dir); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ecparam", "-genkey", "-name", "prime256v1", "-out", "key.pem")
	w, err := Load(dir)
	if err != nil {
		t.Fatalf("openssl ecparam -genkey key: %v", err)
	}
	want := w.PublicKey().Hash()
	run("pkcs8", "-topk8", "-in", "key.pem", "-out", "key.scrypt.pem", "-scrypt", "-passout", "pass:correct horse")
	if err := os.Rename(filepath.Join(dir, "key.scrypt.pem"), filepath.Join(dir, "key.pem")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); !errors.Is(err, ErrPassphrase) || strings.Contains(err.Error(), "does not decrypt") {
		t.Fatalf("scrypt key without a passphrase: %v", err)
	}
	if _, err := LoadWith(dir, KeyOptions{Passphrase: []byte("wrong")}); !errors.Is(err, ErrPassphrase) || !strings.Contains(err.Error(), "does not decrypt") {
		t.Fatalf("scrypt key with a wrong passphrase: %v", err)
	}
	w, err = LoadWith(dir, KeyOptions{Passphrase: []byte("correct horse")})
	if err != nil {
		t.Fatalf("scrypt key with its passphrase: %v", err)
	}
	if w.PublicKey().Hash() != want {
		t.Fatal("another key after re-encrypting it")
	}
}
