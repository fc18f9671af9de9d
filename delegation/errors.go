package delegation

import "errors"

// Errors of grants, devices and revocation lists.
var (
	// ErrBadGrant is a malformed grant document.
	ErrBadGrant = errors.New("delegation: malformed grant")
	// ErrBadDevice is a malformed or badly signed device identity.
	ErrBadDevice = errors.New("delegation: malformed device identity")
	// ErrNotForMe means a grant is addressed to another key.
	ErrNotForMe = errors.New("delegation: grant is for another key")
	// ErrSeal means a sealed seed or portion value could not be opened
	// (wrong key, lane or end, or tampering).
	ErrSeal = errors.New("delegation: sealed seed does not open")
	// ErrSeedMismatch means an unsealed seed or portion value does not
	// lead to the lane's committed anchor.
	ErrSeedMismatch = errors.New("delegation: seed does not match the book")
	// ErrCapBelowCoupon means a grant's cap is less than one coupon: it
	// would grant nothing.
	ErrCapBelowCoupon = errors.New("delegation: cap below one coupon")
	// ErrPortionsExceedCap means a capped grant's portions hold more
	// coupons than its cap.
	ErrPortionsExceedCap = errors.New("delegation: portions exceed the grant's cap")
	// ErrGrantWider means a sub-grant asks for more than its parent grants.
	ErrGrantWider = errors.New("delegation: sub-grant wider than its parent")
	// ErrNoPropagate means the holder's grant does not allow sub-grants.
	ErrNoPropagate = errors.New("delegation: grant does not allow sub-delegation")
	// ErrBadRevocations is a malformed or badly signed revocation list.
	ErrBadRevocations = errors.New("delegation: malformed revocation list")
	// ErrStaleRevocations means a revocation list is past its next-update.
	ErrStaleRevocations = errors.New("delegation: revocation list is stale")
	// ErrRollback means a revocation list older than the one in use.
	ErrRollback = errors.New("delegation: revocation list older than the current one")
)
