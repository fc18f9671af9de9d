package tesla

import (
	"crypto/subtle"
	"fmt"
	"math"
	"sync"
)

// MaxChainLength bounds n in NewChain: generating a chain costs n hashes
// (about 1.5 s for 1<<24 on a current core) and its memory is about
// 3·sqrt(n)·32 bytes (384 KiB for 1<<24).
const MaxChainLength = 1 << 24

// Chain is a one-way key chain K_0 … K_n (RFC 4082 §3.2): K_n is the seed and
// K_i = F(K_{i+1}), so K_0 is the commitment and a key disclosed later is
// checked by hashing it forward to a key already trusted.
//
// A Chain holds O(sqrt n) keys: checkpoints every s ≈ sqrt(n) indices, plus
// the keys of two segments (s consecutive indices each), recomputed from the
// checkpoint above them when another segment is asked for. Walking the chain
// forward, as a sender does, costs one hash per key amortised; a random
// access costs at most s hashes.
//
// A Chain holds secrets. It is safe for concurrent use.
type Chain struct {
	n    uint64
	step uint64 // s: distance between checkpoints
	// cps[j] = K_{min(j·s, n)}, for j = 0 … ceil(n/s).
	cps []Key

	mu sync.Mutex
	// Two cached segments, so that a sender reading K_i and K_{i-d} on
	// either side of a checkpoint does not recompute a segment per call.
	// slots[lru] is replaced first.
	slots [2]segment
	lru   int
}

// NewChain generates the chain K_0 … K_n from seed = K_n, with
// 1 ≤ n ≤ MaxChainLength. The seed must be secret and uniformly random
// (for example from crypto/rand); NewChain keeps a copy.
func NewChain(seed Key, n uint64) (*Chain, error) {
	if n < 1 || n > MaxChainLength {
		return nil, fmt.Errorf("tesla: chain of %d steps, want 1 to %d: %w", n, MaxChainLength, ErrChainLength)
	}
	s := isqrtCeil(n)
	c := &Chain{
		n:    n,
		step: s,
		cps:  make([]Key, (n+s-1)/s+1),
	}
	c.slots[0].keys = make([]Key, s)
	c.slots[1].keys = make([]Key, s)
	k := seed
	last := uint64(len(c.cps) - 1)
	c.cps[last] = k
	for i := n; i > 0; {
		i--
		k = F(k)
		if i%s == 0 {
			c.cps[i/s] = k
		}
	}
	return c, nil
}

// isqrtCeil returns the smallest s ≥ 1 with s·s ≥ n.
func isqrtCeil(n uint64) uint64 {
	s := uint64(math.Sqrt(float64(n)))
	for s*s > n {
		s--
	}
	for s*s < n {
		s++
	}
	return max(s, 1)
}

// Len returns n, the index of the chain's last key: the chain has n+1 keys
// K_0 … K_n and covers intervals 1 … n.
func (c *Chain) Len() uint64 { return c.n }

// Commitment returns K_0, the key that is published and signed.
func (c *Chain) Commitment() Key { return c.cps[0] }

// Key returns K_i for 0 ≤ i ≤ Len(). It does not allocate.
func (c *Chain) Key(i uint64) (Key, error) {
	if i > c.n {
		return Key{}, ErrIndexOutOfRange
	}
	if i%c.step == 0 {
		return c.cps[i/c.step], nil
	}
	j := i/c.step + 1
	c.mu.Lock()
	defer c.mu.Unlock()
	t := 0
	switch j {
	case c.slots[0].seg:
	case c.slots[1].seg:
		t = 1
	default:
		t = c.lru
		c.fill(&c.slots[t], j)
	}
	c.lru = 1 - t
	return c.slots[t].keys[i-(j-1)*c.step-1], nil
}

// segment holds the keys of segment seg (0 = none). Segment j ≥ 1 covers
// indices (j-1)·s+1 … min(j·s, n), and keys[k] = K_{(j-1)·s+1+k}.
type segment struct {
	seg  uint64
	keys []Key
}

// fill recomputes segment j into g from the checkpoint at its top. c.mu is
// held.
func (c *Chain) fill(g *segment, j uint64) {
	base := (j-1)*c.step + 1
	top := min(j*c.step, c.n)
	k := c.cps[j]
	g.keys[top-base] = k
	for i := top; i > base; i-- {
		k = F(k)
		g.keys[i-1-base] = k
	}
	g.seg = j
}

// VerifyKey checks a disclosed key against a trusted one (RFC 4082 §3.5):
// disclosedIndex must be greater than trustedIndex (else
// ErrNotNewer) and at most maxSteps ahead (else ErrTooManySteps), and
// F^(disclosedIndex-trustedIndex)(disclosed) must equal trusted (else
// ErrBadKey; compared in constant time). maxSteps bounds the hashing a
// forged index can cause; VerifyKey hashes at most maxSteps times and does
// not allocate. The errors are the bare sentinels.
func VerifyKey(trusted Key, trustedIndex uint64, disclosed Key, disclosedIndex uint64, maxSteps uint64) error {
	if disclosedIndex <= trustedIndex {
		return ErrNotNewer
	}
	steps := disclosedIndex - trustedIndex
	if steps > maxSteps {
		return ErrTooManySteps
	}
	k := fN(disclosed, steps)
	if subtle.ConstantTimeCompare(k[:], trusted[:]) != 1 {
		return ErrBadKey
	}
	return nil
}
