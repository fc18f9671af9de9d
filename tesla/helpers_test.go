package tesla

import (
	"crypto/sha256"
	"sync"
	"testing"
	"time"
)

// testSeed is the documented seed of the golden vectors:
// SHA-256("ecoupons test seed").
var testSeed = Key(sha256.Sum256([]byte("ecoupons test seed")))

var testT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// testSchedule: 1 s intervals from testT0, keys disclosed 2 intervals late.
func testSchedule() Schedule {
	return Schedule{T0: testT0, Interval: time.Second, Delay: 2}
}

// fakeClock is an injected clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// naiveChain returns K_0 … K_n computed the obvious way.
func naiveChain(seed Key, n uint64) []Key {
	keys := make([]Key, n+1)
	keys[n] = seed
	for i := n; i > 0; i-- {
		keys[i-1] = F(keys[i])
	}
	return keys
}

func mustChain(t testing.TB, seed Key, n uint64) *Chain {
	t.Helper()
	c, err := NewChain(seed, n)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mid returns a time well inside interval i of s.
func mid(s Schedule, i uint64) time.Time { return s.Start(i).Add(s.Interval / 2) }
