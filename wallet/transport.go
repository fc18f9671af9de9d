// Package wallet is the ecoupons client: an http.RoundTripper that answers
// 402 challenges by paying from the lanes of a book (or of a grant), one
// lane per in-flight request, so parallel requests do not wait on each
// other. It speaks both schemes a gate offers: ECoupon, and the HTTP
// Payment scheme with method ecoupon (docs/payment-method-ecoupon.md),
// which it prefers when offered.
package wallet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/payment"
	"github.com/ecoupons/ecoupons/spki"
)

// Errors of the wallet.
var (
	// ErrNoLane means every lane is exhausted (or retired): none will come
	// free by waiting.
	ErrNoLane = errors.New("wallet: no lane left to pay with")
	// ErrLanesBusy means every lane with coupons left was in use by other
	// requests for as long as the request could wait (Transport.LaneWait,
	// its context): retrying later may succeed.
	ErrLanesBusy = errors.New("wallet: every lane is in use by other requests")
	// ErrPriceLimit means a challenge asked for more than the wallet's limit.
	ErrPriceLimit = errors.New("wallet: price above the limit")
	// ErrWrongVendor means the challenge is from a vendor this book is not for.
	ErrWrongVendor = errors.New("wallet: the challenge is from another vendor than the book's")
	// ErrBadChallenge is a 402 whose challenge does not parse.
	ErrBadChallenge = errors.New("wallet: malformed challenge")
	// ErrPortionUsedUp means the lanes left are granted portions whose
	// coupons are all spent: the grant's issuer can grant more, or take the
	// lanes back (ecoupons wallet reclaim).
	ErrPortionUsedUp = errors.New("wallet: portion used up")
	// ErrBodyTooLarge means a request's body is larger than the transport
	// reads to bind it to a payment (Transport.MaxBody): nothing is paid.
	ErrBodyTooLarge = errors.New("wallet: request body too large to pay for")
	// ErrUnknownScheme is a Transport.Scheme (or --scheme) that is none of
	// SchemeAuto, SchemeECoupon and SchemePayment.
	ErrUnknownScheme = errors.New("wallet: unknown payment scheme")
)

// The schemes a Transport answers 402s in (Transport.Scheme).
const (
	// SchemeAuto answers the Payment challenge of method ecoupon when the
	// gate offers a usable one, the ECoupon challenge otherwise.
	SchemeAuto = ""
	// SchemeECoupon answers only ECoupon challenges, and sends no
	// Accept-Payment.
	SchemeECoupon = "ecoupon"
	// SchemePayment answers only Payment challenges of method ecoupon,
	// intent charge (session on a metered route).
	SchemePayment = "payment"
)

// acceptPayment is the Accept-Payment the wallet sends: what it can pay.
const acceptPayment = payment.Method + "/" + payment.IntentCharge + ", " + payment.Method + "/" + payment.IntentSession

// DefaultMaxBody is the largest request body a Transport pays for when its
// MaxBody is 0: the gate's default max_body.
const DefaultMaxBody = 1 << 20

// Challenge is a gate's terms: a parsed WWW-Authenticate: ECoupon …
// header, or the request of a Payment challenge of method ecoupon
// (Payment is then set).
type Challenge struct {
	Vendor, Unit, Currency, Broker, Nonce string
	Price                                 uint32
	// Store names the gate's spent state: the wallet pays it only with
	// lanes opened at that store, or new ones ("" for a gate that does not
	// name it: lanes of such gates are bound to "").
	Store string
	// Lease is the gate's spending lease (coupons; 0 when it has none):
	// after the gate restarts, a lane may resume up to this many coupons
	// past the wallet's position.
	Lease uint32
	// Resume is, in a coupon_spent refusal, the first coupon the lane
	// takes now.
	Resume uint32
	// Meter is a metered route's meter ("events 10", coupons.Meter's wire
	// form; Price is then per unit) and Window the units a payment
	// pre-pays: the wallet pays Window × Price coupons and tops up while
	// the response is read (meteredBody). Empty and 0 for a route charged
	// per request.
	Meter  string
	Window uint32
	// Payment is the Payment challenge these terms were read from, which
	// the wallet answers with a Payment credential; nil for an ECoupon
	// challenge.
	Payment *payment.Challenge
}

// want is the coupons a payment on ch is due: the price, or a window.
func (c *Challenge) want() uint32 {
	if c.Meter != "" {
		return c.Window * c.Price
	}
	return c.Price
}

// SchemeName returns the scheme the challenge is answered in: "Payment"
// or "ECoupon".
func (c *Challenge) SchemeName() string {
	if c.Payment != nil {
		return payment.Scheme
	}
	return coupons.Scheme
}

// checkScheme refuses an unknown Transport.Scheme.
func checkScheme(scheme string) error {
	switch scheme {
	case SchemeAuto, SchemeECoupon, SchemePayment:
		return nil
	}
	return fmt.Errorf("%w: %q (want %q, %q or empty for either)", ErrUnknownScheme, clip(scheme), SchemeECoupon, SchemePayment)
}

// ChallengeFromResponse returns the challenge of a 402 response's header
// to answer in scheme (SchemeAuto, SchemeECoupon, SchemePayment): with
// SchemeAuto, the first Payment challenge of method ecoupon and intent
// charge or session that has not expired and whose request decodes, else the ECoupon
// challenge. Errors match ErrBadChallenge (none usable) or
// ErrUnknownScheme.
func ChallengeFromResponse(h http.Header, scheme string) (*Challenge, error) {
	if err := checkScheme(scheme); err != nil {
		return nil, err
	}
	if scheme != SchemeECoupon {
		ch, err := paymentChallenge(h)
		if err == nil || scheme == SchemePayment {
			return ch, err
		}
	}
	return ecouponChallenge(h)
}

// ecouponChallenge returns the ECoupon challenge among the response's
// WWW-Authenticate fields.
func ecouponChallenge(h http.Header) (*Challenge, error) {
	var err error = fmt.Errorf("%w: no ECoupon challenge", ErrBadChallenge)
	for _, v := range h.Values("WWW-Authenticate") {
		var ch *Challenge
		if ch, err = ParseChallenge(v); err == nil {
			return ch, nil
		}
	}
	return nil, err
}

// paymentChallenge returns the terms of the first usable Payment challenge
// of method ecoupon, intent charge or session (a metered route's: its
// request has a meter), of a response's header.
func paymentChallenge(h http.Header) (*Challenge, error) {
	cs, _ := payment.ChallengesFromResponse(h) // malformed ones are left out
	now := time.Now()
	var why error = fmt.Errorf("%w: no Payment challenge of method %s, intent %s or %s", ErrBadChallenge, payment.Method, payment.IntentCharge, payment.IntentSession)
	for i := range cs {
		pc := &cs[i]
		if pc.Method != payment.Method || (pc.Intent != payment.IntentCharge && pc.Intent != payment.IntentSession) {
			continue
		}
		if pc.Expired(now) {
			why = fmt.Errorf("%w: the Payment challenge expired at %s", ErrBadChallenge, pc.Expires)
			continue
		}
		r, err := pc.ECouponRequest()
		if err != nil {
			why = fmt.Errorf("%w: %w", ErrBadChallenge, err)
			continue
		}
		if (pc.Intent == payment.IntentSession) != (r.Meter != "") {
			why = fmt.Errorf("%w: a Payment challenge of intent %s with meter %q", ErrBadChallenge, pc.Intent, r.Meter)
			continue
		}
		return &Challenge{Vendor: r.Vendor, Unit: r.Unit, Currency: r.Currency, Broker: r.Broker, Nonce: r.Nonce,
			Price: r.Price, Store: r.Store, Lease: r.Lease, Meter: r.Meter, Window: r.Window, Payment: pc}, nil
	}
	return nil, why
}

// nextChallenge returns the challenge of a refusal to answer next in the
// scheme of prev, the one answered: a gate answers a client in the scheme
// it paid in.
func nextChallenge(h http.Header, prev *Challenge) (*Challenge, error) {
	if prev.Payment != nil {
		return paymentChallenge(h)
	}
	return ecouponChallenge(h)
}

// offerPayment returns req with Accept-Payment: ecoupon/charge,
// ecoupon/session, unless scheme is SchemeECoupon or the request states
// its own.
func offerPayment(req *http.Request, scheme string) *http.Request {
	if scheme == SchemeECoupon || req.Header.Get(payment.HeaderAcceptPayment) != "" {
		return req
	}
	r := req.Clone(req.Context())
	r.Header.Set(payment.HeaderAcceptPayment, acceptPayment)
	return r
}

var paramRe = regexp.MustCompile(`([a-z]+)=("(?:[^"\\]|\\.)*"|[^,\s]+)`)

// ParseChallenge parses the ECoupon challenge of a 402 response.
func ParseChallenge(h string) (*Challenge, error) {
	if !strings.HasPrefix(strings.ToLower(h), "ecoupon ") {
		return nil, fmt.Errorf("%w: not an ECoupon challenge", ErrBadChallenge)
	}
	c := &Challenge{}
	for _, m := range paramRe.FindAllStringSubmatch(h[8:], -1) {
		v := m[2]
		if len(v) >= 2 && strings.HasPrefix(v, `"`) && strings.HasSuffix(v, `"`) {
			v = strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(v[1 : len(v)-1])
		}
		switch m[1] {
		case "vendor":
			c.Vendor = v
		case "unit":
			c.Unit = v
		case "currency":
			c.Currency = v
		case "broker":
			c.Broker = v
		case "nonce":
			c.Nonce = v
		case "store":
			c.Store = v
		case "meter":
			m, err := coupons.ParseMeter(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrBadChallenge, err)
			}
			c.Meter = m.String()
		case "window":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("%w: window %q", ErrBadChallenge, v)
			}
			c.Window = uint32(n)
		case "price":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("%w: price %q", ErrBadChallenge, v)
			}
			c.Price = uint32(n)
		case "lease", "resume":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%w: %s %q", ErrBadChallenge, m[1], v)
			}
			if m[1] == "lease" {
				c.Lease = uint32(n)
			} else {
				c.Resume = uint32(n)
			}
		}
	}
	if c.Vendor == "" || c.Nonce == "" || c.Price == 0 {
		return nil, fmt.Errorf("%w: vendor, price and nonce are required", ErrBadChallenge)
	}
	if (c.Meter == "") != (c.Window == 0) {
		return nil, fmt.Errorf("%w: a meter and a window go together", ErrBadChallenge)
	}
	return c, nil
}

// lane is one lane the wallet pays from.
type lane struct {
	id     coupons.LaneID
	cursor *coupons.Cursor
	nonce  string // the challenge nonce it was opened with ("" until opened)
	credit uint32
	// unanswered counts the coupons of payments since the last answered
	// one that got no response (the gate may have counted them).
	unanswered uint32
	// creditUnknown: a metered response ended without saying the lane's
	// credit (cut off); the next payment pays one coupon and learns it.
	creditUnknown bool
	// resumed is when a gate last made this lane skip coupons (resumeAt).
	resumed time.Time
	// retired: a gate refused the lane for good (cap_exceeded, revoked);
	// the transport reveals no more of its coupons.
	retired bool
	// store is the store (a challenge's store parameter) the lane's first
	// payment went to: its coupons are paid to gates of that store only.
	// "" for a lane not used yet, or used before stores were named (it
	// is bound at its next payment).
	store string
}

// usable reports whether l can pay: not retired and coupons left.
func (l *lane) usable() bool { return !l.retired && l.cursor.Remaining() > 0 }

// fits reports whether l may pay a gate of store: a lane belongs to the
// store it was opened at (a gate of another store would count nothing it
// was paid elsewhere, and the coupons in between would be lost).
func (l *lane) fits(store string) bool { return l.store == "" || l.store == store }

// DefaultLaneWait is how long a request waits for a lane when all are in
// use and Transport.LaneWait is 0.
const DefaultLaneWait = 10 * time.Second

// Transport pays 402 ECoupon challenges from a holder's lanes.
type Transport struct {
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// MaxPrice refuses challenges asking more coupons per request. 0: 100.
	MaxPrice uint32
	// Receipts, when set, keeps the vendor's receipts of paid requests,
	// to be checked with ReceiptLog.Check.
	Receipts *ReceiptLog
	// Budget, when set, enforces the wallet's spending limits: a payment
	// that would pass one is refused with ErrSpendLimit before any coupon
	// leaves.
	Budget *Budget
	// Hosts are host names (lower-case, without port) that also belong to
	// the book's vendor. The transport pays a challenge only for a request
	// to the vendor's own name or one of its subdomains, a loopback
	// address (this machine), or one of these: a 402 anyone can send may
	// name any vendor, and coupons paid to a relay could be spent by it
	// at the real vendor.
	Hosts []string
	// MaxBody is the largest request body the transport pays for (it reads
	// the body to bind its SHA-256 to the payment and states it in
	// Content-Digest); a larger one is refused with ErrBodyTooLarge before
	// any coupon leaves. 0: DefaultMaxBody.
	MaxBody int64
	// LaneWait bounds how long a request waits for a lane when every lane
	// with coupons left is in use by other requests (the request's context
	// bounds it too); then it fails with ErrLanesBusy. 0: DefaultLaneWait;
	// negative: no wait.
	LaneWait time.Duration
	// MaxWindow refuses metered routes whose window (the coupons paid at
	// once, and at each top-up) is larger. 0: 256.
	MaxWindow uint32
	// OnMeter, when set, is told the progress of metered responses: at
	// each top-up and at the end.
	OnMeter func(MeterProgress)
	// StallTopUp is how long a body metered in bytes may stall before the
	// transport tops up anyway, once per stall (a gate counts the bytes
	// it sends, which a compressing encoder in front of it makes differ
	// from those the transport reads). 0: DefaultStallTopUp.
	StallTopUp time.Duration
	// Scheme is the scheme RoundTrip answers 402s in: SchemeAuto (the
	// Payment scheme when the gate offers it, else ECoupon),
	// SchemeECoupon or SchemePayment.
	Scheme string

	holder *delegation.Holder
	freed  chan struct{} // closed (and replaced) when a lane is given back or retired
	mu     sync.Mutex
	free   []*lane
	all    []*lane
	spent  uint64
	st     *store // nil: state in memory only
}

// OpenTransport is NewTransport with the lanes' state kept in the file at
// statePath: lanes found there resume where they stopped, others start
// fresh. The state is written durably before every coupon leaves, so a
// crash can skip coupons but never reveal one twice; the file is locked
// until Close, so two processes cannot spend from it at once (a second
// one waits up to 10 s, then fails with ErrLocked).
func OpenTransport(h *delegation.Holder, statePath string, lanes ...uint32) (*Transport, error) {
	return OpenTransportIn(Files{}, h, statePath, lanes...)
}

// OpenTransportIn is OpenTransport with the state kept in fs.
func OpenTransportIn(fs Storage, h *delegation.Holder, statePath string, lanes ...uint32) (*Transport, error) {
	st, err := openStore(fs, statePath)
	if err != nil {
		return nil, err
	}
	saved, err := st.load()
	if err != nil {
		st.close()
		return nil, err
	}
	t, err := newTransport(h, saved, lanes...)
	if err != nil {
		st.close()
		return nil, err
	}
	t.st = st
	return t, nil
}

// Close releases the state file's lock.
func (t *Transport) Close() error {
	if t.st != nil {
		return t.st.close()
	}
	return nil
}

// NewTransport pays from the given lanes of h (every lane h holds when
// lanes is empty), starting each lane's cursor at its beginning: for a
// fresh book or grant. Two transports must never share a lane.
func NewTransport(h *delegation.Holder, lanes ...uint32) (*Transport, error) {
	return newTransport(h, nil, lanes...)
}

func newTransport(h *delegation.Holder, saved map[coupons.LaneID]*lane, lanes ...uint32) (*Transport, error) {
	b := h.Book.Book
	t := &Transport{holder: h}
	if len(lanes) == 0 {
		lanes = h.Lanes()
	}
	for _, s := range lanes {
		end, _, ok := h.Portion(s)
		if !ok {
			return nil, fmt.Errorf("%w: lane %d is not held", ErrNoLane, s)
		}
		id := coupons.LaneID{Book: b.ID(), Lane: s}
		if l, ok := saved[id]; ok {
			if l.cursor.Tag() != b.LaneTag(s) || l.cursor.Length() != b.Length {
				return nil, fmt.Errorf("wallet: the saved state of lane %s belongs to another chain", id)
			}
			if l.cursor.End() != end {
				return nil, fmt.Errorf("wallet: the saved state of lane %s spends up to coupon %d, the wallet holds up to %d", id, l.cursor.End(), end)
			}
			if !l.retired {
				t.free = append(t.free, l)
			} else {
				t.all = append(t.all, l) // kept in the state, never paid from
			}
			continue
		}
		// A whole lane from its seed, or a granted portion from w_end: the
		// cursor stops at end either way.
		c, _, err := h.Cursor(s)
		if err != nil {
			return nil, err
		}
		t.free = append(t.free, &lane{id: id, cursor: c})
	}
	t.all = append(t.all, t.free...)
	if len(t.free) == 0 {
		return nil, ErrNoLane
	}
	return t, nil
}

// remaining is the coupons lane l has left.
func (t *Transport) remaining(l *lane) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return l.cursor.Remaining()
}

// Spent returns the coupons this transport has revealed.
func (t *Transport) Spent() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.spent
}

// take returns a free lane with coupons left that fits store (a lane of
// that store first, else one not used yet). When every such lane is in
// use by other requests it waits for one to come back, up to wait (none
// when wait is negative) and while ctx lasts, then fails with
// ErrLanesBusy; when none has coupons left it fails with ErrNoLane.
func (t *Transport) take(ctx context.Context, wait time.Duration, store string) (*lane, error) {
	var deadline <-chan time.Time
	for {
		t.mu.Lock()
		pick := -1
		for k := len(t.free) - 1; k >= 0; k-- {
			l := t.free[k]
			if !l.usable() {
				t.free = append(t.free[:k], t.free[k+1:]...) // exhausted or retired: dropped
				continue
			}
			if l.fits(store) && (pick < 0 || l.store == store && t.free[pick].store != store) {
				pick = k
			}
		}
		if pick >= 0 {
			l := t.free[pick]
			t.free = append(t.free[:pick], t.free[pick+1:]...)
			t.mu.Unlock()
			return l, nil
		}
		// Every fitting lane is in flight, exhausted or retired.
		busy, portion, elsewhere := 0, false, 0
		for _, l := range t.all {
			switch {
			case l.usable() && l.fits(store):
				busy++
			case l.usable():
				elsewhere++
			case !l.retired && l.cursor.End() < l.cursor.Length():
				portion = true
			}
		}
		if busy == 0 {
			t.mu.Unlock()
			if elsewhere > 0 {
				return nil, fmt.Errorf("%w: the %d lane(s) with coupons left belong to other stores of the vendor (each lane pays the store it was opened at)", ErrNoLane, elsewhere)
			}
			if portion {
				// A granted portion ran out: the holder knows no coupon
				// past its end, and reveals nothing.
				return nil, fmt.Errorf("%w: %w", ErrNoLane, ErrPortionUsedUp)
			}
			return nil, ErrNoLane
		}
		if wait < 0 {
			t.mu.Unlock()
			return nil, fmt.Errorf("%w (%d lane(s) in flight)", ErrLanesBusy, busy)
		}
		if t.freed == nil {
			t.freed = make(chan struct{})
		}
		freed := t.freed
		t.mu.Unlock()
		if deadline == nil {
			tm := time.NewTimer(wait)
			defer tm.Stop()
			deadline = tm.C
		}
		select {
		case <-freed:
		case <-deadline:
			return nil, fmt.Errorf("%w: waited %v for one of %d lane(s) in flight", ErrLanesBusy, wait, busy)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: the request ended (%v) while %d lane(s) were in flight", ErrLanesBusy, ctx.Err(), busy)
		}
	}
}

// laneWait is how long a request waits for a lane (LaneWait).
func (t *Transport) laneWait() time.Duration {
	if t.LaneWait == 0 {
		return DefaultLaneWait
	}
	return t.LaneWait
}

// wake tells requests waiting for a lane to look again; t.mu is held.
func (t *Transport) wake() {
	if t.freed != nil {
		close(t.freed)
		t.freed = nil
	}
}

func (t *Transport) give(l *lane) {
	t.mu.Lock()
	t.free = append(t.free, l)
	t.wake()
	t.mu.Unlock()
}

// retire takes lane l out of use for good after a gate refused it as
// cap_exceeded or revoked: no further coupon of it is revealed, here or
// (through the saved state) in a later process.
func (t *Transport) retire(l *lane) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	l.retired = true
	t.wake()
	if t.st != nil {
		return t.st.save(t.all)
	}
	return nil
}

// RoundTrip implements http.RoundTripper: it sends req (with
// Accept-Payment: ecoupon/charge, ecoupon/session unless Scheme is
// SchemeECoupon); on a 402 whose challenge it can answer in its Scheme it
// pays on a lane of its own and sends req once more. The body of a
// metered response tops up as it is read (meteredBody).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if err := checkScheme(t.Scheme); err != nil {
		return nil, err
	}
	if req.Body != nil && req.GetBody == nil {
		return nil, errors.New("wallet: a request with a body needs GetBody to be retried after a 402")
	}
	req = offerPayment(req, t.Scheme)
	resp, err := base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusPaymentRequired {
		return resp, err
	}
	ch, err := ChallengeFromResponse(resp.Header, t.Scheme)
	if err != nil {
		return resp, nil // not ours to answer
	}
	resp.Body.Close()
	return t.Answer(req, ch)
}

// Answer pays the challenge ch for req on a lane of its own and sends req
// again with the payment: a Payment credential when ch was read from a
// Payment challenge (ch.Payment), Authorization: ECoupon otherwise. When every lane is in use it waits for one
// (LaneWait, req's context); a lane the gate refuses as cap_exceeded or
// revoked is retired at once, and the refusal returned.
func (t *Transport) Answer(req *http.Request, ch *Challenge) (*http.Response, error) {
	return t.answer(req, ch, t.laneWait())
}

// answer is Answer waiting up to wait for a lane (negative: not at all).
func (t *Transport) answer(req *http.Request, ch *Challenge, wait time.Duration) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	// The host the request goes to (the URL's) and the one it names (a
	// Host header, when set) must both be the vendor's: the coupons are
	// delivered to the first and bound to the second.
	for _, h := range []string{req.URL.Host, req.Host} {
		if vendor := t.holder.Book.Book.Vendor; h != "" && !t.paysHost(hostname(h)) {
			return nil, fmt.Errorf("%w: %s claims to be %s, whose book this is, but is not its host (if it belongs to %s, add it to the wallet's hosts)",
				ErrWrongVendor, hostname(h), vendor, vendor)
		}
	}
	if err := t.acceptable(ch); err != nil {
		return nil, err
	}
	body, err := t.readBody(req)
	if err != nil {
		return nil, err
	}
	l, err := t.take(req.Context(), wait, ch.Store)
	if err != nil {
		return nil, err
	}
	orig := l.nonce // the lane's open before this payment, kept if a re-open is refused
	t.mu.Lock()
	start := l.cursor.Position()
	t.mu.Unlock()
	for attempt := 0; ; attempt++ {
		resp, err := t.pay(base, req, body, ch, l)
		code, resume := "", uint32(0)
		if err == nil && resp.StatusCode == http.StatusPaymentRequired {
			code, resume = refusal(resp)
		}
		if code == coupons.CodeLaneReserved {
			// An online gate: the broker pinned this lane to another gate
			// (with its own store), which still knows it under its first
			// open: keep that, and the lane for last.
			t.mu.Lock()
			l.nonce = orig
			if t.st != nil {
				err = t.st.save(t.all)
			}
			t.mu.Unlock()
			if err != nil {
				resp.Body.Close()
				t.give(l)
				return nil, err
			}
		}
		if code == coupons.CodeCapExceeded || code == coupons.CodeRevoked {
			// Refused for good: reveal nothing more on this lane.
			if rerr := t.retire(l); rerr != nil {
				resp.Body.Close()
				return nil, rerr
			}
			return resp, nil
		}
		var nch *Challenge
		if code == coupons.CodeLaneNotOpen || code == coupons.CodeLaneReserved || code == coupons.CodeCouponSpent ||
			code == coupons.CodeInsufficientPayment && t.remaining(l) > 0 {
			nch, _ = nextChallenge(resp.Header, ch)
			if nch != nil && nch.Payment != nil {
				nch.Resume = resume // the problem says where the lane resumes
			}
		}
		if nch == nil || attempt >= 2 {
			if err == nil && resp.StatusCode < 300 && resp.Header.Get(coupons.HeaderMeter) != "" && ch.Meter != "" {
				// A metered response: the lane stays this response's
				// until its body is read (top-ups pay on it).
				t.meter(req, resp, ch, l, start)
				return resp, nil
			}
			t.give(l)
			return resp, err
		}
		resp.Body.Close()
		if err := t.acceptable(nch); err != nil {
			t.give(l)
			return nil, err // a retry's challenge passes the same checks
		}
		ch = nch
		if code == coupons.CodeInsufficientPayment {
			// Coupons kept as credit (the wallet did not know the lane's
			// credit): the gate said the credit, pay the rest.
			continue
		}
		if code == coupons.CodeCouponSpent {
			// The gate says the lane resumes further on: it restarted
			// while holding a spending lease on it (or another of the
			// vendor's gates took those coupons). Skip to there, within
			// the lease it advertises, and pay again.
			if err := t.resumeAt(l, nch, hostname(req.URL.Host)); err != nil {
				t.give(l)
				return nil, err
			}
			continue
		}
		if code == coupons.CodeLaneReserved {
			// Pay on another lane.
			t.mu.Lock()
			t.free = append([]*lane{l}, t.free...)
			t.wake()
			t.mu.Unlock()
			if l, err = t.take(req.Context(), wait, ch.Store); err != nil {
				return nil, err
			}
			orig = l.nonce
			continue
		}
		// lane_not_open: the gate does not know the lane (its open was lost
		// in flight, or with the gate's store, or it is another gate). Open
		// it again on the new challenge, from where the cursor stands: no
		// coupon is revealed twice.
		t.mu.Lock()
		l.nonce = ""
		t.mu.Unlock()
	}
}

// ErrResumeRefused means a gate asked the wallet to skip more coupons of a
// lane than its spending lease allows, or too often: the wallet does not
// pay such a gate.
var ErrResumeRefused = errors.New("wallet: the gate asks to skip coupons beyond its lease")

// resumeMinInterval is how often one lane may be made to skip coupons: a
// gate's restart is rare, and a gate that says "spent" on every payment
// would otherwise take a lease's worth each time.
const resumeMinInterval = 10 * time.Minute

// resumeAt moves lane l's cursor so that its next coupon is ch.Resume, the
// first one the gate takes after refusing the last as spent: the coupons
// skipped were revealed to nobody, but the gate may have accepted them
// before a crash, so they are lost (and charged to the budget). Nothing
// moves when the gate's resume is at or below the cursor; a skip larger
// than the lease the challenge advertises, or a second one within
// resumeMinInterval, is refused.
func (t *Transport) resumeAt(l *lane, ch *Challenge, host string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	pos := l.cursor.Position()
	if ch.Resume <= pos+1 {
		return nil // the next coupon is the one the gate takes
	}
	skip := ch.Resume - 1 - pos
	now := time.Now()
	switch {
	case skip > ch.Lease:
		return fmt.Errorf("%w: lane %s resumes at coupon %d, %d past the wallet's %d, lease %d", ErrResumeRefused, l.id, ch.Resume, skip, pos, ch.Lease)
	case !l.resumed.IsZero() && now.Sub(l.resumed) < resumeMinInterval:
		return fmt.Errorf("%w: lane %s was already made to skip coupons %v ago", ErrResumeRefused, l.id, now.Sub(l.resumed).Round(time.Second))
	case skip > l.cursor.Remaining():
		return fmt.Errorf("%w: lane %s resumes at coupon %d, beyond the wallet's coupons", ErrResumeRefused, l.id, ch.Resume)
	}
	b := t.holder.Book.Book
	if t.Budget != nil {
		cost, err := coupons.MulAmount(uint64(skip), b.Unit)
		if err == nil {
			err = t.Budget.Charge(host, b.Currency, cost)
		}
		if err != nil {
			return err
		}
	}
	for range skip {
		if _, _, _, _, err := l.cursor.Next(); err != nil {
			return err
		}
	}
	l.resumed = now
	t.spent += uint64(skip)
	if t.st != nil {
		return t.st.save(t.all)
	}
	return nil
}

// acceptable checks a challenge against the book and the price limit.
func (t *Transport) acceptable(ch *Challenge) error {
	b := t.holder.Book.Book
	maxPrice := t.MaxPrice
	if maxPrice == 0 {
		maxPrice = 100
	}
	switch {
	case ch.Vendor != b.Vendor:
		return fmt.Errorf("%w: %s, the book is for %s", ErrWrongVendor, ch.Vendor, b.Vendor)
	case ch.Price > maxPrice:
		return fmt.Errorf("%w: %d coupons asked, limit %d", ErrPriceLimit, ch.Price, maxPrice)
	case ch.Currency != b.Currency || ch.Unit != coupons.FormatAmount(b.Unit):
		return fmt.Errorf("wallet: the vendor takes coupons of %s %s, the book's are %s %s", ch.Unit, ch.Currency, coupons.FormatAmount(b.Unit), b.Currency)
	}
	if ch.Meter != "" {
		maxWindow := t.MaxWindow
		if maxWindow == 0 {
			maxWindow = 256
		}
		if uint64(ch.Window)*uint64(ch.Price) > uint64(maxWindow) {
			return fmt.Errorf("%w: a window of %d units at %d coupons each, limit %d coupons", ErrPriceLimit, ch.Window, ch.Price, maxWindow)
		}
	}
	return nil
}

// refusalCode returns the error code of a 402's body ("" when none); it
// leaves resp's body readable.
func refusalCode(resp *http.Response) string {
	code, _ := refusal(resp)
	return code
}

// refusal returns the reason code of a 402's body: the ECoupon scheme's
// JSON ("error"), or the problem details the gate answers the Payment
// scheme with ("code"), and then the problem's resume (0 otherwise: the
// ECoupon scheme says it in its challenge). It leaves resp's body
// readable.
func refusal(resp *http.Response) (code string, resume uint32) {
	orig := resp.Body
	raw, _ := io.ReadAll(io.LimitReader(orig, 1<<16))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(raw), orig), orig}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == payment.ContentTypeProblem {
		p, err := payment.ParseProblem(raw)
		if err != nil {
			return "", 0
		}
		return p.Code, p.Resume
	}
	var p struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &p) != nil {
		return "", 0
	}
	return p.Error, 0
}

// requestBody is a paid request's body, read once to be hashed and sent
// (again) with each payment.
type requestBody struct {
	data []byte
	sum  [32]byte
}

// readBody reads req's body (from GetBody: RoundTrip sent it once
// already), at most MaxBody bytes; nil for a request without one or with an
// empty one.
func (t *Transport) readBody(req *http.Request) (*requestBody, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	if req.GetBody == nil {
		return nil, errors.New("wallet: a request with a body needs GetBody to be paid for after a 402")
	}
	limit := t.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	if req.ContentLength > limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBodyTooLarge, req.ContentLength, limit)
	}
	rc, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, limit)
	}
	if len(data) == 0 {
		return nil, nil
	}
	return &requestBody{data: data, sum: sha256.Sum256(data)}, nil
}

// rangeHeader returns the request's Range field lines joined with ", ", as
// the request digest binds them.
func rangeHeader(h http.Header) string {
	return strings.Join(h.Values("Range"), ", ")
}

// pay pays ch for req, whose body is body, on lane l (opening it first if
// it is not open) and sends req with the payment and, with a body, its
// Content-Digest.
func (t *Transport) pay(base http.RoundTripper, req *http.Request, body *requestBody, ch *Challenge, l *lane) (*http.Response, error) {
	var err error
	b := t.holder.Book.Book
	retry := req.Clone(req.Context())
	if body != nil {
		data := body.data
		retry.Body = io.NopCloser(bytes.NewReader(data))
		retry.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
		retry.ContentLength = int64(len(data))
		retry.Header.Set(coupons.HeaderContentDigest, coupons.ContentDigestHeader(&body.sum))
	} else if req.Body != nil && req.Body != http.NoBody {
		retry.Body, retry.ContentLength = http.NoBody, 0 // an empty body
	}
	var open string
	if l.nonce == "" {
		o, err := t.holder.Open(l.id.Lane, ch.Nonce)
		if err != nil {
			return nil, err
		}
		open = string(spki.Transport(o.Sexp()))
		if ch.Payment != nil && len(open) > payment.MaxCredentialLen/2 {
			// Refused before a coupon leaves (payment.NewCredential).
			return nil, fmt.Errorf("wallet: %w: the lane-open document has %d bytes, a Payment credential carries %d", payment.ErrTooLarge, len(open), payment.MaxCredentialLen/2)
		}
	}
	// Advance the cursor and save the state before anything is revealed.
	t.mu.Lock()
	n := uint32(1)
	if want := ch.want(); want > l.credit && !l.creditUnknown {
		n = want - l.credit
	}
	n = min(n, l.cursor.Remaining())
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	host = strings.ToLower(host)
	if t.Budget != nil {
		cost, cerr := coupons.MulAmount(uint64(n), b.Unit)
		if err = cerr; err == nil {
			err = t.Budget.Charge(hostname(host), b.Currency, cost)
		}
	}
	if err == nil && open != "" {
		l.nonce = ch.Nonce
	}
	if err == nil && l.store == "" {
		l.store = ch.Store // bound before its first coupon leaves (saved below)
	}
	var i uint32
	var w, next coupons.Value
	var hasNext bool
	for k := uint32(0); k < n && err == nil; k++ {
		i, w, next, hasNext, err = l.cursor.Next()
	}
	if err == nil && t.st != nil {
		err = t.st.save(t.all)
	}
	if err == nil {
		t.spent += uint64(n)
	}
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if open != "" && ch.Payment == nil {
		retry.Header.Set("ECoupon-Open", open)
	}
	creq := coupons.Request{Method: req.Method, Host: host, Path: req.URL.EscapedPath(), Query: req.URL.RawQuery,
		Range: rangeHeader(req.Header), Lane: l.id, Index: i, Nonce: l.nonce}
	if body != nil {
		creq.ContentDigest = body.sum[:]
	}
	d := creq.Digest()
	var np *coupons.Value
	if hasNext {
		np = &next
	}
	p := coupons.Pay(l.id, i, w, np, &d)
	if ch.Payment != nil {
		// The Payment scheme: the same payment, and the lane's open
		// document on its first use, in a credential answering the
		// challenge.
		var doc []byte
		if open != "" {
			doc = []byte(open)
		}
		cr, cerr := payment.NewCredential(ch.Payment, &p, doc)
		if cerr == nil {
			cerr = cr.SetHeader(retry.Header)
		}
		if cerr != nil {
			// Nothing was sent: the coupons advanced are skipped, never
			// revealed.
			return nil, cerr
		}
	} else {
		retry.Header.Set("Authorization", p.Header())
	}
	resp, err := base.RoundTrip(retry)
	if err != nil {
		t.mu.Lock()
		l.unanswered += n
		t.mu.Unlock()
		return nil, err
	}
	t.mu.Lock()
	span := n + l.unanswered
	l.unanswered = 0
	t.mu.Unlock()
	if h := receiptOf(resp.Header, ch); h != "" && t.Receipts != nil {
		u := *retry.URL
		u.RawQuery, u.Fragment, u.User = "", "", nil
		// A receipt that cannot be kept does not undo the payment.
		_ = t.Receipts.Record(ReceiptRecord{Vendor: b.Vendor, URL: u.String(), Origin: u.Scheme + "://" + u.Host, Header: h,
			Lane: l.id.String(), Index: i, Paid: n, Span: span, Digest: base64.RawURLEncoding.EncodeToString(d[:])})
	}
	credit := uint32(0)
	if c, err := strconv.ParseUint(resp.Header.Get("ECoupon-Credit"), 10, 32); err == nil {
		credit = uint32(c)
	}
	t.setCredit(l, credit, false)
	return resp, nil
}

// setCredit records what a gate said lane l is owed (unknown: a metered
// response cut off before it said), saving the state when it changed, so
// that the next process pays what is due and no more: coupons beyond it
// would be spent, not credited.
func (t *Transport) setCredit(l *lane, credit uint32, unknown bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.credit == credit && l.creditUnknown == unknown {
		return
	}
	l.credit, l.creditUnknown = credit, unknown
	if t.st != nil {
		_ = t.st.save(t.all) // at worst the next process pays one payment too many coupons
	}
}

// receiptOf returns the gate's TESLA receipt of a paid response, as the
// ECoupon-Receipt value: that field for the ECoupon scheme, the reference
// of Payment-Receipt for the Payment scheme ("" when there is none, or it
// does not decode).
func receiptOf(h http.Header, ch *Challenge) string {
	if ch.Payment == nil {
		return h.Get(coupons.HeaderReceipt)
	}
	v := h.Get(payment.HeaderReceipt)
	if v == "" {
		return ""
	}
	r, err := payment.ParseReceipt(v)
	if err != nil {
		return ""
	}
	tr, err := r.TESLA()
	if err != nil || tr == nil {
		return ""
	}
	return tr.Header()
}

// paysHost reports whether the transport pays challenges for requests to
// host (lower-case, without port): see Hosts.
func (t *Transport) paysHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	vendor := t.holder.Book.Book.Vendor
	if host == vendor || strings.HasSuffix(host, "."+vendor) || host == "localhost" ||
		slices.ContainsFunc(t.Hosts, func(h string) bool { return strings.TrimSuffix(strings.ToLower(h), ".") == host }) {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostname strips the port from a Host header value.
func hostname(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return strings.Trim(h, "[]")
	}
	return strings.Trim(host, "[]")
}
