package keyfile

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecoupons/ecoupons/spki"
	"go.step.sm/crypto/pemutil"
)

// openssl runs openssl in dir, skipping the test when it is not installed
// (under CI=true, failing it: .ci/run installs it).
func openssl(t *testing.T, dir string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is not installed (CI=true)")
		}
		t.Skip("openssl is not installed: skipping the keys it writes")
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// samePublic checks that a signer's public key is pub.
func samePublic(t *testing.T, s crypto.Signer, pub *spki.PublicKey) {
	t.Helper()
	sp, err := spki.NewPublicKey(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	if sp.Hash() != pub.Hash() {
		t.Fatal("the private key's public half is not the public key read")
	}
}

// TestKeysWrittenByOpenSSL: what openssl writes for Ed25519 and P-256
// keys, private (PKCS#8, SEC1 after EC PARAMETERS, PKCS#8 encrypted with
// PBKDF2 and with scrypt) and public (pkey -pubout), is read, and each
// private key matches its public key.
func TestKeysWrittenByOpenSSL(t *testing.T) {
	dir := t.TempDir()
	openssl(t, dir, "genpkey", "-algorithm", "ed25519", "-out", "ed.pem")
	openssl(t, dir, "ecparam", "-genkey", "-name", "prime256v1", "-out", "ec.pem") // EC PARAMETERS + EC PRIVATE KEY
	openssl(t, dir, "pkey", "-in", "ed.pem", "-pubout", "-out", "ed.pub")
	openssl(t, dir, "pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub")
	openssl(t, dir, "pkcs8", "-topk8", "-in", "ec.pem", "-out", "ec.p8.pem", "-nocrypt")
	openssl(t, dir, "pkcs8", "-topk8", "-in", "ed.pem", "-out", "ed.pbkdf2.pem", "-v2", "aes-256-cbc", "-passout", "pass:correct horse")
	openssl(t, dir, "pkcs8", "-topk8", "-in", "ec.pem", "-out", "ec.scrypt.pem", "-scrypt", "-passout", "pass:correct horse")
	openssl(t, dir, "pkcs8", "-topk8", "-in", "ed.pem", "-out", "ed.scrypt.pem", "-scrypt", "-passout", "pass:correct horse")
	if !strings.Contains(string(read(t, filepath.Join(dir, "ec.pem"))), "EC PARAMETERS") {
		t.Fatal("openssl ecparam wrote no EC PARAMETERS block; the test does not test it")
	}
	pass := []byte("correct horse")
	for _, c := range []struct{ priv, pub string }{
		{"ed.pem", "ed.pub"}, {"ec.pem", "ec.pub"}, {"ec.p8.pem", "ec.pub"},
		{"ed.pbkdf2.pem", "ed.pub"}, {"ec.scrypt.pem", "ec.pub"}, {"ed.scrypt.pem", "ed.pub"},
	} {
		pub, err := ReadPublic(filepath.Join(dir, c.pub))
		if err != nil {
			t.Fatalf("%s: %v", c.pub, err)
		}
		s, err := ParsePrivate(read(t, filepath.Join(dir, c.priv)), pass)
		if err != nil {
			t.Fatalf("%s: %v", c.priv, err)
		}
		samePublic(t, s, pub)
	}
	// Encrypted keys without their passphrase, or with another.
	for _, f := range []string{"ed.pbkdf2.pem", "ec.scrypt.pem"} {
		if _, err := ParsePrivate(read(t, filepath.Join(dir, f)), nil); !errors.Is(err, ErrPassphraseNeeded) {
			t.Errorf("%s without a passphrase: %v", f, err)
		}
		if _, err := ParsePrivate(read(t, filepath.Join(dir, f)), []byte("wrong")); !errors.Is(err, ErrBadPassphrase) {
			t.Errorf("%s with a wrong passphrase: %v", f, err)
		}
	}
	// The passphrase from a file (its first line).
	pf := filepath.Join(dir, "pass")
	os.WriteFile(pf, []byte("correct horse\nignored\n"), 0o600)
	if _, err := ReadPrivate(filepath.Join(dir, "ec.scrypt.pem"), pf); err != nil {
		t.Fatalf("passphrase file: %v", err)
	}
}

// TestKeysWrittenByGo: the same forms written with Go's encoders (and
// step's for encrypted PKCS#8), and the SPKI S-expression forms of public
// keys.
func TestKeysWrittenByGo(t *testing.T) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, k := range []crypto.Signer{ed, ec} {
		pub, err := spki.NewPublicKey(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		pkix, _ := x509.MarshalPKIXPublicKey(k.Public())
		for name, b := range map[string][]byte{
			"PEM PUBLIC KEY": pemOf("PUBLIC KEY", pkix),
			"canonical":      spki.Canonical(pub.Sexp()),
			"advanced":       spki.Advanced(pub.Sexp()),
			"transport":      spki.Transport(pub.Sexp()),
		} {
			got, err := ParsePublic(b)
			if err != nil || got.Hash() != pub.Hash() {
				t.Fatalf("%T public key as %s: %v", k, name, err)
			}
		}
		p8, _ := x509.MarshalPKCS8PrivateKey(k)
		forms := map[string][]byte{"PKCS#8": pemOf("PRIVATE KEY", p8)}
		if e, ok := k.(*ecdsa.PrivateKey); ok {
			sec1, _ := x509.MarshalECPrivateKey(e)
			forms["SEC1"] = pemOf("EC PRIVATE KEY", sec1)
		}
		enc, err := pemutil.Serialize(k, pemutil.WithPassword([]byte("pw")))
		if err != nil {
			t.Fatal(err)
		}
		forms["encrypted PKCS#8"] = pem.EncodeToMemory(enc)
		for name, b := range forms {
			s, err := ParsePrivate(b, []byte("pw"))
			if err != nil {
				t.Fatalf("%T private key as %s: %v", k, name, err)
			}
			samePublic(t, s, pub)
		}
	}
}

// TestKeysRefusedNamingTheFormat: a private key given where a public key
// is expected, a public key where a private one is, RSA and P-384 keys,
// and junk are refused with an error that says what was found.
func TestKeysRefusedNamingTheFormat(t *testing.T) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p8, _ := x509.MarshalPKCS8PrivateKey(ed)
	pkix, _ := x509.MarshalPKIXPublicKey(ed.Public())
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa8, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaPub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384der, _ := x509.MarshalECPrivateKey(p384)
	cases := []struct {
		name    string
		public  bool
		in      []byte
		want    error
		mention string
	}{
		{"private key as public", true, pemOf("PRIVATE KEY", p8), ErrFormat, "private key"},
		{"public key as private", false, pemOf("PUBLIC KEY", pkix), ErrFormat, "public key"},
		{"RSA public", true, pemOf("PUBLIC KEY", rsaPub), ErrKeyType, "rsa"},
		{"RSA private", false, pemOf("PRIVATE KEY", rsa8), ErrKeyType, "rsa"},
		{"P-384", false, pemOf("EC PRIVATE KEY", p384der), ErrKeyType, "P-384"},
		{"certificate", true, pemOf("CERTIFICATE", []byte{1}), ErrFormat, "CERTIFICATE"},
		{"junk public", true, []byte("hello"), ErrFormat, "neither PEM nor"},
		{"junk private", false, []byte("hello"), ErrFormat, "not PEM"},
		{"S-expression as private", false, []byte("(public-key)"), ErrFormat, "S-expression"},
	}
	for _, c := range cases {
		var err error
		if c.public {
			_, err = ParsePublic(c.in)
		} else {
			_, err = ParsePrivate(c.in, nil)
		}
		if !errors.Is(err, c.want) || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.mention)) {
			t.Errorf("%s: %v (want %v mentioning %q)", c.name, err, c.want, c.mention)
		}
	}
}

// TestHostileKeyDerivationRefused: an encrypted key file asking scrypt for
// gigabytes or PBKDF2 for billions of iterations is refused at once, not
// computed (a gate reads key files at every config load).
func TestHostileKeyDerivationRefused(t *testing.T) {
	iv, _ := asn1.Marshal(make([]byte, 16))
	aes256 := algorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: iv}}
	mk := func(kdf algorithmIdentifier) []byte {
		params, _ := asn1.Marshal(pbes2Params{KeyDerivationFunc: kdf, EncryptionScheme: aes256})
		der, _ := asn1.Marshal(encryptedPrivateKeyInfo{Algorithm: algorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: params}},
			EncryptedData: make([]byte, 32)})
		return pemOf("ENCRYPTED PRIVATE KEY", der)
	}
	sp, _ := asn1.Marshal(scryptParams{Salt: []byte("salt"), CostParameter: 1 << 24, BlockSize: 8, ParallelizationParameter: 1})
	pp, _ := asn1.Marshal(pbkdf2Params{Salt: []byte("salt"), IterationCount: 1 << 30})
	for name, b := range map[string][]byte{
		"scrypt N=2^24 r=8 (16 GiB)": mk(algorithmIdentifier{Algorithm: oidScrypt, Parameters: asn1.RawValue{FullBytes: sp}}),
		"PBKDF2 2^30 iterations":     mk(algorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: pp}}),
	} {
		if _, err := ParsePrivate(b, []byte("pw")); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzParse: no input makes either parser panic.
func FuzzParse(f *testing.F) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p8, _ := x509.MarshalPKCS8PrivateKey(ed)
	pkix, _ := x509.MarshalPKIXPublicKey(ed.Public())
	enc, _ := pemutil.Serialize(ed, pemutil.WithPassword([]byte("pw")))
	f.Add(pemOf("PRIVATE KEY", p8))
	f.Add(pemOf("PUBLIC KEY", pkix))
	f.Add(pem.EncodeToMemory(enc))
	f.Add([]byte("(public-key (ed25519 |AAAA|))"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParsePublic(b)
		ParsePrivate(b, []byte("pw"))
	})
}
