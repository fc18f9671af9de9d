package coupons

import "testing"

// BenchmarkCursorNext spends a lane of 2^20 coupons, starting it again
// from its saved initial state when it runs out.
func BenchmarkCursorNext(b *testing.B) {
	const length = 1 << 20
	c, _, err := NewCursor(LaneTag{1}, length, Value{2})
	if err != nil {
		b.Fatal(err)
	}
	start, err := c.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	var calls, steps uint64
	var maxSteps uint32
	maxState := c.StateSize()
	b.ReportAllocs()
	for b.Loop() {
		if c.Remaining() == 0 {
			steps += c.st.totalSteps
			maxSteps = max(maxSteps, c.st.maxSteps)
			if err := c.UnmarshalBinary(start); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, _, _, err := c.Next(); err != nil {
			b.Fatal(err)
		}
		calls++
		if calls&1023 == 0 {
			maxState = max(maxState, c.StateSize())
		}
	}
	steps += c.st.totalSteps
	maxSteps = max(maxSteps, c.st.maxSteps)
	b.ReportMetric(float64(steps)/float64(calls), "hashes/coupon")
	b.ReportMetric(float64(maxSteps), "max-hashes/coupon")
	b.ReportMetric(float64(maxState), "state-bytes")
}

// BenchmarkPortionCursorNext spends a portion of 2^19 + 2^17 + 1
// coupons of a lane of 2^20 (three segments), starting it again from its
// saved initial state when it runs out.
func BenchmarkPortionCursorNext(b *testing.B) {
	const length, end = 1 << 20, 1<<19 + 1<<17 + 1
	c, _, err := NewPortionCursor(LaneTag{1}, length, end, Value{2})
	if err != nil {
		b.Fatal(err)
	}
	start, err := c.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	var calls, steps uint64
	var maxSteps uint32
	maxState := c.StateSize()
	b.ReportAllocs()
	for b.Loop() {
		if c.Remaining() == 0 {
			steps += c.st.totalSteps
			maxSteps = max(maxSteps, c.st.maxSteps)
			if err := c.UnmarshalBinary(start); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, _, _, err := c.Next(); err != nil {
			b.Fatal(err)
		}
		calls++
		if calls&1023 == 0 {
			maxState = max(maxState, c.StateSize())
		}
	}
	steps += c.st.totalSteps
	maxSteps = max(maxSteps, c.st.maxSteps)
	b.ReportMetric(float64(steps)/float64(calls), "hashes/coupon")
	b.ReportMetric(float64(maxSteps), "max-hashes/coupon")
	b.ReportMetric(float64(maxState), "state-bytes")
}

// BenchmarkCursorAppendBinary saves a cursor's state into a reused buffer,
// as a spender does before every coupon it reveals.
func BenchmarkCursorAppendBinary(b *testing.B) {
	c, _, err := NewCursor(LaneTag{1}, 1<<10, Value{2})
	if err != nil {
		b.Fatal(err)
	}
	for range 300 {
		if _, _, _, _, err := c.Next(); err != nil {
			b.Fatal(err)
		}
	}
	buf := make([]byte, 0, maxStateLen)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.AppendBinary(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(c.StateSize()), "state-bytes")
}

// BenchmarkStep is one chain step: one SHA-256 compression.
func BenchmarkStep(b *testing.B) {
	tag, w := LaneTag{1}, Value{2}
	b.ReportAllocs()
	for b.Loop() {
		w = Step(&tag, 7, &w)
	}
}
