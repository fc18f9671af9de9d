package tesla

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

func TestLabelsFitOneBlock(t *testing.T) {
	for _, l := range []string{LabelF, LabelFPrime} {
		if n := len(l) + KeySize; n > 55 {
			t.Errorf("%q || key is %d bytes, more than one block", l, n)
		}
	}
	if LabelF == LabelFPrime || LabelF == LabelBind || LabelFPrime == LabelBind {
		t.Error("labels are not distinct")
	}
}

// TestFMatchesDefinition recomputes F and F' through another code path.
func TestFMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100 {
		var k Key
		for i := range k {
			k[i] = byte(rng.Uint32())
		}
		for _, tc := range []struct {
			label string
			f     func(Key) Key
		}{{LabelF, F}, {LabelFPrime, FPrime}} {
			h := sha256.New()
			h.Write([]byte(tc.label))
			h.Write(k[:])
			if got := tc.f(k); !bytes.Equal(got[:], h.Sum(nil)) {
				t.Fatalf("%s(%x) = %x, want %x", tc.label, k, got, h.Sum(nil))
			}
		}
	}
	if F(testSeed) == FPrime(testSeed) {
		t.Error("F and F' agree")
	}
}

// TestMACMatchesHMAC checks the hand-written HMAC against crypto/hmac, for
// message lengths around the block size, with one reused state.
func TestMACMatchesHMAC(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	m := newMACer()
	for n := range 300 {
		var k Key
		for i := range k {
			k[i] = byte(rng.Uint32())
		}
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(rng.Uint32())
		}
		mk := FPrime(k)
		h := hmac.New(sha256.New, mk[:])
		h.Write(msg)
		want := h.Sum(nil)[:MACSize]
		if got := m.mac(k, msg); !bytes.Equal(got[:], want) {
			t.Fatalf("len %d: mac %x, want %x", n, got, want)
		}
		if got := MAC(k, msg); !bytes.Equal(got[:], want) {
			t.Fatalf("len %d: MAC %x, want %x", n, got, want)
		}
		var tag [MACSize]byte
		copy(tag[:], want)
		if !VerifyMAC(k, msg, tag) {
			t.Fatalf("len %d: VerifyMAC rejects a good MAC", n)
		}
		tag[n%MACSize] ^= 1 << (n % 8)
		if VerifyMAC(k, msg, tag) {
			t.Fatalf("len %d: VerifyMAC accepts a flipped MAC", n)
		}
	}
}

func TestPrimitivesDoNotAllocate(t *testing.T) {
	k := testSeed
	var d [32]byte
	c := mustChain(t, testSeed, 100)
	k5, _ := c.Key(5)
	tag := BindRequest(k, d)
	m := newMACer()
	msg := make([]byte, 64)
	for name, f := range map[string]func(){
		"F":             func() { k = F(k) },
		"FPrime":        func() { k = FPrime(k) },
		"VerifyKey":     func() { _ = VerifyKey(c.Commitment(), 0, k5, 5, 5) },
		"VerifyKeyBad":  func() { _ = VerifyKey(c.Commitment(), 0, k, 5, 5) },
		"BindRequest":   func() { tag = BindRequest(k, d) },
		"VerifyBinding": func() { _ = VerifyBinding(k, d, tag) },
		"Chain.Key":     func() { _, _ = c.Key(57) },
		"macer":         func() { _ = m.mac(k, msg) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs, want 0", name, n)
		}
	}
}
