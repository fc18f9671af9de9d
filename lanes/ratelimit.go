package lanes

import "time"

// laneBuckets is the number of rate-limit buckets per lane lock stripe:
// Stripes·laneBuckets buckets of 24 bytes, 768 KiB per gate whatever
// the number of lanes.
const laneBuckets = 8

// laneBucket is the token bucket of one lane (h, the lane's hash), held
// in its stripe's row of c.buckets under the stripe's lock. A zero last
// marks a free slot. A bucket that has filled up again (idle for
// burst/lane_rate seconds) is the same as none, so a row only needs the
// lanes of its stripe that paid within the last burst/lane_rate seconds.
type laneBucket struct {
	h      uint64
	tokens float64
	last   int64 // Unix nanoseconds of the last payment
}

// rateLimit takes a token from the bucket of the lane whose hash is h; it
// returns how long to wait when there is none. The caller holds the
// lane's stripe lock.
//
// A lane without a bucket in its stripe's row takes a free slot, or the
// slot of the bucket that is fullest now; when that one has not filled up
// again yet (more than laneBuckets lanes of one stripe paid within
// burst/lane_rate seconds), its lane starts afresh with a full bucket at
// its next payment. The lanes' hash is seeded, so a client cannot aim
// lanes at one stripe: with n lanes paying within that time, a stripe
// holds n/4096 of them on average, and an evicted bucket needs more than
// 8 in one stripe (for n = 4096, a chance of about 1e-6 per stripe).
func (c *Core) rateLimit(h uint64, now time.Time) time.Duration {
	if c.cfg.LaneRate <= 0 {
		return 0
	}
	burst := max(1, c.cfg.LaneRate)
	t := now.UnixNano()
	row := &c.buckets[h%Stripes]
	var b *laneBucket
	fullest, most := 0, -1.0
	for i := range row {
		s := &row[i]
		if s.last != 0 && s.h == h {
			b = s
			break
		}
		level := burst // a free slot
		if s.last != 0 {
			level = s.tokens + float64(t-s.last)/1e9*c.cfg.LaneRate
		}
		if level > most {
			fullest, most = i, level
		}
	}
	if b == nil {
		b = &row[fullest]
		*b = laneBucket{h: h, tokens: burst, last: t}
	} else if t > b.last {
		b.tokens = min(burst, b.tokens+float64(t-b.last)/1e9*c.cfg.LaneRate)
		b.last = t
	}
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / c.cfg.LaneRate * float64(time.Second))
	}
	b.tokens--
	return 0
}
