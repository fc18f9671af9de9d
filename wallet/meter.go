package wallet

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
)

// Metered responses (docs/PROTOCOL.md §14 Sessions): the gate holds the
// stream when the window the wallet paid is spent, until a top-up on the
// same lane. The Transport keeps the lane for the response while its body
// is read and tops up by itself: at a need-topup event (which the reader
// does not see), halfway through a window of bytes, and every half window
// of seconds.

// MeterProgress is the progress of a metered response (Transport.OnMeter).
type MeterProgress struct {
	URL   string // the resource, without its query
	Meter string // what a unit counts ("events 10")
	// Units is the units paid for so far: the window and the top-ups.
	Units uint32
	// Coupons is the coupons revealed for them (a lane's credit pays
	// part of a window).
	Coupons uint32
	TopUps  int // the top-ups paid
	// Done is set at the end, with what the gate said in its trailers:
	// the units it charged, the lane's credit after the unused window came
	// back, and how the response ended (coupons.End…, or "cut" when the
	// response ended without them).
	Done    bool
	Charged uint32
	Credit  uint32
	End     string
	// Err is why the last top-up failed ("" when none did): the stream
	// stops at the window paid.
	Err string
}

// DefaultStallTopUp is how long a bytes-metered body may stall before the
// wallet tops up anyway, when Transport.StallTopUp is 0.
const DefaultStallTopUp = time.Second

// EndCut is MeterProgress.End for a metered response that ended without
// the gate's trailers (the connection broke): the lane's credit is learnt
// at its next payment.
const EndCut = "cut"

// meter wraps the body of the metered response resp, paid on lane l for
// req under ch (the lane at position start before the payment), so that
// reading it tops up; the lane is given back when it ends.
func (t *Transport) meter(req *http.Request, resp *http.Response, ch *Challenge, l *lane, start uint32) {
	m, _ := coupons.ParseMeter(resp.Header.Get(coupons.HeaderMeter))
	units, _ := strconv.ParseUint(resp.Header.Get(coupons.HeaderWindow), 10, 32)
	u := *req.URL
	u.RawQuery, u.Fragment, u.User = "", "", nil
	b := &meteredBody{t: t, resp: resp, req: req, ch: ch, l: l, m: m, body: resp.Body, start: start,
		prog: MeterProgress{URL: u.String(), Meter: m.String(), Units: uint32(units)}}
	b.prog.Coupons = b.position() - start
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "text/event-stream" {
		b.sse = bufio.NewReaderSize(resp.Body, 64<<10)
	}
	// The timers' top-ups run in their own goroutines, under b.mu.
	b.mu.Lock()
	defer b.mu.Unlock()
	if m.Kind == coupons.MeterBytes {
		// The gate counts the bytes it is given, the wallet those it
		// reads: behind a compressing encoder they differ, and a held body
		// gives no sign. A body that stalls gets one top-up per stall.
		b.stall = t.StallTopUp
		if b.stall == 0 {
			b.stall = DefaultStallTopUp
		}
		b.watch = time.AfterFunc(b.stall, b.stalled)
	}
	if m.Kind == coupons.MeterSeconds {
		every := max(time.Duration(m.Per)*time.Second*time.Duration(ch.Window)/2, 200*time.Millisecond)
		var tick func()
		tick = func() {
			if b.topup() {
				b.mu.Lock()
				if !b.done {
					b.timer = time.AfterFunc(every, tick)
				}
				b.mu.Unlock()
			}
		}
		b.timer = time.AfterFunc(every, tick)
	}
	resp.Body = b
	t.report(&b.prog)
}

func (t *Transport) report(p *MeterProgress) {
	if t.OnMeter != nil {
		t.OnMeter(*p)
	}
}

// meteredBody is the body of a metered response: it tops up as it is
// read and gives the lane back at its end.
type meteredBody struct {
	t     *Transport
	resp  *http.Response
	req   *http.Request
	ch    *Challenge
	l     *lane
	m     coupons.Meter
	body  io.ReadCloser
	start uint32 // the lane's position before the response's payment

	sse     *bufio.Reader // an event stream: read by lines
	out     []byte        // lines read, not yet returned
	pending error         // the error after out
	got     uint64        // bytes delivered (a bytes meter)

	mu    sync.Mutex // top-ups, one at a time; prog, done, timer, watch
	prog  MeterProgress
	done  bool
	timer *time.Timer
	// watch tops up when a bytes-metered body stalls for stall (at most
	// once until data comes again).
	watch *time.Timer
	stall time.Duration
	// failed: a top-up failed; no more are tried (the gate ends the
	// stream at the window paid).
	failed bool
	// raced: a top-up came after the response ended (no_session).
	raced bool
}

func (b *meteredBody) position() uint32 {
	b.t.mu.Lock()
	defer b.t.mu.Unlock()
	return b.l.cursor.Position()
}

// Read reads the body, topping up when a window is due.
func (b *meteredBody) Read(p []byte) (int, error) {
	if b.sse != nil {
		return b.readEvents(p)
	}
	n, err := b.body.Read(p)
	b.count(n)
	return n, b.after(err)
}

// count counts n bytes delivered; a bytes meter tops up once half a
// window is left.
func (b *meteredBody) count(n int) {
	if b.m.Kind != coupons.MeterBytes || n == 0 {
		return
	}
	b.mu.Lock()
	if b.watch != nil && !b.done {
		b.watch.Reset(b.stall)
	}
	b.mu.Unlock()
	b.got += uint64(n)
	b.mu.Lock()
	paid := uint64(b.prog.Units) * b.m.Per
	b.mu.Unlock()
	if b.got+b.m.Per*uint64(b.ch.Window)/2 >= paid {
		b.topup()
	}
}

// readEvents reads an event stream line by line, taking out the gate's
// need-topup events and topping up at each.
func (b *meteredBody) readEvents(p []byte) (int, error) {
	for len(b.out) == 0 && b.pending == nil {
		line, err := b.sse.ReadSlice('\n')
		if err == nil && isNeedTopup(line) {
			b.needTopup()
			continue
		}
		b.out = append(b.out, line...)
		b.count(len(line))
		if err != nil && err != bufio.ErrBufferFull {
			b.pending = err
		}
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	if len(b.out) == 0 && b.pending != nil {
		return n, b.after(b.pending)
	}
	return n, nil
}

func isNeedTopup(line []byte) bool {
	return string(bytes.TrimRight(line, "\r\n")) == "event: "+coupons.NeedTopupEvent
}

// needTopup reads the rest of a need-topup event and tops up when it
// names the response's lane.
func (b *meteredBody) needTopup() {
	var data []byte
	for {
		line, err := b.sse.ReadSlice('\n')
		s := bytes.TrimRight(line, "\r\n")
		if len(s) == 0 || err != nil {
			break
		}
		if d, ok := bytes.CutPrefix(s, []byte("data: ")); ok {
			data = append(data[:0], d...)
		}
	}
	if n, err := coupons.ParseNeedTopup(data); err == nil && n.Lane == b.l.id.String() {
		b.topup()
	}
}

// topup pays the next window on the lane; false when the body has ended
// or a top-up failed (then no more are tried).
func (b *meteredBody) topup() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done || b.failed {
		return false
	}
	units, err := b.t.topup(b.req, b.ch, b.l)
	if err != nil {
		b.failed = true
		b.prog.Err = err.Error()
		// A top-up racing the response's end: its coupons were refused
		// unaccepted, or credited to the lane after the trailers said
		// the credit; the next payment learns it.
		b.raced = b.raced || errors.Is(err, errNoSession)
	} else {
		b.prog.Units += units
		b.prog.TopUps++
	}
	b.prog.Coupons = b.position() - b.start
	b.t.report(&b.prog)
	return err == nil
}

// stalled tops up a bytes-metered body that has stalled (the watch).
func (b *meteredBody) stalled() { b.topup() }

// after ends the response on err (io.EOF: read whole).
func (b *meteredBody) after(err error) error {
	if err != nil {
		b.finish(err == io.EOF)
	}
	return err
}

// Close closes the body; a response not read to its end leaves the
// lane's credit unknown.
func (b *meteredBody) Close() error {
	err := b.body.Close()
	b.finish(false)
	return err
}

// finish gives the lane back, with its credit as the gate's trailer says
// (read whole) or unknown, and reports the end.
func (b *meteredBody) finish(whole bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	if b.timer != nil {
		b.timer.Stop()
	}
	if b.watch != nil {
		b.watch.Stop()
	}
	tr := b.resp.Trailer
	credit, cerr := strconv.ParseUint(tr.Get(HeaderCredit), 10, 32)
	charged, _ := strconv.ParseUint(tr.Get(coupons.HeaderCharged), 10, 32)
	switch {
	case whole && cerr == nil && !b.raced:
		b.t.setCredit(b.l, uint32(credit), false)
		b.prog.End = tr.Get(coupons.HeaderEnd)
	case whole && cerr == nil:
		b.t.setCredit(b.l, 0, true)
		b.prog.End = tr.Get(coupons.HeaderEnd)
	default:
		b.t.setCredit(b.l, 0, true)
		b.prog.End = EndCut
	}
	b.prog.Done, b.prog.Charged, b.prog.Credit = true, uint32(charged), uint32(credit)
	b.t.give(b.l)
	b.t.report(&b.prog)
}

// errNoSession is a top-up the gate refused: the response had ended.
var errNoSession = errors.New("wallet: top-up refused: the metered response had ended (no_session)")

// HeaderCredit is the gate's header (and, on a metered response, trailer)
// of the coupons a lane is owed.
const HeaderCredit = "ECoupon-Credit"

// topup pays a window on lane l for the metered response to req at the
// gate's top-up endpoint (coupons.TopupPath), and returns the units it
// added. A challenge that expired meanwhile is answered again once with
// the fresh one of the refusal.
func (t *Transport) topup(req *http.Request, ch *Challenge, l *lane) (uint32, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	u := *req.URL
	u.Path, u.RawPath, u.RawQuery, u.Fragment = coupons.TopupPath, "", "", ""
	treq, err := http.NewRequestWithContext(req.Context(), http.MethodPost, u.String(), nil)
	if err != nil {
		return 0, err
	}
	treq.Host = req.Host
	for attempt := 0; ; attempt++ {
		resp, err := t.pay(base, treq, nil, ch, l)
		if err != nil {
			return 0, err
		}
		code, _ := refusal(resp)
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			var a struct {
				Units uint32 `json:"units"`
			}
			if err := json.Unmarshal(raw, &a); err != nil || a.Units == 0 {
				return 0, fmt.Errorf("wallet: the top-up's answer names no units: %q", clip(string(raw)))
			}
			return a.Units, nil
		}
		if code == coupons.CodeNoSession {
			return 0, errNoSession
		}
		if resp.StatusCode == http.StatusPaymentRequired && attempt < 2 && code != coupons.CodeCapExceeded && code != coupons.CodeRevoked {
			if nch, err := nextChallenge(resp.Header, ch); err == nil {
				ch = nch // insufficient (the credit was not what the wallet knew), or a fresh challenge
				continue
			}
		}
		return 0, fmt.Errorf("wallet: top-up refused: %s %s", resp.Status, clip(string(raw)))
	}
}
