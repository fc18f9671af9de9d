//go:build !js

package wallet

import (
	"crypto"
	"encoding/pem"
	"errors"

	"go.step.sm/crypto/pemutil"

	"github.com/ecoupons/ecoupons/keyfile"
)

// marshalKey writes a signing key as PEM PKCS#8, encrypted when a
// passphrase is given.
func marshalKey(k crypto.PrivateKey, passphrase []byte) ([]byte, error) {
	opts := []pemutil.Options{pemutil.WithPKCS8(true)}
	if len(passphrase) > 0 {
		opts = append(opts, pemutil.WithPassword(passphrase))
	}
	block, err := pemutil.Serialize(k, opts...)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(block), nil
}

// parseKey reads key.pem. keyfile takes what people have: PKCS#8, SEC1
// (openssl ecparam -genkey), encrypted PKCS#8 with PBKDF2 or scrypt,
// legacy encrypted PEM.
func parseKey(raw, passphrase []byte) (crypto.Signer, error) {
	signer, err := keyfile.ParsePrivate(raw, passphrase)
	switch {
	case errors.Is(err, keyfile.ErrPassphraseNeeded):
		return nil, ErrPassphrase
	case errors.Is(err, keyfile.ErrBadPassphrase):
		return nil, errBadPassphrase
	}
	return signer, err
}

// errBadPassphrase: the passphrase given does not decrypt key.pem.
var errBadPassphrase = errors.New("wallet: wrong passphrase")
