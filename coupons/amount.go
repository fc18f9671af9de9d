package coupons

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// NanosPerUnit is the scale of every amount in ecoupons: amounts are
// integers in 10^-9 of a currency's major unit ("nanos"), so that prices of
// a fraction of a cent are exact and no float ever touches money. ISO 4217
// minor units (cents) are too coarse for per-request prices; statements
// convert with exact remainders.
const NanosPerUnit = 1_000_000_000

// MaxAmount bounds any amount (about 9.2 billion major units).
const MaxAmount = 1<<63 - 1

// ErrBadAmount is a malformed, negative or overflowing amount or currency.
var ErrBadAmount = errors.New("coupons: bad amount")

// ParseAmount parses a non-negative decimal amount of the major unit,
// "0.001" or "12" or "12.50", with at most 9 fraction digits, into nanos.
// Signs, exponents, spaces and leading zeros (other than "0.") are refused.
func ParseAmount(s string) (int64, error) {
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || (hasDot && frac == "") || len(frac) > 9 {
		return 0, fmt.Errorf("%w: %q is not a decimal with at most 9 fraction digits", ErrBadAmount, s)
	}
	if len(whole) > 1 && whole[0] == '0' {
		return 0, fmt.Errorf("%w: %q has a leading zero", ErrBadAmount, s)
	}
	for _, part := range []string{whole, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("%w: %q is not a decimal number", ErrBadAmount, s)
			}
		}
	}
	w, err := strconv.ParseUint(whole, 10, 64)
	if err != nil || w > MaxAmount/NanosPerUnit {
		return 0, fmt.Errorf("%w: %q is too large", ErrBadAmount, s)
	}
	f := uint64(0)
	if frac != "" {
		f, _ = strconv.ParseUint(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	}
	n := w*NanosPerUnit + f
	if n > MaxAmount {
		return 0, fmt.Errorf("%w: %q is too large", ErrBadAmount, s)
	}
	return int64(n), nil
}

// FormatAmount writes nanos as the shortest decimal that ParseAmount reads
// back to the same value ("0.001", "12.5", "3").
func FormatAmount(nanos int64) string {
	neg := nanos < 0
	u := uint64(nanos)
	if neg {
		u = -u
	}
	s := strconv.FormatUint(u/NanosPerUnit, 10)
	if f := u % NanosPerUnit; f != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%09d", f), "0")
	}
	if neg {
		s = "-" + s
	}
	return s
}

// CheckCurrency accepts an ISO 4217 alphabetic code: three letters A–Z.
func CheckCurrency(c string) error {
	if len(c) != 3 {
		return fmt.Errorf("%w: currency %q is not a 3-letter ISO 4217 code", ErrBadAmount, c)
	}
	for i := 0; i < 3; i++ {
		if c[i] < 'A' || c[i] > 'Z' {
			return fmt.Errorf("%w: currency %q is not a 3-letter ISO 4217 code", ErrBadAmount, c)
		}
	}
	return nil
}

// MulAmount returns n × unit, or ErrBadAmount if it overflows MaxAmount.
func MulAmount(n uint64, unit int64) (int64, error) {
	if unit < 0 {
		return 0, fmt.Errorf("%w: negative unit", ErrBadAmount)
	}
	hi, lo := bits.Mul64(n, uint64(unit))
	if hi != 0 || lo > MaxAmount {
		return 0, fmt.Errorf("%w: %d × %s overflows", ErrBadAmount, n, FormatAmount(unit))
	}
	return int64(lo), nil
}
