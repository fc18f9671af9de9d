package tesla

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

func FuzzPacket(f *testing.F) {
	good, _ := (&Packet{Interval: 3, DisclosedIndex: 1, Message: []byte("hello")}).MarshalBinary()
	empty, _ := (&Packet{}).MarshalBinary()
	f.Add(good)
	f.Add(empty)
	f.Add([]byte{})
	f.Add([]byte{0x01})
	f.Add(good[:HeaderSize])
	f.Add(append(bytes.Clone(good), 0))
	long := bytes.Clone(empty)
	long[offLength] = 0xff
	f.Add(long)
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Packet
		if err := p.UnmarshalBinary(data); err != nil {
			var pe *ParseError
			if !errors.Is(err, ErrMalformed) || !errors.As(err, &pe) || pe.Offset < 0 || pe.Offset > len(data) {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		enc, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("Marshal(Unmarshal(x)) != x\n%x\n%x", enc, data)
		}
	})
}

// Receiver fuzzing: a byte program drives a real sender, an attacker and a
// receiver sharing a clock. Ops (first byte mod 6, then arguments):
//
//	0 a        advance the clock by a × 50 ms
//	1 f l m…   the sender authenticates m (l mod 16 bytes); delivered
//	           unless f is odd (lost)
//	2 j        replay sent packet j
//	3 j o x    deliver sent packet j with encoded byte o xored with x
//	4 l b…     deliver the packet encoded in the next l mod 128 bytes
//	5 w j l m… forge m for interval j with a key the sender has already
//	           disclosed (any key below the newest disclosed one); the
//	           forgery discloses the newest key if w is odd, else nothing
//
// The first byte sets the receiver's clock offset within ±MaxSkew.
const (
	fuzzSkew     = 300 * time.Millisecond
	fuzzBuffered = 8
	fuzzSteps    = 16
)

type fuzzProgram struct{ data []byte }

func (p *fuzzProgram) byte() byte {
	if len(p.data) == 0 {
		return 0
	}
	b := p.data[0]
	p.data = p.data[1:]
	return b
}

func (p *fuzzProgram) bytes(n int) []byte {
	n = min(n, len(p.data))
	b := p.data[:n]
	p.data = p.data[n:]
	return bytes.Clone(b)
}

// receiverSeeds are FuzzReceiver's seed programs.
func receiverSeeds() [][]byte {
	var seeds [][]byte
	// Real sender packets, in order, lost, replayed, mutated, late.
	seeds = append(seeds, []byte{128, 0, 22, 1, 0, 3, 'a', 'b', 'c', 0, 20, 1, 0, 1, 'd', 0, 20, 1, 0, 1, 'e', 0, 20, 1, 0, 0})
	seeds = append(seeds, []byte{0, 0, 30, 1, 0, 2, 'h', 'i', 1, 1, 1, 'x', 0, 20, 1, 0, 1, 'y', 2, 0, 0, 40, 1, 0, 0})
	seeds = append(seeds, []byte{255, 0, 21, 1, 0, 1, 'm', 3, 0, 10, 1, 0, 20, 3, 0, 70, 4, 0, 20, 1, 0, 1, 'n', 0, 20, 1, 0, 1, 'o'})
	// Forgeries with disclosed keys. In the second, the sender's interval-4
	// packet (disclosing K_2) is lost, the receiver is 300 ms behind, and a
	// forgery for interval 2 without the key must be refused as unsafe.
	seeds = append(seeds, []byte{200, 0, 25, 1, 0, 4, 'p', 'a', 'y', '1', 0, 40, 1, 0, 0, 5, 1, 1, 4, 'e', 'v', 'i', 'l', 0, 20, 1, 0, 0})
	seeds = append(seeds, []byte{0, 0, 50, 1, 0, 1, 'a', 0, 20, 1, 1, 1, 'b', 5, 0, 2, 4, 'e', 'v', 'i', 'l', 0, 20, 1, 0, 1, 'c', 0, 20, 1, 0, 1, 'd'})
	seeds = append(seeds, []byte{60, 0, 30, 1, 0, 1, 'q', 1, 0, 1, 'r', 1, 0, 1, 's', 1, 0, 1, 't', 1, 0, 1, 'u', 1, 0, 1, 'v', 1, 0, 1, 'w', 1, 0, 1, 'x', 1, 0, 1, 'y', 0, 60, 1, 0, 0})
	raw, _ := (&Packet{Interval: 2, Message: []byte("z")}).MarshalBinary()
	seeds = append(seeds, append([]byte{128, 0, 30, 4, byte(len(raw))}, raw...))
	return seeds
}

func FuzzReceiver(f *testing.F) {
	for _, s := range receiverSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) { runReceiverProgram(t, data) })
}

// runReceiverProgram runs a program and checks the receiver's invariants.
// It returns how many messages were authenticated and rejected.
func runReceiverProgram(t *testing.T, data []byte) (authenticated, rejected int) {
	prog := &fuzzProgram{data: data}
	s := testSchedule()
	clk := newClock(s.Start(1))
	offset := time.Duration(int(prog.byte())-128) * fuzzSkew / 128 // in [-MaxSkew, MaxSkew)
	chain := mustChain(t, testSeed, 64)
	snd, err := NewSender(chain, s, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := NewReceiver(ReceiverConfig{
		Commitment: chain.Commitment(), Schedule: s, MaxSkew: fuzzSkew,
		MaxBuffered: fuzzBuffered, MaxSteps: fuzzSteps,
		Now: func() time.Time { return clk.Now().Add(offset) },
	})
	if err != nil {
		t.Fatal(err)
	}
	genuine := map[string]bool{}
	var sent []Packet
	var disclosed uint64 // newest key index the sender has published
	var disclosedKey Key

	deliver := func(p Packet, fresh bool) {
		res, err := rcv.Receive(p)
		if n := rcv.Buffered(); n > fuzzBuffered {
			t.Fatalf("%d packets buffered, limit %d", n, fuzzBuffered)
		}
		authenticated += len(res.Authenticated)
		rejected += len(res.Rejected)
		for _, a := range res.Authenticated {
			if !genuine[fmt.Sprintf("%d/%x", a.Interval, a.Message)] {
				t.Fatalf("authenticated a message the sender did not send: interval %d, %q", a.Interval, a.Message)
			}
		}
		for _, r := range res.Rejected {
			if !errors.Is(r.Err, ErrBadMAC) {
				t.Fatalf("rejection %v", r.Err)
			}
		}
		// A genuine packet delivered at once is refused only for lack
		// of room or because the receiver fell too far behind.
		if fresh && err != nil && !errors.Is(err, ErrBufferFull) && !errors.Is(err, ErrTooManySteps) {
			t.Fatalf("fresh genuine packet refused: %v", err)
		}
	}

	for len(prog.data) > 0 {
		switch prog.byte() % 6 {
		case 0:
			clk.Advance(time.Duration(prog.byte()) * 50 * time.Millisecond)
		case 1:
			lost := prog.byte()%2 == 1
			msg := prog.bytes(int(prog.byte() % 16))
			p, err := snd.Authenticate(msg)
			if err != nil {
				continue
			}
			genuine[fmt.Sprintf("%d/%x", p.Interval, p.Message)] = true
			sent = append(sent, p)
			if p.DisclosedIndex > disclosed {
				disclosed, disclosedKey = p.DisclosedIndex, p.DisclosedKey
			}
			if !lost {
				deliver(p, true)
			}
		case 2:
			if len(sent) > 0 {
				deliver(sent[int(prog.byte())%len(sent)], false)
			}
		case 3:
			if len(sent) == 0 {
				continue
			}
			enc, _ := sent[int(prog.byte())%len(sent)].MarshalBinary()
			enc[int(prog.byte())%len(enc)] ^= prog.byte()
			var p Packet
			if p.UnmarshalBinary(enc) == nil {
				deliver(p, false)
			}
		case 4:
			var p Packet
			if p.UnmarshalBinary(prog.bytes(int(prog.byte()%128))) == nil {
				deliver(p, false)
			}
		case 5:
			withKey := prog.byte()%2 == 1
			j := uint64(prog.byte()) % (disclosed + 1)
			k := fN(disclosedKey, disclosed-j)
			msg := prog.bytes(int(prog.byte() % 16))
			p := Packet{Interval: j, MAC: MAC(k, msg), DisclosedKey: chain.Commitment(), Message: msg}
			if withKey && len(sent) > 0 {
				last := sent[len(sent)-1]
				p.DisclosedIndex, p.DisclosedKey = last.DisclosedIndex, last.DisclosedKey
			}
			deliver(p, false)
		}
	}
	return authenticated, rejected
}

// TestReceiverSeedPrograms makes sure the fuzz harness exercises both
// outcomes, so that its checks are not vacuous.
func TestReceiverSeedPrograms(t *testing.T) {
	var ok, bad int
	for _, s := range receiverSeeds() {
		a, r := runReceiverProgram(t, s)
		ok += a
		bad += r
	}
	if ok < 10 || bad < 1 {
		t.Fatalf("seed programs authenticated %d and rejected %d messages", ok, bad)
	}
}
