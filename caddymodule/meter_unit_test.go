package caddymodule

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
)

// testMeterWriter is a meterWriter on a recorder with a window of units,
// its clock at *now.
func testMeterWriter(m coupons.Meter, units uint32, hold time.Duration, now *time.Time) (*meterWriter, *httptest.ResponseRecorder) {
	g := &Gate{Vendor: "news.example", Price: 1, Meter: &MeterConfig{By: m.Kind, Per: m.Per, Window: units}}
	rec := httptest.NewRecorder()
	s := &session{g: g, units: units, wake: make(chan struct{}, 1)}
	return &meterWriter{ResponseWriter: rec, s: s, m: m, ctx: context.Background(), hold: hold, started: *now,
		now: func() time.Time { return *now }}, rec
}

// TestMeterSecondsChargesTheTimeStreamed: per 2 seconds with a window of
// 2 units, a write at 0 s begins unit 1, at 3.9 s unit 2, and one at 4 s
// needs a third: the stream holds and, with no top-up, ends at the hold
// timeout without writing it.
func TestMeterSecondsChargesTheTimeStreamed(t *testing.T) {
	now := time.Unix(1000, 0)
	mw, rec := testMeterWriter(coupons.Meter{Kind: coupons.MeterSeconds, Per: 2}, 2, 50*time.Millisecond, &now)
	for _, step := range []struct {
		at      time.Duration
		charged uint32
	}{{0, 1}, {1900 * time.Millisecond, 1}, {2 * time.Second, 2}, {3900 * time.Millisecond, 2}} {
		now = time.Unix(1000, 0).Add(step.at)
		if _, err := mw.Write([]byte("x")); err != nil {
			t.Fatalf("write at %v: %v", step.at, err)
		}
		if mw.s.charged != step.charged {
			t.Fatalf("at %v: %d units charged, want %d", step.at, mw.s.charged, step.charged)
		}
	}
	now = time.Unix(1004, 0)
	if _, err := mw.Write([]byte("y")); !errors.Is(err, errHoldTimeout) || mw.end != coupons.EndHoldTimeout {
		t.Fatalf("a write past the window: %v, end %q", err, mw.end)
	}
	if rec.Body.String() != "xxxx" {
		t.Fatalf("written %q: a second not paid for was served", rec.Body.String())
	}
}

// TestMeterResumesOnTopup: a bytes meter (4 bytes a unit, a window of 1)
// holds a 10-byte write after 4 bytes; a top-up of 2 units while it waits
// lets the rest through, and 2 bytes of the third unit stay in progress.
func TestMeterResumesOnTopup(t *testing.T) {
	now := time.Now()
	mw, rec := testMeterWriter(coupons.Meter{Kind: coupons.MeterBytes, Per: 4}, 1, 5*time.Second, &now)
	go func() {
		time.Sleep(20 * time.Millisecond)
		if !mw.s.add(2) {
			t.Error("the session refused a top-up while it runs")
		}
	}()
	if n, err := mw.Write([]byte("0123456789")); n != 10 || err != nil {
		t.Fatalf("write across a top-up: %d %v", n, err)
	}
	if rec.Body.String() != "0123456789" || mw.s.charged != 3 || !mw.inProgress() {
		t.Fatalf("body %q, charged %d, in progress %v", rec.Body.String(), mw.s.charged, mw.inProgress())
	}
	if unused, charged := mw.s.end(); unused != 0 || charged != 3 || mw.s.add(1) {
		t.Fatalf("end: unused %d charged %d; a top-up after the end was taken", unused, charged)
	}
}

// TestMeterEventsCountsEventsNotBytes: per 2 events with a window of 2,
// one write of 5 events (and keep-alives) passes the first 4 and holds at
// the fifth, where an event stream gets a need-topup event.
func TestMeterEventsCountsEventsNotBytes(t *testing.T) {
	now := time.Now()
	mw, rec := testMeterWriter(coupons.Meter{Kind: coupons.MeterEvents, Per: 2}, 2, 20*time.Millisecond, &now)
	rec.Header().Set("Content-Type", "text/event-stream")
	stream := ": hi\n\ndata: 1\n\ndata: 2\n\n: keep-alive\n\ndata: 3\nid: 3\n\ndata: 4\n\ndata: 5\n\n"
	n, err := mw.Write([]byte(stream))
	if !errors.Is(err, errHoldTimeout) {
		t.Fatalf("write of 5 events with 4 paid: %d %v", n, err)
	}
	want := ": hi\n\ndata: 1\n\ndata: 2\n\n: keep-alive\n\ndata: 3\nid: 3\n\ndata: 4\n\n"
	if got := rec.Body.String(); got[:n] != want || got[n:] != string(coupons.AppendNeedTopupEvent(nil, &coupons.NeedTopup{
		Lane: coupons.LaneID{}.String(), Coupons: 2, Units: 2, Price: 1, Charged: 2, Topup: coupons.TopupPath})) {
		t.Fatalf("written %q", got)
	}
}
