package brokerapi

import (
	"errors"
	"fmt"

	"github.com/ecoupons/ecoupons/spki"
)

// ErrVendorCert is a vendor certificate (GET /v1/vendor?name=…) that does
// not certify what the gate is configured with.
var ErrVendorCert = errors.New("broker: vendor certificate")

// VendorCert is what a broker's vendor certificate says.
type VendorCert struct {
	Name     string       // the vendor name
	Currency string       // the currency the vendor is paid in, fixed at registration
	Key      spki.KeyHash // the vendor key's hash
}

// CheckVendorCert parses doc, the answer of GET /v1/vendor?name=vendor
// (a signed certificate in any S-expression form), and checks it is
// issued and signed by one of brokers, for vendor. It returns what the
// certificate says; the caller compares its key and currency with its
// own configuration.
func CheckVendorCert(doc []byte, brokers []*spki.PublicKey, vendor string) (*VendorCert, error) {
	x, err := spki.Parse(doc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVendorCert, err)
	}
	sc, err := spki.ParseSignedCert(x)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVendorCert, err)
	}
	trusted := false
	for _, b := range brokers {
		trusted = trusted || sc.Cert.Issuer.Hash == b.Hash()
	}
	if !trusted || sc.Verify() != nil {
		return nil, fmt.Errorf("%w: for %s, not issued and signed by a trusted broker key", ErrVendorCert, vendor)
	}
	t := sc.Cert.Tag
	vc := &VendorCert{Key: sc.Cert.Subject.Hash}
	if t == nil || t.Kind != spki.TagList || len(t.Elems) == 0 || !atomIs(t.Elems[0], "ecoupons-vendor") {
		return nil, fmt.Errorf("%w: for %s, not an (ecoupons-vendor …) certificate", ErrVendorCert, vendor)
	}
	for _, e := range t.Elems[1:] {
		if e.Kind != spki.TagList || len(e.Elems) != 2 || e.Elems[1].Kind != spki.TagAtom {
			continue
		}
		switch v := string(e.Elems[1].Atom.Value); {
		case atomIs(e.Elems[0], "name"):
			vc.Name = v
		case atomIs(e.Elems[0], "currency"):
			vc.Currency = v
		}
	}
	if vc.Name != vendor {
		return nil, fmt.Errorf("%w: the broker's certificate is for vendor %q, not %q", ErrVendorCert, vc.Name, vendor)
	}
	return vc, nil
}

func atomIs(t *spki.Tag, s string) bool {
	return t != nil && t.Kind == spki.TagAtom && t.Atom != nil && string(t.Atom.Value) == s
}
