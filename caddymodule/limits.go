package caddymodule

import (
	"encoding/binary"
	"net/netip"
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

// sigCacheEntries is how many verified signatures the cache holds (each
// a cost of 1: ristretto's own bookkeeping is not counted against it, or
// it would hold a fiftieth of that). About 100 bytes each with the
// cache's overhead: 3 MiB per gate.
const sigCacheEntries = 1 << 15

func newSigCache() (*sigCache, error) {
	c, err := ristretto.NewCache(&ristretto.Config[uint64, [32]byte]{NumCounters: 8 * sigCacheEntries, MaxCost: sigCacheEntries,
		BufferItems: 64, IgnoreInternalCost: true})
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

// ipTableSize bounds the prefixes an ipWindow counts in one window.
const ipTableSize = 1 << 16

// ipWindow counts events per client prefix in fixed windows: IPv4
// addresses one by one, IPv6 addresses by their first v6bits bits (one
// client usually holds a whole /64).
//
// The table holds at most size prefixes (ipTableSize: a 24-byte heap
// slot and a map entry each, a few MiB at most). When it is full, a new
// prefix takes the slot of a prefix with the smallest count, which is
// forgotten: its count starts again. Counts are never inherited, so:
//
//   - a prefix is refused only after it made more than limit events in
//     the window itself: however many other addresses or prefixes flood
//     the table, a client whose prefix made fewer is never refused;
//   - a prefix once refused stays refused until the window ends unless it
//     is forgotten, which needs every prefix of the full table to have
//     been refused too (size distinct prefixes, each past the limit): a
//     flood from at most size prefixes is limited exactly, and one from
//     more lets a forgotten prefix make up to limit more events each time
//     it is forgotten.
type ipWindow struct {
	mu     sync.Mutex
	limit  int
	window time.Duration
	v6bits int
	size   int
	start  time.Time
	heap   []ipCount        // min-heap on n
	pos    map[[16]byte]int // prefix → its index in heap
}

// ipCount is a prefix (an IPv4 address in its IPv4-mapped form, or a
// masked IPv6 one) and its events in the window, at most limit+1.
type ipCount struct {
	key [16]byte
	n   int
}

func newIPWindow(limit int, window time.Duration, v6bits int) *ipWindow {
	return &ipWindow{limit: limit, window: window, v6bits: v6bits, size: ipTableSize, pos: map[[16]byte]int{}}
}

// prefix is the key ip is counted under: the address for IPv4 (or
// IPv4-mapped IPv6), its first v6bits bits for IPv6; all strings that do
// not parse share the zero key.
func (w *ipWindow) prefix(ip string) [16]byte {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return [16]byte{}
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		if p, err := a.Prefix(w.v6bits); err == nil {
			a = p.Addr()
		}
	}
	return a.As16()
}

// allow counts one event for ip and reports whether its prefix is within
// the limit.
func (w *ipWindow) allow(ip string, now time.Time) bool {
	key := w.prefix(ip)
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Sub(w.start) >= w.window {
		w.start = now
		w.heap = w.heap[:0]
		clear(w.pos)
	}
	if i, ok := w.pos[key]; ok {
		if w.heap[i].n > w.limit {
			return false
		}
		w.heap[i].n++
		n := w.heap[i].n
		w.down(i)
		return n <= w.limit
	}
	if len(w.heap) < w.size {
		w.heap = append(w.heap, ipCount{key: key, n: 1})
		w.pos[key] = len(w.heap) - 1
		w.up(len(w.heap) - 1)
	} else {
		// Full: forget a prefix with the smallest count (the root). A
		// count of 1 is the smallest there is, so the heap stays one.
		delete(w.pos, w.heap[0].key)
		w.heap[0] = ipCount{key: key, n: 1}
		w.pos[key] = 0
	}
	return 1 <= w.limit
}

func (w *ipWindow) swap(i, j int) {
	w.heap[i], w.heap[j] = w.heap[j], w.heap[i]
	w.pos[w.heap[i].key] = i
	w.pos[w.heap[j].key] = j
}

func (w *ipWindow) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if w.heap[p].n <= w.heap[i].n {
			return
		}
		w.swap(i, p)
		i = p
	}
}

func (w *ipWindow) down(i int) {
	for {
		m, l, r := i, 2*i+1, 2*i+2
		if l < len(w.heap) && w.heap[l].n < w.heap[m].n {
			m = l
		}
		if r < len(w.heap) && w.heap[r].n < w.heap[m].n {
			m = r
		}
		if m == i {
			return
		}
		w.swap(i, m)
		i = m
	}
}
