package coupons

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Metered responses (sessions, docs/PROTOCOL.md §14 "Sessions"): a route
// charges its price per unit of a response (so many bytes, SSE events or
// seconds) instead of per request. The client pre-pays a window of units
// with its payment; the gate counts units down as the body flows, holds
// the stream when the window is spent until the client tops up (a paid
// POST to TopupPath on the same lane), and credits the unused window back
// to the lane when the response ends.

// Meter kinds: what a unit of a metered response counts.
const (
	MeterBytes   = "bytes"   // Per bytes of the body
	MeterEvents  = "events"  // Per server-sent events (a block with a field line)
	MeterSeconds = "seconds" // Per seconds of streaming (time held waiting for a top-up not counted)
)

// Bounds of Meter.Per, per kind.
const (
	MaxMeterBytes   = 1 << 40
	MaxMeterEvents  = 1 << 20
	MaxMeterSeconds = 86400
)

// Header fields of metered responses.
const (
	// HeaderMeter names the meter of a metered response (and of the
	// challenge of a metered route): "<kind> <per>", e.g. "bytes 1048576".
	HeaderMeter = "ECoupon-Meter"
	// HeaderWindow is the number of units the response starts with (what
	// the payment pre-paid).
	HeaderWindow = "ECoupon-Window"
	// HeaderCharged is a trailer: the units the response was charged.
	HeaderCharged = "ECoupon-Charged"
	// HeaderEnd is a trailer: how the metered response ended (an End…
	// value).
	HeaderEnd = "ECoupon-End"
)

// How a metered response ended (the HeaderEnd trailer).
const (
	EndComplete    = "complete"     // the upstream's body was delivered whole
	EndHoldTimeout = "hold_timeout" // held with an empty window longer than the route's hold
	EndUpstream    = "upstream"     // the upstream failed; the unit in progress was credited back
)

// TopupPath is where a client pays the next window of a metered response
// in flight on a lane: a POST with a payment on that lane.
const TopupPath = "/.well-known/ecoupons/topup"

// NeedTopupEvent is the SSE event type the gate writes into a metered
// event stream whose window is spent.
const NeedTopupEvent = "need-topup"

// ErrBadMeter is a malformed meter or need-topup event.
var ErrBadMeter = errors.New("coupons: malformed meter")

// Meter is what a unit of a metered response counts.
type Meter struct {
	Kind string // MeterBytes, MeterEvents or MeterSeconds
	Per  uint64 // bytes, events or seconds per unit, at least 1
}

// String returns the meter's wire form, "<kind> <per>" with per in
// decimal.
func (m Meter) String() string { return m.Kind + " " + strconv.FormatUint(m.Per, 10) }

// ParseMeter parses "<kind> <per>": a kind of MeterBytes, MeterEvents or
// MeterSeconds and a positive decimal within the kind's bound (MaxMeter…).
// A bytes count may end in KiB, MiB or GiB (or kB, MB, GB) and a seconds
// count in s, m or h. Errors match ErrBadMeter.
func ParseMeter(s string) (Meter, error) {
	kind, n, ok := strings.Cut(strings.TrimSpace(s), " ")
	n = strings.TrimSpace(n)
	if !ok || n == "" {
		return Meter{}, fmt.Errorf("%w: %q is not '<bytes|events|seconds> <count>'", ErrBadMeter, clip(s))
	}
	var limit, mult uint64 = 0, 1
	switch kind {
	case MeterBytes:
		limit = MaxMeterBytes
		for _, sfx := range []struct {
			s string
			m uint64
		}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
			if strings.HasSuffix(n, sfx.s) {
				n, mult = strings.TrimSpace(strings.TrimSuffix(n, sfx.s)), sfx.m
				break
			}
		}
	case MeterEvents:
		limit = MaxMeterEvents
	case MeterSeconds:
		limit = MaxMeterSeconds
		for _, sfx := range []struct {
			s string
			m uint64
		}{{"s", 1}, {"m", 60}, {"h", 3600}} {
			if strings.HasSuffix(n, sfx.s) {
				n, mult = strings.TrimSuffix(n, sfx.s), sfx.m
				break
			}
		}
	default:
		return Meter{}, fmt.Errorf("%w: kind %q: want bytes, events or seconds", ErrBadMeter, clip(kind))
	}
	v, err := strconv.ParseUint(n, 10, 64)
	if err != nil || v == 0 || v > limit/mult {
		return Meter{}, fmt.Errorf("%w: %s count %q: want a whole number from 1 to %d", ErrBadMeter, kind, clip(n), limit/mult)
	}
	return Meter{Kind: kind, Per: v * mult}, nil
}

// NeedTopup is the data of a need-topup event: the window of a metered
// response on Lane is spent; paying Coupons more on it at Topup resumes
// the stream with Units more units.
type NeedTopup struct {
	Lane    string `json:"lane"`    // the lane's wire form (LaneID.String)
	Coupons uint32 `json:"coupons"` // coupons a top-up pays: a window of units at the route's price
	Units   uint32 `json:"units"`   // units a top-up adds
	Price   uint32 `json:"price"`   // coupons per unit
	Charged uint32 `json:"charged"` // units charged so far
	Topup   string `json:"topup"`   // the path to POST the payment to (TopupPath)
}

// AppendNeedTopupEvent appends the SSE event "event: need-topup" with n as
// its data (one line of JSON) and the blank line ending it.
func AppendNeedTopupEvent(dst []byte, n *NeedTopup) []byte {
	j, _ := json.Marshal(n) // a struct of strings and numbers: no error
	dst = append(dst, "event: "+NeedTopupEvent+"\ndata: "...)
	dst = append(dst, j...)
	return append(dst, "\n\n"...)
}

// ParseNeedTopup parses the data of a need-topup event. Errors match
// ErrBadMeter.
func ParseNeedTopup(data []byte) (*NeedTopup, error) {
	var n NeedTopup
	if len(data) > 1024 {
		return nil, fmt.Errorf("%w: need-topup data of %d bytes", ErrBadMeter, len(data))
	}
	if err := json.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("%w: need-topup data: %v", ErrBadMeter, err)
	}
	if _, err := ParseLaneID(n.Lane); err != nil {
		return nil, fmt.Errorf("%w: need-topup lane: %v", ErrBadMeter, err)
	}
	if n.Coupons == 0 || n.Units == 0 || n.Price == 0 || n.Topup != TopupPath {
		return nil, fmt.Errorf("%w: need-topup needs coupons, units, price and topup %s", ErrBadMeter, TopupPath)
	}
	return &n, nil
}

// EventScanner finds where server-sent events begin in a stream written in
// pieces (the HTML Living Standard's event-stream format): an event is a
// block of lines ended by a blank line that holds at least one line other
// than a comment (':'); a block of comments only (keep-alives) is not an
// event. Lines end in CRLF, LF or CR. Its zero value is at the start of a
// stream.
type EventScanner struct {
	midLine bool // inside a line
	inEvent bool // the current block has begun an event (Begin)
	skipLF  bool // the last line ended in CR: an LF next is part of it
}

// Scan returns how many bytes of p come before the first byte of an event
// not yet begun, and whether one begins at p[n]. The caller counts that
// event, calls Begin, and scans on from p[n:].
func (s *EventScanner) Scan(p []byte) (n int, event bool) {
	i := 0
	for i < len(p) {
		if s.skipLF {
			s.skipLF = false
			if p[i] == '\n' {
				i++
				continue
			}
		}
		if !s.midLine {
			switch p[i] {
			case '\n':
				s.inEvent = false // a blank line ends the block
				i++
				continue
			case '\r':
				s.inEvent, s.skipLF = false, true
				i++
				continue
			case ':':
			default:
				if !s.inEvent {
					return i, true
				}
			}
			s.midLine = true
		}
		j := indexEOL(p[i:])
		if j < 0 {
			return len(p), false
		}
		i += j
		s.skipLF = p[i] == '\r'
		s.midLine = false
		i++
	}
	return len(p), false
}

// Begin counts the event Scan found: the rest of its block belongs to it.
func (s *EventScanner) Begin() { s.inEvent = true }

// AtBoundary reports whether the stream stands between blocks (no line
// begun, no event in the block): an event written there stands alone.
func (s *EventScanner) AtBoundary() bool { return !s.midLine && !s.inEvent }

// indexEOL returns the index of the first CR or LF in p, or -1.
func indexEOL(p []byte) int {
	i := bytes.IndexByte(p, '\n')
	head := p
	if i >= 0 {
		head = p[:i]
	}
	if j := bytes.IndexByte(head, '\r'); j >= 0 {
		return j
	}
	return i
}
