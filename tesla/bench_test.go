package tesla

import (
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"
)

func BenchmarkBaselineSHA256_32(b *testing.B) { testutil.BenchSHA256_32(b) }

func BenchmarkBaselineEd25519Verify(b *testing.B) { testutil.BenchEd25519Verify(b) }

func BenchmarkF(b *testing.B) {
	b.ReportAllocs()
	k := testSeed
	for b.Loop() {
		k = F(k)
	}
}

func benchmarkVerifyKey(b *testing.B, steps uint64) {
	keys := naiveChain(testSeed, steps)
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyKey(keys[0], 0, keys[steps], steps, steps); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyKey1(b *testing.B)  { benchmarkVerifyKey(b, 1) }
func BenchmarkVerifyKey16(b *testing.B) { benchmarkVerifyKey(b, 16) }

// BenchmarkMAC is the sender's MAC of a 64-byte message (F' and HMAC).
func BenchmarkMAC(b *testing.B) {
	s := testSchedule()
	snd, err := NewSender(mustChain(b, testSeed, 100), s, func() time.Time { return mid(s, 50) })
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := snd.Authenticate(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBindRequest(b *testing.B) {
	b.ReportAllocs()
	next := testSeed
	var d [32]byte
	for b.Loop() {
		t := BindRequest(next, d)
		d[0] = t[0]
	}
}

func BenchmarkVerifyBinding(b *testing.B) {
	next := testSeed
	var d [32]byte
	tag := BindRequest(next, d)
	b.ReportAllocs()
	for b.Loop() {
		if !VerifyBinding(next, d, tag) {
			b.Fatal("rejected")
		}
	}
}

// BenchmarkReceive is the steady state: one 64-byte packet per interval,
// each disclosing the key two intervals back (one chain step), which
// settles one buffered packet (one MAC) and buffers itself.
func BenchmarkReceive(b *testing.B) {
	const n = 4096
	s := testSchedule()
	clk := newClock(testT0)
	snd, err := NewSender(mustChain(b, testSeed, n), s, clk.Now)
	if err != nil {
		b.Fatal(err)
	}
	pkts := make([]Packet, n)
	for i := range pkts {
		clk.Set(mid(s, uint64(i+1)))
		if pkts[i], err = snd.Authenticate(make([]byte, 64)); err != nil {
			b.Fatal(err)
		}
	}
	newRcv := func() *Receiver {
		r, err := NewReceiver(ReceiverConfig{Commitment: snd.Commitment(), Schedule: s, Now: clk.Now})
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	rcv := newRcv()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if i == n {
			i, rcv = 0, newRcv()
		}
		clk.Set(mid(s, uint64(i+1)))
		res, err := rcv.Receive(pkts[i])
		if err != nil || (i >= 2 && len(res.Authenticated) != 1) {
			b.Fatalf("packet %d: %v, %d", i, err, len(res.Authenticated))
		}
		i++
	}
}
