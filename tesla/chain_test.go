package tesla

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// TestChainMatchesNaive checks checkpoints and segment recomputation
// against naive generation, for lengths around perfect squares and
// segment boundaries, in forward, backward and random order.
func TestChainMatchesNaive(t *testing.T) {
	var ns []uint64
	for n := uint64(1); n <= 70; n++ {
		ns = append(ns, n)
	}
	ns = append(ns, 99, 100, 101, 255, 256, 257, 1000, 1023, 1024, 1025, 4097)
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range ns {
		seed := F(Key{byte(n), byte(n >> 8)})
		want := naiveChain(seed, n)
		c := mustChain(t, seed, n)
		if c.Len() != n {
			t.Fatalf("n=%d: Len %d", n, c.Len())
		}
		if c.Commitment() != want[0] {
			t.Fatalf("n=%d: commitment differs", n)
		}
		check := func(order string, i uint64) {
			got, err := c.Key(i)
			if err != nil {
				t.Fatalf("n=%d %s: Key(%d): %v", n, order, i, err)
			}
			if got != want[i] {
				t.Fatalf("n=%d %s: Key(%d) differs from naive", n, order, i)
			}
		}
		for i := uint64(0); i <= n; i++ {
			check("forward", i)
		}
		for i := n + 1; i > 0; i-- {
			check("backward", i-1)
		}
		for range 3 * n {
			check("random", rng.Uint64N(n+1))
		}
		// A sender's pattern: K_i and K_{i-d} alternately.
		for i := uint64(3); i <= n; i++ {
			check("pairs", i)
			check("pairs", i-3)
		}
		if _, err := c.Key(n + 1); !errors.Is(err, ErrIndexOutOfRange) {
			t.Fatalf("n=%d: Key(n+1) error %v, want ErrIndexOutOfRange", n, err)
		}
	}
}

// TestChainMemory checks that a chain stores O(sqrt n) keys.
func TestChainMemory(t *testing.T) {
	for _, n := range []uint64{1, 2, 10, 1000, 1 << 16} {
		c := mustChain(t, testSeed, n)
		stored := uint64(len(c.cps) + len(c.slots[0].keys) + len(c.slots[1].keys))
		if limit := 3*isqrtCeil(n) + 2; stored > limit {
			t.Errorf("n=%d: %d keys stored, limit %d", n, stored, limit)
		}
	}
}

func TestIsqrtCeil(t *testing.T) {
	for n := uint64(1); n < 5000; n++ {
		s := isqrtCeil(n)
		if s*s < n || (s-1)*(s-1) >= n {
			t.Fatalf("isqrtCeil(%d) = %d", n, s)
		}
	}
	if s := isqrtCeil(MaxChainLength); s != 4096 {
		t.Fatalf("isqrtCeil(MaxChainLength) = %d", s)
	}
}

func TestNewChainLength(t *testing.T) {
	for _, n := range []uint64{0, MaxChainLength + 1, 1 << 63} {
		if _, err := NewChain(testSeed, n); !errors.Is(err, ErrChainLength) {
			t.Errorf("NewChain(n=%d) error %v, want ErrChainLength", n, err)
		}
	}
	if testing.Short() {
		return
	}
	c := mustChain(t, testSeed, MaxChainLength)
	k, err := c.Key(MaxChainLength)
	if err != nil || k != testSeed {
		t.Fatalf("Key(MaxChainLength) = %x, %v; want the seed", k, err)
	}
	k1, _ := c.Key(1)
	if F(k1) != c.Commitment() {
		t.Fatal("F(K_1) != K_0")
	}
}

func TestVerifyKey(t *testing.T) {
	keys := naiveChain(testSeed, 20)
	forged := keys[7]
	forged[0] ^= 1
	for _, tc := range []struct {
		name      string
		trusted   Key
		ti        uint64
		disclosed Key
		di, max   uint64
		want      error
	}{
		{"one step", keys[0], 0, keys[1], 1, 1, nil},
		{"many steps", keys[3], 3, keys[20], 20, 17, nil},
		{"steps under bound", keys[3], 3, keys[10], 10, 100, nil},
		{"same index", keys[5], 5, keys[5], 5, 10, ErrNotNewer},
		{"older index", keys[5], 5, keys[4], 4, 10, ErrNotNewer},
		{"too many steps", keys[0], 0, keys[10], 10, 9, ErrTooManySteps},
		{"zero bound", keys[0], 0, keys[1], 1, 0, ErrTooManySteps},
		{"forged key", keys[0], 0, forged, 7, 10, ErrBadKey},
		{"wrong index", keys[0], 0, keys[7], 6, 10, ErrBadKey},
		{"wrong index high", keys[0], 0, keys[7], 8, 10, ErrBadKey},
		{"huge index", keys[0], 0, keys[7], 1 << 62, 10, ErrTooManySteps},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyKey(tc.trusted, tc.ti, tc.disclosed, tc.di, tc.max)
			if err != tc.want {
				t.Fatalf("VerifyKey = %v, want %v", err, tc.want)
			}
		})
	}
}
