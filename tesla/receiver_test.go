package tesla

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// rig is a sender and a receiver with separate injected clocks.
type rig struct {
	t    *testing.T
	s    Schedule
	keys []Key
	sclk *fakeClock // sender's clock
	rclk *fakeClock // receiver's clock
	snd  *Sender
	rcv  *Receiver
}

func newRig(t *testing.T, n uint64, cfg func(*ReceiverConfig)) *rig {
	t.Helper()
	s := testSchedule()
	r := &rig{t: t, s: s, keys: naiveChain(testSeed, n), sclk: newClock(testT0), rclk: newClock(testT0)}
	var err error
	if r.snd, err = NewSender(mustChain(t, testSeed, n), s, r.sclk.Now); err != nil {
		t.Fatal(err)
	}
	c := ReceiverConfig{Commitment: r.keys[0], Schedule: s, MaxSkew: 0, MaxBuffered: 64, MaxSteps: 64, Now: r.rclk.Now}
	if cfg != nil {
		cfg(&c)
	}
	if r.rcv, err = NewReceiver(c); err != nil {
		t.Fatal(err)
	}
	return r
}

// send authenticates msg at sender time at.
func (r *rig) send(at time.Time, msg string) Packet {
	r.t.Helper()
	r.sclk.Set(at)
	p, err := r.snd.Authenticate([]byte(msg))
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// recv delivers p at receiver time at.
func (r *rig) recv(at time.Time, p Packet) (Result, error) {
	r.rclk.Set(at)
	return r.rcv.Receive(p)
}

// mustRecv delivers p and requires it to be accepted.
func (r *rig) mustRecv(at time.Time, p Packet) Result {
	r.t.Helper()
	res, err := r.recv(at, p)
	if err != nil {
		r.t.Fatalf("packet of interval %d: %v", p.Interval, err)
	}
	return res
}

// names lists "interval:message" for authenticated results.
func names(res Result) []string {
	var out []string
	for _, a := range res.Authenticated {
		out = append(out, fmt.Sprintf("%d:%s", a.Interval, a.Message))
	}
	return out
}

func rejected(res Result) []string {
	var out []string
	for _, a := range res.Rejected {
		if !errors.Is(a.Err, ErrBadMAC) {
			out = append(out, "wrong error: "+a.Err.Error())
		}
		out = append(out, fmt.Sprintf("%d:%s", a.Interval, a.Message))
	}
	return out
}

func wantNames(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

const transit = 100 * time.Millisecond

func TestEndToEndInOrder(t *testing.T) {
	r := newRig(t, 20, nil)
	var all []string
	for i := uint64(1); i <= 20; i++ {
		var got []string
		for j := range 3 {
			msg := fmt.Sprintf("m%d.%d", i, j)
			at := r.s.Start(i).Add(time.Duration(j) * 200 * time.Millisecond)
			res := r.mustRecv(at.Add(transit), r.send(at, msg))
			got = append(got, names(res)...)
			if len(res.Rejected) != 0 {
				t.Fatalf("rejected %v", rejected(res))
			}
		}
		// The first packet of interval i discloses K_{i-2}.
		var want []string
		if i > 2 {
			for j := range 3 {
				want = append(want, fmt.Sprintf("%d:m%d.%d", i-2, i-2, j))
			}
		}
		wantNames(t, fmt.Sprintf("interval %d", i), got, want...)
		all = append(all, got...)
	}
	if len(all) != 18*3 {
		t.Fatalf("%d messages authenticated", len(all))
	}
	if n := r.rcv.Buffered(); n != 6 {
		t.Fatalf("%d buffered, want the last two intervals' 6", n)
	}
	if idx, k := r.rcv.Known(); idx != 18 || k != r.keys[18] {
		t.Fatalf("known key %d", idx)
	}
}

func TestEndToEndOutOfOrder(t *testing.T) {
	r := newRig(t, 20, nil)
	p3 := r.send(mid(r.s, 3), "a")
	p4a := r.send(mid(r.s, 4), "b")
	p4b := r.send(mid(r.s, 4).Add(time.Millisecond), "c")
	at := mid(r.s, 4).Add(transit)
	for _, p := range []Packet{p4b, p3, p4a} {
		if res := r.mustRecv(at, p); len(res.Authenticated)+len(res.Rejected) != 0 {
			t.Fatalf("early release %v", names(res))
		}
	}
	// Interval 5 is lost; interval 6 discloses K_4.
	res := r.mustRecv(mid(r.s, 6).Add(transit), r.send(mid(r.s, 6), "d"))
	wantNames(t, "release", names(res), "3:a", "4:c", "4:b")
	if r.rcv.Buffered() != 1 {
		t.Fatalf("%d buffered", r.rcv.Buffered())
	}
}

func TestEndToEndLate(t *testing.T) {
	r := newRig(t, 20, nil)
	p3 := r.send(mid(r.s, 3), "late")
	// Received in interval 5: the sender may have disclosed K_3.
	if _, err := r.recv(r.s.Start(5).Add(time.Millisecond), p3); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("error %v, want ErrUnsafe", err)
	}
	if r.rcv.Buffered() != 0 {
		t.Fatal("unsafe packet buffered")
	}
	// Its disclosure (K_1) is still learnt.
	if idx, _ := r.rcv.Known(); idx != 1 {
		t.Fatalf("known %d, want 1", idx)
	}
	// The same packet in interval 4 is safe.
	r2 := newRig(t, 20, nil)
	r2.mustRecv(r2.s.Start(5).Add(-time.Millisecond), p3)
}

func TestEndToEndForgedMAC(t *testing.T) {
	r := newRig(t, 20, nil)
	at := mid(r.s, 3)
	good := r.send(at, "good")
	badMAC := r.send(at, "x")
	badMAC.MAC[15] ^= 0x80
	badMsg := r.send(at, "pay 1")
	badMsg.Message = []byte("pay 9")
	badInterval := r.send(mid(r.s, 4), "moved")
	badInterval.Interval = 3
	for _, p := range []Packet{good, badMAC, badMsg, badInterval} {
		r.mustRecv(mid(r.s, 4), p)
	}
	res := r.mustRecv(mid(r.s, 5), r.send(mid(r.s, 5), "next"))
	wantNames(t, "authenticated", names(res), "3:good")
	wantNames(t, "rejected", rejected(res), "3:x", "3:pay 9", "3:moved")
}

func TestEndToEndForgedKey(t *testing.T) {
	r := newRig(t, 20, nil)
	r.mustRecv(mid(r.s, 3), r.send(mid(r.s, 3), "a"))
	p := r.send(mid(r.s, 4), "b")
	forgedKey := p
	forgedKey.DisclosedKey[0] ^= 1
	forgedIndex := p
	forgedIndex.DisclosedIndex++
	for _, f := range []Packet{forgedKey, forgedIndex} {
		if _, err := r.recv(mid(r.s, 4), f); !errors.Is(err, ErrBadKey) {
			t.Fatalf("error %v, want ErrBadKey", err)
		}
	}
	if idx, _ := r.rcv.Known(); idx != 1 || r.rcv.Buffered() != 1 {
		t.Fatalf("forged key changed the receiver: known %d, buffered %d", idx, r.rcv.Buffered())
	}
	// Now the genuine one; then the forged key at the known index.
	r.mustRecv(mid(r.s, 4), p)
	if _, err := r.recv(mid(r.s, 4), forgedKey); !errors.Is(err, ErrBadKey) {
		t.Fatalf("error %v, want ErrBadKey", err)
	}
}

func TestEndToEndLostPackets(t *testing.T) {
	r := newRig(t, 20, nil)
	var got []string
	for i := uint64(1); i <= 12; i++ {
		p := r.send(mid(r.s, i), fmt.Sprint(i))
		if i >= 3 && i <= 8 {
			continue // lost
		}
		got = append(got, names(r.mustRecv(mid(r.s, i).Add(transit), p))...)
	}
	// Packet 9 discloses K_7, seven steps from K_0.
	wantNames(t, "authenticated", got, "1:1", "2:2", "9:9", "10:10")
}

func TestEndToEndSkew(t *testing.T) {
	const lead = 400 * time.Millisecond // the sender's clock is ahead
	for _, tc := range []struct {
		name    string
		skew    time.Duration
		sent    time.Time // sender's time
		delay   time.Duration
		wantErr error
	}{
		// Sent early in interval 4, arriving while the receiver's clock
		// still says interval 3.
		{"ahead within bound", 500 * time.Millisecond, testT0.Add(4*time.Second + 100*time.Millisecond), 50 * time.Millisecond, nil},
		{"ahead unbounded", 0, testT0.Add(4*time.Second + 100*time.Millisecond), 50 * time.Millisecond, ErrFromFuture},
		// Sent late in interval 3 and delayed 1.2 s: the sender is in
		// interval 5 and may have disclosed K_3. Only a receiver that
		// bounds the skew correctly notices.
		{"delayed with skew bound", 500 * time.Millisecond, testT0.Add(3*time.Second + 900*time.Millisecond), 1200 * time.Millisecond, ErrUnsafe},
		{"delayed, skew underestimated", 0, testT0.Add(3*time.Second + 900*time.Millisecond), 1200 * time.Millisecond, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 20, func(c *ReceiverConfig) { c.MaxSkew = tc.skew })
			p := r.send(tc.sent, "m")
			if _, err := r.recv(tc.sent.Add(-lead).Add(tc.delay), p); !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// TestAttackDisclosedKey: an attacker who saw K_3 disclosed (in interval
// 5) forges a message for interval 3. The receiver's clock is as far behind
// the sender's as MaxSkew allows.
func TestAttackDisclosedKey(t *testing.T) {
	const skew = 300 * time.Millisecond
	for _, tc := range []struct {
		name     string
		disclose bool // whether the forgery carries the disclosed K_3
		want     error
	}{
		{"with the disclosed key", true, ErrKeyAlreadyDisclosed},
		{"without disclosure", false, ErrUnsafe},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 20, func(c *ReceiverConfig) { c.MaxSkew = skew })
			sent := r.s.Start(5).Add(time.Millisecond)
			p5 := r.send(sent, "genuine")
			if p5.DisclosedIndex != 3 {
				t.Fatal("setup")
			}
			forged := Packet{Interval: 3, Message: []byte("evil")}
			forged.MAC = MAC(p5.DisclosedKey, forged.Message)
			forged.DisclosedKey = r.keys[0]
			if tc.disclose {
				forged.DisclosedIndex, forged.DisclosedKey = p5.DisclosedIndex, p5.DisclosedKey
			}
			if _, err := r.recv(sent.Add(-skew), forged); !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if r.rcv.Buffered() != 0 {
				t.Fatal("forgery buffered")
			}
		})
	}
}

func TestReceiverErrors(t *testing.T) {
	keys := naiveChain(testSeed, 100)
	s := testSchedule()
	pkt := func(interval, disclosed uint64) Packet {
		return Packet{Interval: interval, DisclosedIndex: disclosed, DisclosedKey: keys[disclosed], MAC: MAC(keys[interval], nil)}
	}
	for _, tc := range []struct {
		name  string
		cfg   func(*ReceiverConfig)
		setup []Packet // accepted first, at the same time
		at    time.Time
		p     Packet
		want  error
	}{
		{name: "accepted", at: mid(s, 3), p: pkt(3, 1)},
		{name: "message too large", at: mid(s, 3), p: Packet{Interval: 3, Message: make([]byte, MaxMessageSize+1)}, want: ErrMessageTooLarge},
		{name: "forged key", at: mid(s, 3), p: Packet{Interval: 3, DisclosedIndex: 1, DisclosedKey: keys[2]}, want: ErrBadKey},
		{name: "wrong commitment", at: mid(s, 3), p: Packet{Interval: 3, DisclosedKey: keys[1]}, want: ErrBadKey},
		{name: "too many steps", cfg: func(c *ReceiverConfig) { c.MaxSteps = 10 }, at: mid(s, 50), p: pkt(50, 11), want: ErrTooManySteps},
		{name: "default max steps", cfg: func(c *ReceiverConfig) { c.MaxSteps = 0 }, at: mid(s, 3), p: Packet{Interval: 3, DisclosedIndex: DefaultMaxSteps + 1}, want: ErrTooManySteps},
		{name: "interval 0", at: mid(s, 1), p: pkt(0, 0), want: ErrKeyAlreadyDisclosed},
		{name: "key known", at: mid(s, 5), setup: []Packet{pkt(5, 3)}, p: pkt(3, 0), want: ErrKeyAlreadyDisclosed},
		{name: "key disclosed by itself", at: mid(s, 5), p: pkt(3, 3), want: ErrKeyAlreadyDisclosed},
		{name: "from future", at: mid(s, 3), p: pkt(4, 0), want: ErrFromFuture},
		{name: "far future", at: mid(s, 3), p: Packet{Interval: 1 << 63, DisclosedKey: keys[0]}, want: ErrFromFuture},
		{name: "before start", at: testT0.Add(-time.Hour), p: pkt(1, 0), want: ErrFromFuture},
		{name: "unsafe", at: mid(s, 5), p: pkt(3, 0), want: ErrUnsafe},
		{name: "unsafe by skew", cfg: func(c *ReceiverConfig) { c.MaxSkew = time.Second }, at: mid(s, 4), p: pkt(3, 0), want: ErrUnsafe},
		{name: "buffer full", cfg: func(c *ReceiverConfig) { c.MaxBuffered = 2 }, at: mid(s, 3), setup: []Packet{pkt(3, 0), pkt(3, 0)}, p: pkt(3, 0), want: ErrBufferFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ReceiverConfig{Commitment: keys[0], Schedule: s, MaxSteps: 100, Now: func() time.Time { return tc.at }}
			if tc.cfg != nil {
				tc.cfg(&c)
			}
			r, err := NewReceiver(c)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.setup {
				if _, err := r.Receive(p); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			before := r.Buffered()
			_, err = r.Receive(tc.p)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if r.Buffered() != before {
				t.Fatal("refused packet buffered")
			}
		})
	}
}

func TestReceiverConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    ReceiverConfig
		want error
	}{
		{"bad schedule", ReceiverConfig{}, ErrInvalidSchedule},
		{"negative skew", ReceiverConfig{Schedule: testSchedule(), MaxSkew: -1}, ErrInvalidConfig},
		{"negative buffer", ReceiverConfig{Schedule: testSchedule(), MaxBuffered: -1}, ErrInvalidConfig},
	} {
		if _, err := NewReceiver(tc.c); !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
	r, err := NewReceiver(ReceiverConfig{Schedule: testSchedule()})
	if err != nil {
		t.Fatal(err)
	}
	if r.maxBuffered != DefaultMaxBuffered || r.maxSteps != DefaultMaxSteps || r.now == nil {
		t.Fatal("defaults not applied")
	}
}

// TestReceiverBufferRelease: a full buffer refuses packets until a
// disclosure settles some, and never holds more than MaxBuffered.
func TestReceiverBufferRelease(t *testing.T) {
	r := newRig(t, 20, func(c *ReceiverConfig) { c.MaxBuffered = 3 })
	for j := range 3 {
		r.mustRecv(mid(r.s, 3), r.send(mid(r.s, 3), fmt.Sprint(j)))
	}
	p4 := r.send(mid(r.s, 4), "4")
	if _, err := r.recv(mid(r.s, 4), p4); !errors.Is(err, ErrBufferFull) {
		t.Fatalf("error %v, want ErrBufferFull", err)
	}
	if r.rcv.Buffered() != 3 {
		t.Fatalf("%d buffered", r.rcv.Buffered())
	}
	// Interval 5 discloses K_3: the three are released and p5 fits.
	res := r.mustRecv(mid(r.s, 5), r.send(mid(r.s, 5), "5"))
	wantNames(t, "release", names(res), "3:0", "3:1", "3:2")
	if r.rcv.Buffered() != 1 {
		t.Fatalf("%d buffered", r.rcv.Buffered())
	}
}

// TestReceiverResultWithError: a packet refused for itself still delivers
// what its valid disclosure released.
func TestReceiverResultWithError(t *testing.T) {
	r := newRig(t, 20, nil)
	r.mustRecv(mid(r.s, 3), r.send(mid(r.s, 3), "a"))
	late := r.send(mid(r.s, 5), "late")
	res, err := r.recv(mid(r.s, 7), late)
	if !errors.Is(err, ErrUnsafe) {
		t.Fatalf("error %v", err)
	}
	wantNames(t, "released", names(res), "3:a")
}

func TestReceiverDuplicatesAndCopies(t *testing.T) {
	r := newRig(t, 20, nil)
	p := r.send(mid(r.s, 3), "dup")
	buf := []byte("dup")
	p.Message = buf
	r.mustRecv(mid(r.s, 3), p)
	r.mustRecv(mid(r.s, 3), p)
	buf[0] = 'X' // the receiver must have copied the message
	res := r.mustRecv(mid(r.s, 5), r.send(mid(r.s, 5), "x"))
	wantNames(t, "duplicates", names(res), "3:dup", "3:dup")
}

// TestReceiverKeyWalk settles many intervals with one disclosure, with good
// and bad MACs interleaved, and checks every verdict.
func TestReceiverKeyWalk(t *testing.T) {
	r := newRig(t, 40, nil)
	var wantOK, wantBad []string
	var got Result
	for i := uint64(1); i <= 30; i++ {
		p := r.send(mid(r.s, i), fmt.Sprint(i))
		if i%3 == 0 {
			p.MAC[0] ^= 1
			wantBad = append(wantBad, fmt.Sprintf("%d:%d", i, i))
		} else {
			wantOK = append(wantOK, fmt.Sprintf("%d:%d", i, i))
		}
		p.DisclosedIndex, p.DisclosedKey = 0, r.keys[0] // withhold disclosures
		r.mustRecv(mid(r.s, i), p)
	}
	last := r.send(mid(r.s, 32), "32")
	res := r.mustRecv(mid(r.s, 32), last) // discloses K_30
	got.Authenticated = append(got.Authenticated, res.Authenticated...)
	got.Rejected = append(got.Rejected, res.Rejected...)
	wantNames(t, "authenticated", names(got), wantOK...)
	wantNames(t, "rejected", rejected(got), wantBad...)
}

// TestConcurrentUse runs senders, receivers and chain reads from many
// goroutines; run it with -race.
func TestConcurrentUse(t *testing.T) {
	s := testSchedule()
	keys := naiveChain(testSeed, 400)
	c := mustChain(t, testSeed, 400)
	clk := newClock(mid(s, 1))
	snd, err := NewSender(c, s, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := NewReceiver(ReceiverConfig{Commitment: c.Commitment(), Schedule: s, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				if k, err := c.Key(uint64((g*97 + i*31) % 401)); err != nil || k != keys[(g*97+i*31)%401] {
					t.Errorf("Key: %v", err)
					return
				}
				p, err := snd.Authenticate([]byte{byte(g), byte(i)})
				if err != nil {
					t.Error(err)
					return
				}
				res, _ := rcv.Receive(p)
				mu.Lock()
				got += len(res.Authenticated)
				mu.Unlock()
				if g == 0 && i%10 == 9 {
					clk.Advance(s.Interval)
				}
			}
		})
	}
	wg.Wait()
	if got == 0 {
		t.Fatal("nothing authenticated")
	}
}
