package caddymodule

import (
	"crypto/rand"
	"testing"
)

// TestSigCacheHoldsWhatItIsSizedFor: the signature cache keeps (nearly)
// every one of 20,000 signatures, below its size of 32,768; counting
// ristretto's internal cost against its size, it kept about 575.
func TestSigCacheHoldsWhatItIsSizedFor(t *testing.T) {
	c, err := newSigCache()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 20000
	keys := make([][32]byte, n)
	for i := range keys {
		rand.Read(keys[i][:])
		c.Remember(keys[i])
		if i%64 == 63 {
			c.c.Wait() // let the set buffer drain, as a gate's pace does
		}
	}
	c.c.Wait()
	held := 0
	for _, k := range keys {
		if c.Verified(k) {
			held++
		}
	}
	if held < n*95/100 {
		t.Fatalf("the cache holds %d of %d signatures (sized for %d)", held, n, sigCacheEntries)
	}
}
