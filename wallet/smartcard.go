//go:build !js

package wallet

import (
	"context"
	"crypto"
	"fmt"
	"net/url"
	"strings"

	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
	_ "go.step.sm/crypto/kms/pkcs11"

	"github.com/ecoupons/ecoupons/spki"
)

// smartCardSigner opens the key at the pkcs11: URI u, adding pin when u
// has neither pin-value nor pin-source.
func smartCardSigner(u, pin string) (crypto.Signer, error) {
	if !strings.HasPrefix(u, "pkcs11:") {
		return nil, fmt.Errorf("wallet: smart card %q: not a pkcs11: URI", u)
	}
	if pin != "" && !strings.Contains(u, "pin-value=") && !strings.Contains(u, "pin-source=") {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "pin-value=" + url.QueryEscape(pin)
	}
	km, err := kms.New(context.Background(), apiv1.Options{Type: apiv1.PKCS11, URI: u})
	if err != nil {
		return nil, fmt.Errorf("wallet: smart card %s: %w", withoutPIN(u), err)
	}
	k, err := km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: u})
	if err != nil {
		km.Close()
		if !strings.Contains(u, "pin-value=") && !strings.Contains(u, "pin-source=") {
			return nil, fmt.Errorf("%w: smart card key %s: %v", ErrNoPIN, withoutPIN(u), err)
		}
		return nil, fmt.Errorf("wallet: smart card key %s: %w", withoutPIN(u), err)
	}
	if _, err := spki.NewPublicKey(k.Public()); err != nil {
		km.Close()
		return nil, fmt.Errorf("wallet: smart card key %s: %w", withoutPIN(u), err)
	}
	return k, nil
}
