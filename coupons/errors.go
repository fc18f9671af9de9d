package coupons

import "errors"

// Errors about books and their wire formats.
var (
	// ErrBadBook is a malformed or inconsistent book commitment.
	ErrBadBook = errors.New("coupons: malformed book")
	// ErrBadState is a malformed saved cursor state.
	ErrBadState = errors.New("coupons: malformed cursor state")
	// ErrLaneExhausted means every coupon of the lane has been spent.
	ErrLaneExhausted = errors.New("coupons: lane exhausted")
	// ErrPortionUsedUp means every coupon of a granted portion has been
	// spent: the holder knows no coupon past the portion's end.
	ErrPortionUsedUp = errors.New("coupons: portion used up")
	// ErrBadPortion is a portion end outside the lane (1…L) or a position
	// outside the portion.
	ErrBadPortion = errors.New("coupons: portion out of range")
	// ErrCapExceeded means a payment would take a delegate past the
	// spending cap of its grant.
	ErrCapExceeded = errors.New("coupons: delegation spending cap exceeded")
)

// ChargeCap adds amount to spent under cap (0 means no cap) and returns the
// new total, or ErrCapExceeded without change.
func ChargeCap(spent, capNanos, amount int64) (int64, error) {
	if amount < 0 || spent < 0 {
		return spent, ErrBadAmount
	}
	total := spent + amount
	if total < spent {
		return spent, ErrBadAmount
	}
	if capNanos > 0 && total > capNanos {
		return spent, ErrCapExceeded
	}
	return total, nil
}
