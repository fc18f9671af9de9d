package tesla

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func samplePacket() Packet {
	p := Packet{Interval: 0x0102030405060708, DisclosedIndex: 0x1112131415161718, Message: []byte("hello")}
	for i := range p.MAC {
		p.MAC[i] = 0xa0 + byte(i)
	}
	for i := range p.DisclosedKey {
		p.DisclosedKey[i] = 0xc0 + byte(i)
	}
	return p
}

func TestPacketLayout(t *testing.T) {
	p := samplePacket()
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x01, 1, 2, 3, 4, 5, 6, 7, 8}
	want = append(want, p.MAC[:]...)
	want = append(want, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18)
	want = append(want, p.DisclosedKey[:]...)
	want = append(want, 0, 0, 0, 5)
	want = append(want, "hello"...)
	if !bytes.Equal(b, want) {
		t.Fatalf("encoding\n%x\nwant\n%x", b, want)
	}
	if len(b) != HeaderSize+5 {
		t.Fatalf("length %d", len(b))
	}
	var q Packet
	if err := q.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if q.Interval != p.Interval || q.MAC != p.MAC || q.DisclosedIndex != p.DisclosedIndex ||
		q.DisclosedKey != p.DisclosedKey || !bytes.Equal(q.Message, p.Message) {
		t.Fatalf("round trip: %+v", q)
	}
	b[HeaderSize] = 'j'
	if string(q.Message) != "hello" {
		t.Fatal("UnmarshalBinary retained its input")
	}
	pre := []byte("xy")
	if a, _ := p.AppendBinary(pre); !bytes.Equal(a[2:], want) || string(a[:2]) != "xy" {
		t.Fatal("AppendBinary")
	}
}

func TestPacketEmptyAndMaxMessage(t *testing.T) {
	for _, n := range []int{0, 1, MaxMessageSize} {
		p := Packet{Interval: 1, Message: make([]byte, n)}
		b, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var q Packet
		if err := q.UnmarshalBinary(b); err != nil || len(q.Message) != n {
			t.Fatalf("n=%d: %v, %d", n, err, len(q.Message))
		}
	}
	p := Packet{Message: make([]byte, MaxMessageSize+1)}
	if _, err := p.MarshalBinary(); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("oversized marshal: %v", err)
	}
}

func TestUnmarshalErrors(t *testing.T) {
	good, _ := (&Packet{Interval: 3, Message: []byte("abc")}).MarshalBinary()
	withLen := func(n uint32) []byte {
		b := append([]byte{}, good[:HeaderSize]...)
		binary.BigEndian.PutUint32(b[offLength:], n)
		return b
	}
	badVersion := append([]byte{}, good...)
	badVersion[0] = 0x02
	for _, tc := range []struct {
		name   string
		in     []byte
		err    error
		offset int
	}{
		{"empty", nil, ErrTruncated, 0},
		{"version only", good[:1], ErrTruncated, 1},
		{"short header", good[:HeaderSize-1], ErrTruncated, HeaderSize - 1},
		{"short message", good[:len(good)-1], ErrTruncated, len(good) - 1},
		{"bad version", badVersion, ErrBadVersion, 0},
		{"zero version", []byte{0}, ErrBadVersion, 0},
		{"oversized", withLen(MaxMessageSize + 1), ErrMessageTooLarge, offLength},
		{"huge length", withLen(0xffffffff), ErrMessageTooLarge, offLength},
		{"trailing", append(append([]byte{}, good...), 0), ErrTrailingData, len(good)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := samplePacket()
			err := p.UnmarshalBinary(tc.in)
			if !errors.Is(err, tc.err) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v, want %v and ErrMalformed", err, tc.err)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Offset != tc.offset {
				t.Fatalf("error %v, want offset %d", err, tc.offset)
			}
			if s := samplePacket(); p.Interval != s.Interval || !bytes.Equal(p.Message, s.Message) {
				t.Fatal("packet modified on error")
			}
		})
	}
}
