package tesla

import (
	"errors"
	"testing"
	"time"
)

func TestSenderPackets(t *testing.T) {
	s := testSchedule()
	keys := naiveChain(testSeed, 10)
	clk := newClock(mid(s, 1))
	snd, err := NewSender(mustChain(t, testSeed, 10), s, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	if snd.Commitment() != keys[0] || snd.Schedule() != s {
		t.Fatal("Commitment or Schedule")
	}
	for i := uint64(1); i <= 10; i++ {
		clk.Set(mid(s, i))
		msg := []byte{byte(i)}
		p, err := snd.Authenticate(msg)
		if err != nil {
			t.Fatalf("interval %d: %v", i, err)
		}
		if p.Interval != i {
			t.Fatalf("interval %d: packet says %d", i, p.Interval)
		}
		if p.MAC != MAC(keys[i], msg) {
			t.Fatalf("interval %d: MAC not under K_%d", i, i)
		}
		wantIdx := uint64(0)
		if i > s.Delay {
			wantIdx = i - s.Delay
		}
		if p.DisclosedIndex != wantIdx || p.DisclosedKey != keys[wantIdx] {
			t.Fatalf("interval %d: discloses %d, want K_%d", i, p.DisclosedIndex, wantIdx)
		}
	}
	// The first and last instants of an interval.
	clk.Set(s.Start(4))
	if p, _ := snd.Authenticate(nil); p.Interval != 4 {
		t.Fatalf("at Start(4): interval %d", p.Interval)
	}
	clk.Set(s.Start(5).Add(-1))
	if p, _ := snd.Authenticate(nil); p.Interval != 4 {
		t.Fatalf("just before Start(5): interval %d", p.Interval)
	}
}

func TestSenderErrors(t *testing.T) {
	s := testSchedule()
	c := mustChain(t, testSeed, 10)
	for _, tc := range []struct {
		name string
		at   time.Time
		msg  []byte
		want error
	}{
		{"before T0", testT0.Add(-time.Millisecond), nil, ErrBeforeStart},
		{"commitment interval", mid(s, 0), nil, ErrCommitmentInterval},
		{"exhausted", s.Start(11), nil, ErrChainExhausted},
		{"far future", s.Start(1 << 40), nil, ErrChainExhausted},
		{"message too large", mid(s, 1), make([]byte, MaxMessageSize+1), ErrMessageTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snd, err := NewSender(c, s, func() time.Time { return tc.at })
			if err != nil {
				t.Fatal(err)
			}
			if _, err := snd.Authenticate(tc.msg); !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := NewSender(nil, s, nil); err == nil {
		t.Error("nil chain accepted")
	}
	if _, err := NewSender(c, Schedule{}, nil); !errors.Is(err, ErrInvalidSchedule) {
		t.Errorf("invalid schedule: %v", err)
	}
	// The last interval still works.
	snd, _ := NewSender(c, s, func() time.Time { return s.Start(11).Add(-1) })
	if p, err := snd.Authenticate(nil); err != nil || p.Interval != 10 {
		t.Errorf("last interval: %d, %v", p.Interval, err)
	}
}
