//go:build js

package wallet

import (
	"crypto"
	"errors"
)

// smartCardSigner: a browser has no PKCS#11 (the browser wallet's key is
// its own device key).
func smartCardSigner(string, string) (crypto.Signer, error) {
	return nil, errors.New("wallet: smart cards are not available in a browser")
}
