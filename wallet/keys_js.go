//go:build js

package wallet

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
)

// marshalKey writes a signing key as PEM PKCS#8. A browser wallet's key
// lives in the origin's IndexedDB, unencrypted (the browser's profile
// protects it, as it does cookies): the standard library's PKCS#8 keeps
// go.step.sm/crypto out of the WebAssembly binary.
func marshalKey(k crypto.PrivateKey, passphrase []byte) ([]byte, error) {
	if len(passphrase) > 0 {
		return nil, errors.New("wallet: a browser wallet's key is not encrypted with a passphrase")
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// errBadPassphrase is never returned in a browser (its keys have none).
var errBadPassphrase = errors.New("wallet: wrong passphrase")

// parseKey reads a PEM PKCS#8 signing key.
func parseKey(raw, passphrase []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(raw)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM PKCS#8 private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("not a signing key")
	}
	return s, nil
}
