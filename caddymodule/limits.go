package caddymodule

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// sigCache is the gate's spki.VerifyCache: signatures of books and
// certificates it has verified, so that the next lane of a known book
// costs one signature check. Losing entries only costs a re-check.
//
// Entries are indexed by the first 8 bytes of the key and hold the whole
// key, compared on lookup: a collision in the index is a miss, never a
// false "verified".
type sigCache struct {
	c *ristretto.Cache[uint64, [32]byte]
}

func newSigCache() (*sigCache, error) {
	c, err := ristretto.NewCache(&ristretto.Config[uint64, [32]byte]{NumCounters: 1 << 18, MaxCost: 1 << 15, BufferItems: 64})
	if err != nil {
		return nil, err
	}
	return &sigCache{c: c}, nil
}

func (s *sigCache) Verified(k [32]byte) bool {
	v, ok := s.c.Get(binary.LittleEndian.Uint64(k[:8]))
	return ok && v == k
}

func (s *sigCache) Remember(k [32]byte) { s.c.Set(binary.LittleEndian.Uint64(k[:8]), k, 1) }
func (s *sigCache) Close()              { s.c.Close() }

// ipWindow counts events per client address in fixed windows.
type ipWindow struct {
	mu     sync.Mutex
	limit  int
	window time.Duration
	start  time.Time
	counts map[string]int
}

func newIPWindow(limit int, window time.Duration) *ipWindow {
	return &ipWindow{limit: limit, window: window, counts: map[string]int{}}
}

// allow counts one event for ip and reports whether it is within the limit.
func (w *ipWindow) allow(ip string, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Sub(w.start) >= w.window {
		w.start, w.counts = now, map[string]int{}
	}
	if len(w.counts) > 1<<16 {
		// Under a flood of addresses, refuse new ones rather than grow.
		if _, ok := w.counts[ip]; !ok {
			return false
		}
	}
	w.counts[ip]++
	return w.counts[ip] <= w.limit
}
