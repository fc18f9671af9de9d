package tesla

import (
	"fmt"
	"math"
	"math/bits"
	"time"
)

// Schedule cuts time into TESLA intervals (RFC 4082 §3.3).
//
// Interval i covers [T0 + i·Interval, T0 + (i+1)·Interval). Interval 0 is
// the commitment interval: its key would be K_0, which is public, so the
// sender sends nothing in it and receivers refuse it. Interval i ≥ 1 uses
// chain key K_i, and a packet sent in interval i discloses K_{i-Delay}, so
// keys are disclosed Delay intervals after their use (RFC 4082's d). A
// receiver bootstraps (RFC 4082 §3.3) from the commitment K_0 and this
// schedule, both received authentically.
type Schedule struct {
	// T0 is the start of interval 0.
	T0 time.Time
	// Interval is the duration of one interval (RFC 4082's T_int).
	Interval time.Duration
	// Delay is the key disclosure delay d, in intervals, at least 1. It
	// must exceed the one-way network delay plus the clock skew, in
	// intervals, or receivers will refuse packets as unsafe.
	Delay uint64
}

// Validate reports whether the schedule can be used: T0 set, Interval > 0
// and Delay ≥ 1.
func (s Schedule) Validate() error {
	switch {
	case s.T0.IsZero():
		return fmt.Errorf("tesla: schedule has no T0: %w", ErrInvalidSchedule)
	case s.Interval <= 0:
		return fmt.Errorf("tesla: schedule interval %v is not positive: %w", s.Interval, ErrInvalidSchedule)
	case s.Delay == 0:
		return fmt.Errorf("tesla: schedule disclosure delay is 0: %w", ErrInvalidSchedule)
	}
	return nil
}

// IntervalAt returns the interval that contains t, floor((t - T0) /
// Interval) (RFC 4082 §3.3), or ErrBeforeStart if t is before T0. It is
// exact for any pair of times, including differences too large for a
// time.Duration, and saturates at math.MaxUint64. The schedule must be
// valid.
func (s Schedule) IntervalAt(t time.Time) (uint64, error) {
	if s.Interval <= 0 {
		return 0, fmt.Errorf("tesla: schedule interval %v is not positive: %w", s.Interval, ErrInvalidSchedule)
	}
	if t.Before(s.T0) {
		return 0, ErrBeforeStart
	}
	if d := t.Sub(s.T0); d < math.MaxInt64 {
		return uint64(d / s.Interval), nil
	}
	// t.Sub saturated: the difference is at least 2^63 ns. Compute it as a
	// 128-bit count of nanoseconds. As t ≥ T0 the seconds difference is
	// non-negative and below 2^64, so modular subtraction is exact.
	secs := uint64(t.Unix()) - uint64(s.T0.Unix())
	hi, lo := bits.Mul64(secs, 1e9)
	// Nanosecond() is in [0, 1e9): add t's, then subtract T0's.
	var c uint64
	lo, c = bits.Add64(lo, uint64(t.Nanosecond()), 0)
	hi += c
	lo, c = bits.Sub64(lo, uint64(s.T0.Nanosecond()), 0)
	hi -= c
	iv := uint64(s.Interval)
	if hi >= iv {
		return math.MaxUint64, nil
	}
	q, _ := bits.Div64(hi, lo, iv)
	return q, nil
}

// Start returns the start of interval i, T0 + i·Interval. When that does
// not fit in a time.Duration it is computed through Unix seconds (the
// result then has no monotonic clock reading), and it saturates at a time
// billions of years ahead. The schedule must be valid.
func (s Schedule) Start(i uint64) time.Time {
	if s.Interval <= 0 {
		return s.T0
	}
	hi, lo := bits.Mul64(i, uint64(s.Interval))
	if hi == 0 && lo <= math.MaxInt64 {
		return s.T0.Add(time.Duration(lo))
	}
	far := time.Unix(1<<62, 0).In(s.T0.Location())
	if hi >= 1e9 {
		return far
	}
	secs, nsec := bits.Div64(hi, lo, 1e9)
	base := s.T0.Unix()
	if secs > 1<<62 || base > 1<<62-int64(secs) {
		return far
	}
	return time.Unix(base+int64(secs), int64(s.T0.Nanosecond())+int64(nsec)).In(s.T0.Location())
}
