package coupons

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseMeter(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Meter
	}{
		{"bytes 1MiB", Meter{MeterBytes, 1 << 20}},
		{"bytes 16384", Meter{MeterBytes, 16384}},
		{"bytes 64KiB", Meter{MeterBytes, 64 << 10}},
		{"bytes 2 MB", Meter{MeterBytes, 2e6}},
		{"events 10", Meter{MeterEvents, 10}},
		{"seconds 1", Meter{MeterSeconds, 1}},
		{"seconds 2m", Meter{MeterSeconds, 120}},
	} {
		got, err := ParseMeter(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseMeter(%q) = %v, %v; want %v", c.in, got, err, c.want)
			continue
		}
		if again, err := ParseMeter(got.String()); err != nil || again != got {
			t.Errorf("round trip of %q: %v %v", got.String(), again, err)
		}
	}
	for _, bad := range []string{"", "bytes", "bytes 0", "bytes -1", "bytes 1TiB", "bytes 2000GiB", "frames 10", "events 1.5",
		"events 2000000", "seconds 90000", "seconds 2d", "events ten"} {
		if _, err := ParseMeter(bad); !errors.Is(err, ErrBadMeter) {
			t.Errorf("ParseMeter(%q): %v, want ErrBadMeter", bad, err)
		}
	}
}

// eventStarts runs an EventScanner over the stream written in pieces of
// size n and returns the offsets where it found events beginning.
func eventStarts(stream []byte, n int) []int {
	var s EventScanner
	var out []int
	for off := 0; off < len(stream); off += n {
		p := stream[off:min(off+n, len(stream))]
		base := off
		for len(p) > 0 {
			k, ev := s.Scan(p)
			if !ev {
				break
			}
			out = append(out, base+k)
			s.Begin()
			p, base = p[k:], base+k
		}
	}
	return out
}

// TestEventScannerCountsEventsNotKeepAlives: events are blocks with a
// field line, whatever the line endings and however the stream is cut;
// comment-only blocks (keep-alives) and blank lines are not events.
func TestEventScannerCountsEventsNotKeepAlives(t *testing.T) {
	stream := []byte(": keep-alive\n\n" +
		"data: one\n\n" +
		"event: x\ndata: two\ndata: more\n\n" +
		": comment\ndata: three\r\n\r\n" +
		"\n\n" +
		"id: 4\rdata: four\r\r" +
		": only a comment\r\n\r\n" +
		"data:five\n\n" +
		"data: six") // unterminated: it began
	want := []int{
		bytes.Index(stream, []byte("data: one")),
		bytes.Index(stream, []byte("event: x")),
		bytes.Index(stream, []byte("data: three")),
		bytes.Index(stream, []byte("id: 4")),
		bytes.Index(stream, []byte("data:five")),
		bytes.Index(stream, []byte("data: six")),
	}
	for n := 1; n <= len(stream); n++ {
		got := eventStarts(stream, n)
		if len(got) != len(want) {
			t.Fatalf("pieces of %d: events at %v, want %v", n, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("pieces of %d: events at %v, want %v", n, got, want)
			}
		}
	}
}

func TestNeedTopupEvent(t *testing.T) {
	w := newWorld(t)
	id := LaneID{Book: w.book.Book.ID(), Lane: 1}
	n := &NeedTopup{Lane: id.String(), Coupons: 16, Units: 8, Price: 2, Charged: 8, Topup: TopupPath}
	ev := AppendNeedTopupEvent(nil, n)
	checkGolden(t, "need-topup.txt", ev)
	// One event, whose data parses back.
	if got := eventStarts(ev, 3); len(got) != 1 || got[0] != 0 {
		t.Fatalf("the event scans as %v", got)
	}
	line := strings.Split(string(ev), "\n")[1]
	back, err := ParseNeedTopup([]byte(strings.TrimPrefix(line, "data: ")))
	if err != nil || *back != *n {
		t.Fatalf("ParseNeedTopup: %+v %v", back, err)
	}
	for _, bad := range []string{`{}`, `{"lane":"x","coupons":1,"units":1,"price":1,"topup":"` + TopupPath + `"}`,
		`{"lane":"` + id.String() + `","coupons":1,"units":1,"price":1,"topup":"/elsewhere"}`, `not json`} {
		if _, err := ParseNeedTopup([]byte(bad)); !errors.Is(err, ErrBadMeter) {
			t.Errorf("ParseNeedTopup(%s): %v", bad, err)
		}
	}
}

func FuzzParseMeter(f *testing.F) {
	for _, s := range []string{"bytes 1MiB", "events 10", "seconds 1", "seconds 2m", "bytes 0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMeter(s)
		if err != nil {
			return
		}
		back, err := ParseMeter(m.String())
		if err != nil || back != m {
			t.Fatalf("%q → %v → %v %v", s, m, back, err)
		}
	})
}

func FuzzParseNeedTopup(f *testing.F) {
	f.Add([]byte(`{"lane":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.1","coupons":2,"units":2,"price":1,"charged":0,"topup":"/.well-known/ecoupons/topup"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := ParseNeedTopup(data)
		if err != nil {
			return
		}
		ev := AppendNeedTopupEvent(nil, n)
		line := bytes.SplitN(ev, []byte("\n"), 3)[1]
		back, err := ParseNeedTopup(bytes.TrimPrefix(line, []byte("data: ")))
		if err != nil || *back != *n {
			t.Fatalf("round trip: %+v %v", back, err)
		}
	})
}

// FuzzEventScanner: however a stream is cut, the scanner finds the same
// events, and never more than the stream has lines.
func FuzzEventScanner(f *testing.F) {
	f.Add([]byte("data: a\n\n: k\n\ndata: b\r\n\r\n"), 3)
	f.Fuzz(func(t *testing.T, stream []byte, n int) {
		if n <= 0 || n > len(stream) {
			return
		}
		whole, cut := eventStarts(stream, len(stream)), eventStarts(stream, n)
		if len(whole) != len(cut) {
			t.Fatalf("whole: %v, in pieces of %d: %v", whole, n, cut)
		}
		for i := range whole {
			if whole[i] != cut[i] {
				t.Fatalf("whole: %v, in pieces of %d: %v", whole, n, cut)
			}
		}
	})
}
