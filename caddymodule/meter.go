package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/lanes"
	"github.com/ecoupons/ecoupons/payment"
	"go.uber.org/zap"
)

// Metered responses (sessions, docs/PROTOCOL.md §14 "Sessions"): a route
// with a meter charges its price per unit of the response. The payment
// pre-pays a window of units (lanes.Payment.Hold); a meterWriter counts
// them down as the body flows and holds the stream when the window is
// spent, until a top-up on the same lane (serveTopup) adds a window or the
// hold times out; the units not delivered go back to the lane as credit
// (lanes.Core.Credit).

// Defaults of a meter.
const (
	DefaultMeterWindow = 8
	DefaultMeterHold   = 30 * time.Second
)

// MeterConfig meters a route's responses instead of charging per request.
type MeterConfig struct {
	// By is what a unit counts: "bytes" of the body, "events" (server-sent
	// events of a text/event-stream: blocks with a field line, keep-alive
	// comments free) or "seconds" of streaming (time held waiting for a
	// top-up not counted). Required.
	By string `json:"by"`
	// Per is the bytes, events or seconds of one unit. Required.
	Per uint64 `json:"per"`
	// Window is how many units a payment pre-pays (and a top-up adds); the
	// client pays Window × price coupons at once, at most max_jump.
	// Default 8.
	Window uint32 `json:"window,omitempty"`
	// Hold is how long a stream whose window is spent waits for a top-up
	// before it ends (cleanly, with the trailer ECoupon-End: hold_timeout).
	// Default 30s.
	Hold caddy.Duration `json:"hold,omitempty"`
}

// meter returns the route's meter (nil: charged per request).
func (g *Gate) meter() *coupons.Meter {
	if g.Meter == nil {
		return nil
	}
	return &coupons.Meter{Kind: g.Meter.By, Per: g.Meter.Per}
}

// checkMeter rejects a meter that cannot work (after defaults).
func (g *Gate) checkMeter() error {
	m := g.Meter
	if m == nil {
		return nil
	}
	if m.By == "" {
		return errors.New("ecoupon: meter_window and meter_hold need a meter: add 'meter bytes 1MiB', 'meter events 10' or 'meter seconds 1'")
	}
	if _, err := coupons.ParseMeter(m.By + " " + strconv.FormatUint(m.Per, 10)); err != nil {
		return fmt.Errorf("ecoupon: meter: %w (e.g. 'meter bytes 1MiB', 'meter events 10', 'meter seconds 1')", err)
	}
	if uint64(m.Window)*uint64(g.Price) > uint64(g.MaxJump) {
		return fmt.Errorf("ecoupon: meter_window %d at price %d is %d coupons, above max_jump %d: a window is paid at once; lower meter_window or raise max_jump",
			m.Window, g.Price, uint64(m.Window)*uint64(g.Price), g.MaxJump)
	}
	if m.Hold < caddy.Duration(100*time.Millisecond) || m.Hold > caddy.Duration(time.Hour) {
		return fmt.Errorf("ecoupon: meter_hold must be from 100ms to 1h, got %v", time.Duration(m.Hold))
	}
	return nil
}

// meterDefaults fills in a meter's unset options.
func (m *MeterConfig) defaults() {
	if m.Window == 0 {
		m.Window = DefaultMeterWindow
	}
	if m.Hold == 0 {
		m.Hold = caddy.Duration(DefaultMeterHold)
	}
}

// holdCoupons is what a payment on a metered route may hold: a window.
func (g *Gate) holdCoupons() uint32 {
	if g.Meter == nil {
		return 0
	}
	return g.Meter.Window * g.Price
}

// session is a metered response in flight: its window, shared with the
// top-ups paid on its lane.
type session struct {
	g    *Gate
	lane coupons.LaneID
	wake chan struct{} // signalled (capacity 1) when a top-up adds units

	mu      sync.Mutex
	units   uint32 // units paid and not begun
	charged uint32 // units begun
	ended   bool   // no more top-ups: what they pay goes back to the lane
}

// take begins a unit of the window; false when it is spent.
func (s *session) take() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.units == 0 {
		return false
	}
	s.units--
	s.charged++
	return true
}

// add adds a top-up's units; false when the response has ended (the
// caller gives them back to the lane).
func (s *session) add(units uint32) bool {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return false
	}
	s.units += units
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// end closes the session to top-ups and returns the units paid and not
// begun, and those begun.
func (s *session) end() (unused, charged uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	unused, s.units = s.units, 0
	return unused, s.charged
}

// sessionTable holds the metered responses in flight in this process, by
// lane: a top-up may reach any gate of the vendor's site (the first route
// whose gate takes /.well-known/ecoupons/), which hands it to the gate of
// the session's route.
type sessionTable struct {
	mu sync.Mutex
	m  map[coupons.LaneID][]*session
}

var sessions = &sessionTable{m: map[coupons.LaneID][]*session{}}

func (t *sessionTable) add(s *session) {
	t.mu.Lock()
	t.m[s.lane] = append(t.m[s.lane], s)
	t.mu.Unlock()
}

func (t *sessionTable) remove(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.m[s.lane]
	for i, x := range list {
		if x == s {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(t.m, s.lane)
	} else {
		t.m[s.lane] = list
	}
}

// find returns the session of vendor's lane that a top-up pays: the one
// with the fewest units left (a held stream first); nil when none.
func (t *sessionTable) find(vendor string, lane coupons.LaneID) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	var best *session
	var least uint32
	for _, s := range t.m[lane] {
		if s.g.Vendor != vendor {
			continue
		}
		s.mu.Lock()
		u := s.units
		s.mu.Unlock()
		if best == nil || u < least {
			best, least = s, u
		}
	}
	return best
}

// errHoldTimeout ends a stream held longer than the route's hold.
var errHoldTimeout = errors.New("ecoupon: the stream's window is spent and no top-up came within meter_hold")

// topupByHead takes a paid HEAD of a metered resource, on a lane with a
// metered response of this route in flight, as a top-up of that response
// (as the session drafts allow): the window held goes to the response,
// and the HEAD is answered 200 with ECoupon-Window (the units added) and
// no body. It reports whether it did.
func (g *Gate) topupByHead(w http.ResponseWriter, r *http.Request, id coupons.LaneID, held uint32) bool {
	if r.Method != http.MethodHead {
		return false
	}
	s := sessions.find(g.Vendor, id)
	if s == nil || s.g != g || !s.add(held/g.Price) {
		return false // a HEAD of its own: served (and credited back) as any metered response
	}
	setUint(w.Header(), keyWindow, uint64(held/g.Price))
	w.WriteHeader(http.StatusOK)
	return true
}

// serveMetered serves a metered request whose payment held held coupons
// (res.Held): the next handler writes through a meterWriter; when it
// returns (or panics, as reverse_proxy does to abort a response whose
// upstream failed), the units not delivered are credited back to the
// lane. A stream ended by its hold timeout ends cleanly.
func (g *Gate) serveMetered(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, id coupons.LaneID, held uint32) (err error) {
	s := &session{g: g, lane: id, units: held / g.Price, wake: make(chan struct{}, 1)}
	h := w.Header()
	h[keyMeter] = []string{g.meter().String()}
	setUint(h, keyWindow, uint64(s.units))
	mw := &meterWriter{ResponseWriter: w, s: s, m: *g.meter(), ctx: r.Context(), hold: time.Duration(g.Meter.Hold), started: time.Now()}
	sessions.add(s)
	defer func() {
		rec := recover()
		upstreamFailed := (rec != nil || err != nil) && mw.end != coupons.EndHoldTimeout && r.Context().Err() == nil
		g.settleMetered(r.Context(), mw, upstreamFailed)
		sessions.remove(s)
		switch {
		case mw.end == coupons.EndHoldTimeout:
			err = nil // ended cleanly: the client was told (trailers, need-topup)
		case rec != nil:
			panic(rec)
		}
	}()
	return next.ServeHTTP(mw, r)
}

// settleMetered ends a metered response's session: the units not begun,
// and on an upstream failure the unit in progress, go back to the lane as
// credit; the trailers say what the response was charged and the lane's
// credit after.
func (g *Gate) settleMetered(ctx context.Context, mw *meterWriter, upstreamFailed bool) {
	unused, charged := mw.s.end()
	if mw.free {
		unused, charged = unused+charged, 0 // a 5xx is not charged
	}
	if upstreamFailed {
		if charged > 0 && mw.inProgress() {
			unused, charged = unused+1, charged-1
		}
		if mw.end == "" {
			mw.end = coupons.EndUpstream
		}
	}
	if mw.end == "" {
		mw.end = coupons.EndComplete
	}
	g.mCoupons.Add(float64(charged) * float64(g.Price))
	g.mRevenue.Add(float64(charged) * g.revenue)
	credit := uint32(0)
	if back := unused * g.Price; back > 0 {
		// The client's context may be gone: the credit is written anyway.
		if err := g.core.Credit(context.WithoutCancel(ctx), mw.s.lane, back); err != nil {
			g.logger.Error("could not credit a metered response's unused window back to its lane", zap.String("lane", mw.s.lane.String()),
				zap.Uint32("coupons", back), zap.Error(err))
		} else {
			credit = back
		}
	}
	if !mw.wroteHeader {
		return
	}
	h := mw.Header()
	setUint(h, keyCharged, uint64(charged))
	h[keyEnd] = []string{mw.end}
	if rec, err := g.store.Get(context.WithoutCancel(ctx), mw.s.lane); err == nil {
		setUint(h, keyCredit, uint64(rec.Credit))
	} else if credit > 0 {
		g.logger.Warn("could not read a lane's credit after a metered response", zap.Error(err))
	}
}

// Header keys of metered responses in canonical form.
const (
	keyMeter   = "Ecoupon-Meter"   // coupons.HeaderMeter
	keyWindow  = "Ecoupon-Window"  // coupons.HeaderWindow
	keyCharged = "Ecoupon-Charged" // coupons.HeaderCharged (trailer)
	keyEnd     = "Ecoupon-End"     // coupons.HeaderEnd (trailer)
)

// meterWriter is the writer the next handler of a metered route writes
// to: it writes only what the session's units pay for, begins a unit
// before the first byte it pays, and holds the stream when the window is
// spent. Flushes and the rest of http.ResponseController reach the
// client's writer through Unwrap; it has no ReadFrom, so that every byte
// is counted.
type meterWriter struct {
	http.ResponseWriter
	s       *session
	m       coupons.Meter
	ctx     context.Context
	hold    time.Duration
	started time.Time

	wroteHeader bool
	free        bool   // a 5xx: not metered, not charged
	sse         bool   // text/event-stream: need-topup events are written
	end         string // how it ended (coupons.End…), "" while it runs
	left        uint64 // bytes or events the units begun still pay for
	scan        coupons.EventScanner
	heldFor     time.Duration    // seconds meter: time held, not charged
	now         func() time.Time // a test's clock (nil: time.Now)
	// scanning: the event scanner runs (an events meter, or an event
	// stream, where need-topup events go between blocks only).
	scanning bool
}

// WriteHeader writes the header: the trailers the gate sets at the end are
// announced (so the body is chunked: Content-Length goes), 1xx pass
// through, a 5xx is not metered.
func (mw *meterWriter) WriteHeader(code int) {
	if code < 200 && code != http.StatusSwitchingProtocols {
		mw.ResponseWriter.WriteHeader(code)
		return
	}
	if mw.wroteHeader {
		return
	}
	mw.wroteHeader = true
	h := mw.Header()
	if code >= 500 || code == http.StatusSwitchingProtocols {
		mw.free = true
	}
	ct, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	mw.sse = ct == "text/event-stream"
	mw.scanning = mw.sse || mw.m.Kind == coupons.MeterEvents
	if !mw.free {
		delete(h, "Content-Length")
		h.Add("Trailer", coupons.HeaderCharged+", "+coupons.HeaderEnd+", "+HeaderCredit)
	}
	mw.ResponseWriter.WriteHeader(code)
}

// Write writes what the window pays for, beginning units as it goes, and
// holds when the window is spent (hold); an error ends the response.
func (mw *meterWriter) Write(p []byte) (int, error) {
	if !mw.wroteHeader {
		mw.WriteHeader(http.StatusOK)
	}
	if mw.free {
		return mw.ResponseWriter.Write(p)
	}
	if mw.end != "" {
		return 0, errHoldTimeout
	}
	written := 0
	for len(p) > 0 {
		n, err := mw.paid(p)
		if err != nil {
			return written, err
		}
		k, err := mw.ResponseWriter.Write(p[:n])
		written += k
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// paid returns how many bytes of p (not empty) the units begun pay for,
// at least one, beginning a unit (or holding for one) when none does.
func (mw *meterWriter) paid(p []byte) (int, error) {
	switch mw.m.Kind {
	case coupons.MeterBytes:
		if mw.left == 0 {
			if err := mw.begin(); err != nil {
				return 0, err
			}
			mw.left = mw.m.Per
		}
		n := int(min(uint64(len(p)), mw.left))
		mw.left -= uint64(n)
		mw.track(p[:n])
		return n, nil
	case coupons.MeterEvents:
		n, event := mw.scan.Scan(p)
		if !event {
			return n, nil
		}
		if n > 0 {
			return n, nil // what comes before the event first
		}
		if mw.left == 0 {
			if err := mw.begin(); err != nil {
				return 0, err
			}
			mw.left = mw.m.Per
		}
		mw.left--
		mw.scan.Begin()
		n, _ = mw.scan.Scan(p) // up to the next event
		return max(n, 1), nil
	default: // seconds
		for mw.charged() < mw.unitsDue() {
			if err := mw.begin(); err != nil {
				return 0, err
			}
		}
		mw.track(p)
		return len(p), nil
	}
}

// track follows an event stream's blocks (bytes and seconds meters), so
// that need-topup events go between them.
func (mw *meterWriter) track(p []byte) {
	if !mw.scanning {
		return
	}
	for len(p) > 0 {
		n, event := mw.scan.Scan(p)
		if !event {
			return
		}
		mw.scan.Begin()
		p = p[n:]
	}
}

func (mw *meterWriter) charged() uint32 {
	mw.s.mu.Lock()
	defer mw.s.mu.Unlock()
	return mw.s.charged
}

func (mw *meterWriter) clock() time.Time {
	if mw.now != nil {
		return mw.now()
	}
	return time.Now()
}

// unitsDue is the number of seconds-units the stream has run into.
func (mw *meterWriter) unitsDue() uint32 {
	run := mw.clock().Sub(mw.started) - mw.heldFor
	return uint32(uint64(run/time.Second)/mw.m.Per) + 1
}

// inProgress reports whether the last unit begun was not delivered whole
// (its bytes or events not all written; a seconds unit always is).
func (mw *meterWriter) inProgress() bool {
	return mw.left > 0 || mw.m.Kind == coupons.MeterSeconds
}

// begin begins a unit of the window, holding the stream until a top-up
// when it is spent: what was written is flushed, an event stream at a
// block boundary gets a need-topup event, and the stream waits up to the
// route's hold (then errHoldTimeout) or until the client goes.
func (mw *meterWriter) begin() error {
	if mw.s.take() {
		return nil
	}
	rc := http.NewResponseController(mw.ResponseWriter)
	if mw.sse && mw.scan.AtBoundary() {
		g := mw.s.g
		ev := coupons.AppendNeedTopupEvent(nil, &coupons.NeedTopup{Lane: mw.s.lane.String(), Coupons: g.holdCoupons(),
			Units: g.Meter.Window, Price: g.Price, Charged: mw.charged(), Topup: coupons.TopupPath})
		if _, err := mw.ResponseWriter.Write(ev); err != nil {
			return err
		}
	}
	_ = rc.Flush()
	heldAt := mw.clock()
	defer func() { mw.heldFor += mw.clock().Sub(heldAt) }()
	timer := time.NewTimer(mw.hold)
	defer timer.Stop()
	for {
		select {
		case <-mw.s.wake:
			if mw.s.take() {
				return nil
			}
		case <-timer.C:
			mw.end = coupons.EndHoldTimeout
			return errHoldTimeout
		case <-mw.ctx.Done():
			return mw.ctx.Err()
		}
	}
}

// FlushError flushes the client's writer (http.ResponseController).
func (mw *meterWriter) FlushError() error {
	if !mw.wroteHeader {
		mw.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(mw.ResponseWriter).Flush()
}

// Unwrap returns the client's writer (http.ResponseController).
func (mw *meterWriter) Unwrap() http.ResponseWriter { return mw.ResponseWriter }

// serveTopup handles POST /.well-known/ecoupons/topup: a payment on the
// lane of a metered response in flight (either scheme) adds a window of
// units to it and resumes it if held. Without such a response here it is
// refused (409 no_session) before a coupon is accepted; one that ended
// meanwhile gets the coupons credited back to the lane.
func (g *Gate) serveTopup(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, problem{Error: coupons.CodeMethodNotAllowed, Reason: "POST a payment on the stream's lane here"})
		return
	}
	// The session is found by the payment's lane (read, not yet
	// verified); its route's gate verifies the payment, against its own
	// terms.
	lane, peeked := peekLane(r)
	s := sessions.find(g.Vendor, lane)
	if peeked && s == nil {
		writeJSON(g.answerer(w, r), http.StatusConflict, problem{Error: coupons.CodeNoSession,
			Reason: "no metered response is in flight on lane " + lane.String() + " here; no coupon was accepted"})
		return
	}
	sg := g
	if s != nil {
		sg = s.g
	}
	var (
		p    coupons.Payment
		open []byte
		cr   *payment.Credential
		ww   http.ResponseWriter = w
	)
	if speaksPayment(r.Header) {
		pw := sg.newPaymentWriter(w, r)
		ww = pw
		var ok bool
		if cr, open, ok = sg.readCredential(pw, r, &p); !ok {
			return
		}
	} else if !sg.parsePayment(w, r, &p) {
		return
	}
	if s == nil || p.Lane != lane {
		// A payment that did not parse when peeked, yet did now: refused
		// as it would have been.
		writeJSON(ww, http.StatusConflict, problem{Error: coupons.CodeNoSession, Reason: "no metered response is in flight on this lane here; no coupon was accepted"})
		return
	}
	body, ok := sg.readContent(ww, r)
	if !ok {
		return
	}
	restore := setOpen(r.Header, open)
	doc := headerValue(r.Header, keyOpen)
	var res lanes.Result
	ok = sg.accept(ww, r, &p, doc, body, sg.clock(), &res)
	restore()
	if !ok {
		return
	}
	sg.reportTheft(p.Lane, res.Theft)
	if !sg.respondPaid(ww, &p, &res, doc != "") {
		return
	}
	units := res.Held / sg.Price
	if !s.add(units) {
		// The response ended between find and add: the window goes back.
		if err := sg.core.Credit(context.WithoutCancel(r.Context()), p.Lane, res.Held); err != nil {
			sg.storeUnavailable(ww, err)
			return
		}
		setUint(w.Header(), keyCredit, uint64(res.Record.Credit+res.Held))
		writeJSON(ww, http.StatusConflict, problem{Error: coupons.CodeNoSession,
			Reason: fmt.Sprintf("the metered response on lane %s ended: the %d coupons of this top-up were credited to the lane", p.Lane, res.Held)})
		return
	}
	if cr != nil {
		payment.SetReceipt(w.Header(), sg.paymentReceipt(w.Header(), &p))
	}
	writeJSON(w, http.StatusOK, map[string]any{"lane": p.Lane.String(), "units": units, "coupons": res.Held, "credit": res.Record.Credit})
}

// peekLane returns the lane a request's payment (either scheme) names,
// without verifying it; false when it has none that parses.
func peekLane(r *http.Request) (coupons.LaneID, bool) {
	if speaksPayment(r.Header) {
		cr, _, err := payment.CredentialFromRequest(r.Header)
		if err != nil {
			return coupons.LaneID{}, false
		}
		p, _, err := cr.ECoupon()
		if err != nil {
			return coupons.LaneID{}, false
		}
		return p.Lane, true
	}
	var p coupons.Payment
	auth := headerValue(r.Header, keyAuthorization)
	if !hasScheme(auth, coupons.Scheme) || coupons.ParsePayment(auth, &p) != nil {
		return coupons.LaneID{}, false
	}
	return p.Lane, true
}

// answerer is the writer of the gate's refusals to r: a paymentWriter
// when r speaks the Payment scheme.
func (g *Gate) answerer(w http.ResponseWriter, r *http.Request) http.ResponseWriter {
	if speaksPayment(r.Header) {
		return g.newPaymentWriter(w, r)
	}
	return w
}

// meterHint is the reason of a 402 on a metered route.
func (g *Gate) meterHint() string {
	if g.Meter == nil {
		return ""
	}
	return fmt.Sprintf("metered: %d coupon(s) per %s; pay a window of %d units (%d coupons) with the request, and top up with POST %s on the same lane",
		g.Price, unitName(g.meter()), g.Meter.Window, g.holdCoupons(), coupons.TopupPath)
}

// unitName says what one unit of m is ("1048576 bytes", "10 events").
func unitName(m *coupons.Meter) string {
	name := m.Kind
	if m.Per == 1 {
		name = strings.TrimSuffix(name, "s")
	}
	return strconv.FormatUint(m.Per, 10) + " " + name
}
