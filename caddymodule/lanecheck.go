package caddymodule

import (
	"fmt"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/store"
)

// mustReopenError refuses a stored lane that must be opened again here
// before it takes a payment (see mustReopen); why completes "opened before
// this store …".
type mustReopenError struct{ why string }

func (e *mustReopenError) Error() string {
	return "the lane was opened before this store " + e.why + ": open it again"
}

// laneMisfitError refuses a stored lane opened for another vendor or
// coupon value than this route's (a store shared by routes).
type laneMisfitError struct{ code, reason string }

func (e *laneMisfitError) Error() string { return e.reason }

// checkLane decides whether a lane read from the store may take payments
// on this route (lanes.Config.Check): it must name this vendor and carry
// what this gate checks (mustReopen), and be worth this route's coupon
// value (laneFits).
func (g *Gate) checkLane(m *store.Meta) error {
	if g.mustReopen(m) {
		if m.Vendor == [32]byte{} {
			return &mustReopenError{"named lanes' vendors"}
		}
		return &mustReopenError{"kept lanes' delegation chains"}
	}
	if code, reason := g.laneFits(m); code != "" {
		return &laneMisfitError{code, reason}
	}
	return nil
}

// laneFits checks that a stored lane was opened for this gate's vendor and
// coupon value; it returns a refusal code and reason when not.
func (g *Gate) laneFits(m *store.Meta) (string, string) {
	switch {
	case m.Vendor != g.vendorHash: // records naming no vendor were named by a new open
		return coupons.CodeWrongVendor, "the lane was opened at another vendor's gate sharing this store"
	case m.Unit != g.unit || m.Currency != g.Currency:
		return coupons.CodeWrongUnit, fmt.Sprintf("the lane's coupons are worth %s %s; this route takes coupons of %s %s",
			coupons.FormatAmount(m.Unit), m.Currency, g.challenge.Unit, g.Currency)
	}
	return "", ""
}

// mustReopen reports whether a stored lane must be opened again here
// before it takes a payment: its record names no vendor (version 1), or
// it holds no principals (version 2) while this gate checks revocations,
// which it could not do on that lane.
func (g *Gate) mustReopen(m *store.Meta) bool {
	return m.Vendor == [32]byte{} || (g.revoked != nil && len(m.Certs) == 0)
}
