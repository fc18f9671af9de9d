package tesla

import (
	"errors"
	"math"
	"math/big"
	"testing"
	"time"
)

func TestScheduleValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Schedule
		ok   bool
	}{
		{"good", testSchedule(), true},
		{"no T0", Schedule{Interval: time.Second, Delay: 1}, false},
		{"zero interval", Schedule{T0: testT0, Delay: 1}, false},
		{"negative interval", Schedule{T0: testT0, Interval: -time.Second, Delay: 1}, false},
		{"zero delay", Schedule{T0: testT0, Interval: time.Second}, false},
	} {
		err := tc.s.Validate()
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, ErrInvalidSchedule) {
			t.Errorf("%s: error %v, want ErrInvalidSchedule", tc.name, err)
		}
	}
}

func TestIntervalAt(t *testing.T) {
	s := testSchedule()
	for _, tc := range []struct {
		t    time.Time
		want uint64
		err  error
	}{
		{testT0.Add(-time.Nanosecond), 0, ErrBeforeStart},
		{testT0.Add(-time.Hour), 0, ErrBeforeStart},
		{testT0, 0, nil},
		{testT0.Add(time.Second - 1), 0, nil},
		{testT0.Add(time.Second), 1, nil},
		{testT0.Add(10*time.Second + 500*time.Millisecond), 10, nil},
		{testT0.Add(100 * 365 * 24 * time.Hour), 100 * 365 * 24 * 3600, nil},
	} {
		got, err := s.IntervalAt(tc.t)
		if err != tc.err || got != tc.want {
			t.Errorf("IntervalAt(%v) = %d, %v; want %d, %v", tc.t, got, err, tc.want, tc.err)
		}
	}
	if _, err := (Schedule{T0: testT0}).IntervalAt(testT0); !errors.Is(err, ErrInvalidSchedule) {
		t.Errorf("zero interval: error %v", err)
	}
}

// TestIntervalAtFarFuture checks the exact path taken when t - T0 does not
// fit in a time.Duration, against math/big.
func TestIntervalAtFarFuture(t *testing.T) {
	for _, tc := range []struct {
		t0, t    time.Time
		interval time.Duration
	}{
		{testT0.Add(123456789), testT0.AddDate(300, 0, 0).Add(987654321), time.Hour},
		{testT0.Add(999999999), testT0.AddDate(1000, 0, 0), time.Nanosecond * 7},
		{time.Date(1, 1, 1, 0, 0, 0, 5, time.UTC), time.Date(9999, 1, 1, 0, 0, 0, 3, time.UTC), time.Minute},
		{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(200000000, 1, 1, 0, 0, 0, 0, time.UTC), 1},
	} {
		s := Schedule{T0: tc.t0, Interval: tc.interval, Delay: 1}
		got, err := s.IntervalAt(tc.t)
		if err != nil {
			t.Fatal(err)
		}
		ns := new(big.Int).Mul(big.NewInt(tc.t.Unix()-tc.t0.Unix()), big.NewInt(1e9))
		ns.Add(ns, big.NewInt(int64(tc.t.Nanosecond()-tc.t0.Nanosecond())))
		want := ns.Div(ns, big.NewInt(int64(tc.interval)))
		if !want.IsUint64() {
			want.SetUint64(math.MaxUint64)
		}
		if got != want.Uint64() {
			t.Errorf("IntervalAt(%v) from %v by %v = %d, want %d", tc.t, tc.t0, tc.interval, got, want)
		}
	}
}

func TestStart(t *testing.T) {
	s := testSchedule()
	for _, i := range []uint64{0, 1, 2, 1000, 1 << 20} {
		st := s.Start(i)
		if !st.Equal(testT0.Add(time.Duration(i) * time.Second)) {
			t.Errorf("Start(%d) = %v", i, st)
		}
		if got, err := s.IntervalAt(st); err != nil || got != i {
			t.Errorf("IntervalAt(Start(%d)) = %d, %v", i, got, err)
		}
		if i > 0 {
			if got, _ := s.IntervalAt(st.Add(-1)); got != i-1 {
				t.Errorf("IntervalAt(Start(%d)-1ns) = %d", i, got)
			}
		}
	}
	// Beyond a time.Duration: 2^40 hours.
	big := Schedule{T0: testT0, Interval: time.Hour, Delay: 1}
	st := big.Start(1 << 40)
	if got, err := big.IntervalAt(st); err != nil || got != 1<<40 {
		t.Errorf("IntervalAt(Start(2^40)) = %d, %v", got, err)
	}
	// Saturation.
	far := Schedule{T0: testT0, Interval: math.MaxInt64, Delay: 1}.Start(math.MaxUint64)
	if !far.After(testT0.AddDate(1e9, 0, 0)) {
		t.Errorf("saturated Start = %v", far)
	}
}
