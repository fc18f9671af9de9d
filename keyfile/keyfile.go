// Package keyfile reads the key files people have: public keys as SPKI
// S-expressions (any form) or PEM "PUBLIC KEY" (what `openssl pkey -pubout`
// writes), private keys as PEM PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE
// KEY", also after the "EC PARAMETERS" block `openssl ecparam -genkey`
// writes first) or encrypted PKCS#8 ("ENCRYPTED PRIVATE KEY", PBES2 with
// PBKDF2 or scrypt, as `openssl pkcs8 -topk8 [-scrypt]` writes) with a
// passphrase. Keys are Ed25519 or ECDSA P-256, the kinds SPKI principals
// here are. An error names the format it found and the formats it takes.
package keyfile

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ecoupons/ecoupons/spki"
	"go.step.sm/crypto/pemutil"
)

// Errors of this package, matched with errors.Is.
var (
	// ErrFormat is a file in none of the formats taken (a *FormatError
	// says which it found).
	ErrFormat = errors.New("keyfile: unsupported key format")
	// ErrPassphraseNeeded is an encrypted private key read without a
	// passphrase.
	ErrPassphraseNeeded = errors.New("keyfile: the private key is encrypted: a passphrase is needed")
	// ErrBadPassphrase is an encrypted private key that the passphrase
	// given does not decrypt.
	ErrBadPassphrase = errors.New("keyfile: the passphrase does not decrypt the private key")
	// ErrKeyType is a key of a kind SPKI principals here cannot be
	// (anything but Ed25519 and ECDSA P-256).
	ErrKeyType = errors.New("keyfile: only Ed25519 and ECDSA P-256 keys are supported")
)

// PublicFormats and PrivateFormats describe what Public and Private take,
// for messages.
const (
	PublicFormats  = "an SPKI (public-key …) S-expression in any form, or PEM \"PUBLIC KEY\" (openssl pkey -pubout)"
	PrivateFormats = "PEM \"PRIVATE KEY\" (PKCS#8), \"EC PRIVATE KEY\" (SEC1, with or without its \"EC PARAMETERS\" block), or \"ENCRYPTED PRIVATE KEY\" (PKCS#8 with PBKDF2 or scrypt, and a passphrase)"
)

// FormatError is a key file in a format this package does not take.
type FormatError struct {
	Found string // what the file holds, as far as it could tell
	Takes string // PublicFormats or PrivateFormats
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("keyfile: found %s; takes %s", e.Found, e.Takes)
}

// Unwrap makes a FormatError match ErrFormat.
func (e *FormatError) Unwrap() error { return ErrFormat }

// ReadPublic reads a public key file (see ParsePublic).
func ReadPublic(path string) (*spki.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePublic(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ParsePublic parses a public key: an SPKI (public-key …) S-expression in
// any form, or a PEM "PUBLIC KEY" block. A private key is refused (a
// public key option must not be handed the private half).
func ParsePublic(b []byte) (*spki.PublicKey, error) {
	if isPEM(b) {
		for rest := b; ; {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				return nil, &FormatError{Found: "PEM without a \"PUBLIC KEY\" block", Takes: PublicFormats}
			}
			switch block.Type {
			case "PUBLIC KEY":
				pub, err := x509.ParsePKIXPublicKey(block.Bytes)
				if err != nil {
					return nil, fmt.Errorf("%w: PEM \"PUBLIC KEY\": %v", ErrFormat, err)
				}
				return publicKey(pub)
			case "PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY", "RSA PRIVATE KEY":
				return nil, &FormatError{Found: fmt.Sprintf("a private key (PEM %q): give its public key (openssl pkey -pubout)", block.Type), Takes: PublicFormats}
			case "EC PARAMETERS":
				continue
			default:
				return nil, &FormatError{Found: fmt.Sprintf("PEM %q", block.Type), Takes: PublicFormats}
			}
		}
	}
	x, err := spki.Parse(b)
	if err != nil {
		return nil, &FormatError{Found: "neither PEM nor an S-expression (" + err.Error() + ")", Takes: PublicFormats}
	}
	if _, ok := x.(spki.List); !ok {
		return nil, &FormatError{Found: "neither PEM nor an S-expression list", Takes: PublicFormats}
	}
	k, err := spki.ParsePublicKey(x)
	if err != nil {
		return nil, &FormatError{Found: "an S-expression that is not a (public-key …): " + err.Error(), Takes: PublicFormats}
	}
	return k, nil
}

// publicKey wraps a parsed public key as an SPKI principal's key.
func publicKey(pub any) (*spki.PublicKey, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA on %s", ErrKeyType, k.Curve.Params().Name)
		}
	default:
		return nil, fmt.Errorf("%w: %T", ErrKeyType, pub)
	}
	return spki.NewPublicKey(pub)
}

// ReadPrivate reads a private key file (see ParsePrivate); the passphrase,
// when the key is encrypted, is the first line of passphraseFile ("" for
// none).
func ReadPrivate(path, passphraseFile string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pass []byte
	if passphraseFile != "" {
		p, err := os.ReadFile(passphraseFile)
		if err != nil {
			return nil, fmt.Errorf("passphrase file: %w", err)
		}
		pass = bytes.TrimRight(bytes.SplitN(p, []byte("\n"), 2)[0], "\r")
	}
	k, err := ParsePrivate(b, pass)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ParsePrivate parses a PEM private key: PKCS#8, SEC1 (an "EC PARAMETERS"
// block before it is skipped), or encrypted PKCS#8 (PBES2 with PBKDF2 or
// scrypt) decrypted with passphrase.
func ParsePrivate(b, passphrase []byte) (crypto.Signer, error) {
	if !isPEM(b) {
		found := "not PEM"
		if x, err := spki.Parse(b); err == nil {
			if _, ok := x.(spki.List); ok {
				found = "an S-expression (a public key?)"
			}
		}
		return nil, &FormatError{Found: found, Takes: PrivateFormats}
	}
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, &FormatError{Found: "PEM without a private key block", Takes: PrivateFormats}
		}
		var key any
		var err error
		switch {
		case block.Type == "EC PARAMETERS":
			continue
		case block.Type == "PUBLIC KEY":
			return nil, &FormatError{Found: "a public key (PEM \"PUBLIC KEY\")", Takes: PrivateFormats}
		case block.Headers["Proc-Type"] == "4,ENCRYPTED":
			// Legacy OpenSSL encryption of a SEC1 or PKCS#1 block.
			if len(passphrase) == 0 {
				return nil, ErrPassphraseNeeded
			}
			der, derr := pemutil.DecryptPEMBlock(block, passphrase)
			if derr != nil {
				return nil, fmt.Errorf("%w (%v)", ErrBadPassphrase, derr)
			}
			key, err = x509.ParseECPrivateKey(der)
		case block.Type == "ENCRYPTED PRIVATE KEY":
			if len(passphrase) == 0 {
				return nil, ErrPassphraseNeeded
			}
			der, derr := decryptPKCS8(block.Bytes, passphrase)
			if derr != nil {
				return nil, derr
			}
			if key, err = x509.ParsePKCS8PrivateKey(der); err != nil {
				return nil, fmt.Errorf("%w (the decrypted key does not parse)", ErrBadPassphrase)
			}
		case block.Type == "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case block.Type == "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			return nil, &FormatError{Found: fmt.Sprintf("PEM %q", block.Type), Takes: PrivateFormats}
		default:
			return nil, &FormatError{Found: fmt.Sprintf("PEM %q", block.Type), Takes: PrivateFormats}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: PEM %q: %v", ErrFormat, block.Type, err)
		}
		return signer(key)
	}
}

// signer checks a parsed private key's kind.
func signer(key any) (crypto.Signer, error) {
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA on %s", ErrKeyType, k.Curve.Params().Name)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%w: %T", ErrKeyType, key)
}

func isPEM(b []byte) bool {
	return bytes.Contains(b, []byte("-----BEGIN "))
}
