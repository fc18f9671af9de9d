package caddymodule

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/lanes"
	"github.com/ecoupons/ecoupons/payment"
	"go.uber.org/zap"
)

// The gate's side of the HTTP "Payment" authentication scheme, method
// ecoupon, intent charge (docs/payment-method-ecoupon.md): package payment
// is the codec, and a Payment credential's payload goes through the same
// steps as an ECoupon payment (readContent, accept, respondPaid,
// serveUpstream). Two hooks tie it to the gate: ServeHTTP hands requests
// that speak the scheme to servePayment, and writeJSON lets
// writePaymentScheme add the Payment challenge to every 402 and answer
// such requests with problem details.

// Header keys of the Payment scheme in canonical form (hotpath.go).
const (
	keyAcceptPayment        = "Accept-Payment"        // payment.HeaderAcceptPayment
	keyPaymentAuthorization = "Payment-Authorization" // payment.HeaderPaymentAuthorization
)

// paymentScheme is what the gate keeps for the Payment scheme: the binder
// of its challenges and the terms a credential's echoed request must have.
type paymentScheme struct {
	binder *payment.Binder
	route  payment.ECouponRequest // vendor, price, unit, currency (and meter, window) of the route
	intent string                 // charge, or session on a metered route
	ttl    time.Duration          // the nonces' bucket length
	logger *zap.Logger
}

// newPaymentScheme keys the binder with a secret derived from the gate's
// nonce secret (payment.BindingSecret), so that every gate sharing a
// secret_file verifies the others' challenges.
func newPaymentScheme(secret []byte, c *challenge, ttl time.Duration, logger *zap.Logger) (*paymentScheme, error) {
	b, err := payment.NewBinder(payment.BindingSecret(secret))
	if err != nil {
		return nil, err
	}
	ps := &paymentScheme{binder: b, ttl: ttl, logger: logger, intent: payment.IntentCharge,
		route: payment.ECouponRequest{Vendor: c.Vendor, Price: c.Price, Unit: c.Unit, Currency: c.Currency, Meter: c.Meter, Window: c.Window}}
	if c.Meter != "" {
		ps.intent = payment.IntentSession
	}
	// The route's terms must make a challenge (a realm without '|', a
	// decimal unit): refused here rather than at every 402.
	probe := ps.route
	probe.Nonce, probe.Broker = "probe", c.Broker
	if _, err := b.Issue(c.Realm, ps.intent, &probe, time.Now().Add(ttl), false); err != nil {
		return nil, err
	}
	return ps, nil
}

// nonceEnd returns when a nonce of nonceMaker stops being accepted: the
// end of the bucket after the one it was issued in.
func (ps *paymentScheme) nonceEnd(nonce string) (time.Time, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(raw) != 24 {
		return time.Time{}, false
	}
	b := binary.BigEndian.Uint64(raw[:8])
	return time.Unix(0, int64(b+2)*int64(ps.ttl)), true
}

// challenges returns the Payment challenges to offer beside the ECoupon
// challenge c: the charge challenge (session on a metered route) with c's
// terms and nonce, expiring with the nonce, unless the request's
// Accept-Payment (req, nil for none) refuses that intent (q=0). With paymentAuthorization, the challenge
// asks for the credential in Payment-Authorization.
func (ps *paymentScheme) challenges(c *challenge, req http.Header, paymentAuthorization bool) []*payment.Challenge {
	exp, ok := ps.nonceEnd(c.Nonce)
	if !ok {
		return nil
	}
	terms := &payment.ECouponRequest{Vendor: c.Vendor, Price: c.Price, Unit: c.Unit, Currency: c.Currency,
		Broker: c.Broker, Nonce: c.Nonce, Store: c.Store, Lease: c.Lease, Meter: c.Meter, Window: c.Window}
	pc, err := ps.binder.Issue(c.Realm, ps.intent, terms, exp, paymentAuthorization)
	if err != nil {
		// The route's terms were checked at Provision: this is a bug.
		ps.logger.Error("could not issue a Payment challenge", zap.Error(err))
		return nil
	}
	offered := []payment.Challenge{*pc}
	if req != nil && len(req[keyAcceptPayment]) > 0 {
		// Offer orders what the client accepts and ignores a field that
		// accepts none of ours (the draft lets a server do so); a client
		// that refuses ecoupon outright (q=0) is not offered it.
		if a, err := payment.ParseAcceptPayment(joinValues(req[keyAcceptPayment])); err == nil {
			if q, ok := a.Q(payment.Method, ps.intent); ok && q == 0 {
				return nil
			}
		}
		offered = payment.Offer(req, offered)
	}
	out := make([]*payment.Challenge, len(offered))
	for i := range offered {
		out[i] = &offered[i]
	}
	return out
}

func joinValues(vs []string) string {
	if len(vs) == 1 {
		return vs[0]
	}
	s := vs[0]
	for _, v := range vs[1:] {
		s += "," + v
	}
	return s
}

// speaksPayment reports whether a request is to be answered in the
// Payment scheme: its client speaks it (payment.SpeaksPayment: it sends
// Accept-Payment, Payment-Authorization or an Authorization of the Payment
// scheme) and does not pay with Authorization: ECoupon, which is answered
// in the ECoupon scheme. An ECoupon payment is told apart by its one
// Authorization field, which ServeHTTP reads first: its steady path pays
// nothing for the Payment scheme.
func speaksPayment(h http.Header) bool {
	if a := h[keyAuthorization]; len(a) == 1 && hasScheme(a[0], coupons.Scheme) {
		return false
	}
	if len(h[keyAcceptPayment]) > 0 || len(h[keyPaymentAuthorization]) > 0 {
		return true
	}
	for _, v := range h[keyAuthorization] {
		if hasScheme(v, payment.Scheme) {
			return true
		}
	}
	return false
}

// paymentWriter is the ResponseWriter of the gate's steps for a request
// that speaks the Payment scheme: what the steps answer through writeJSON
// becomes problem details (writePaymentScheme). The next handler gets the
// client's writer, not this one.
type paymentWriter struct {
	http.ResponseWriter
	g   *Gate
	req http.Header // the request's fields (Accept-Payment)
	// paymentAuthorization asks for credentials in Payment-Authorization:
	// the client sent its credential there, or keeps Authorization for
	// another scheme.
	paymentAuthorization bool
}

// writePaymentScheme is writeJSON's hook. Every 402 carrying the ECoupon
// challenge c gets the Payment challenge beside it; to a request that
// speaks the Payment scheme (w is a *paymentWriter) the answer is the
// problem details of the reason code instead of the ECoupon JSON, with
// the draft's status (a 402 with fresh challenges of both schemes where
// the ECoupon scheme answers 400 bad_payment_header or bad_open). It
// reports whether it wrote the answer.
func writePaymentScheme(w http.ResponseWriter, status int, v any) bool {
	pw, speaks := w.(*paymentWriter)
	c, isChallenge := v.(challenge)
	if !speaks {
		if isChallenge && c.pay != nil {
			for _, pc := range c.pay.challenges(&c, nil, false) {
				w.Header().Add("WWW-Authenticate", pc.String())
			}
		}
		return false
	}
	var p *payment.Problem
	switch v := v.(type) {
	case challenge:
		p = payment.NewProblem(v.Error, v.Reason)
		p.Resume, p.Hint = v.Resume, v.Hint
	case problem:
		p = payment.NewProblem(v.Error, v.Reason)
	default:
		return false
	}
	if !isChallenge && p.Status != http.StatusPaymentRequired {
		p.Status = status // what is not about the payment keeps the gate's status
	}
	pw.writeProblem(p, cOrNil(isChallenge, &c))
	return true
}

func cOrNil(ok bool, c *challenge) *challenge {
	if ok {
		return c
	}
	return nil
}

// writeProblem answers with problem p. A 402 carries fresh challenges of
// both schemes: c's when the gate made one (its ECoupon header is set), a
// new one otherwise.
func (pw *paymentWriter) writeProblem(p *payment.Problem, c *challenge) {
	if p.Status != http.StatusPaymentRequired {
		payment.WriteChallenge(pw.ResponseWriter, p)
		return
	}
	if c == nil {
		fresh := pw.g.challenge
		fresh.Error, fresh.Reason, fresh.Nonce, fresh.Hint = p.Code, p.Detail, pw.g.nonces.issue(), hintPayment
		pw.Header().Set("WWW-Authenticate", fresh.header())
		c = &fresh
	}
	if p.Hint == "" || p.Hint == hintPay {
		p.Hint = hintPayment
	}
	var cs []*payment.Challenge
	if c.pay != nil {
		cs = c.pay.challenges(c, pw.req, pw.paymentAuthorization)
	}
	payment.WriteChallenge(pw.ResponseWriter, p, cs...)
}

// hintPayment is the hint of a 402 to a client of the Payment scheme.
const hintPayment = "answer the Payment challenge of method ecoupon: a credential whose payload is the payment (lane, index, value, binding) and, on the lane's first use, its open document answering the challenge's nonce"

// servePayment serves a request whose client speaks the Payment scheme,
// through the steps of ServeHTTP with the refusals in problem details. A
// Payment credential's challenge is checked (payment.Binder.VerifyECoupon:
// binding, expiry, the route's terms), then its payment is verified as an
// ECoupon payment, its open document taking the place of ECoupon-Open; a
// request without one (Accept-Payment alone) is answered 402 with a
// problem. A paid response gets Payment-Receipt.
func (g *Gate) servePayment(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	pw := g.newPaymentWriter(w, r)
	var p coupons.Payment
	cr, open, ok := g.readCredential(pw, r, &p)
	if !ok {
		return nil // answered
	}
	body, ok := g.readContent(pw, r)
	if !ok {
		return nil
	}
	started := time.Now()
	restore := setOpen(r.Header, open)
	doc := headerValue(r.Header, keyOpen)
	var res lanes.Result
	ok = g.accept(pw, r, &p, doc, body, g.clockAt(started), &res)
	restore()
	if !ok {
		return nil
	}
	g.observeDelay(started)
	g.reportTheft(p.Lane, res.Theft)
	if !g.respondPaid(pw, &p, &res, doc != "") {
		return nil
	}
	if cr != nil {
		rw := &receiptWriter{ResponseWriter: w, receipt: g.paymentReceipt(w.Header(), &p)}
		payment.SetReceipt(w.Header(), rw.receipt)
		w = rw
	}
	if g.Meter != nil {
		if g.topupByHead(w, r, p.Lane, res.Held) {
			return nil
		}
		return g.serveMetered(w, r, next, p.Lane, res.Held)
	}
	return g.serveUpstream(w, r, next, p.Lane)
}

// newPaymentWriter is the writer of the gate's answers to r, a request
// that speaks the Payment scheme.
func (g *Gate) newPaymentWriter(w http.ResponseWriter, r *http.Request) *paymentWriter {
	pw := &paymentWriter{ResponseWriter: w, g: g, req: r.Header}
	if a := headerValue(r.Header, keyAuthorization); len(r.Header[keyPaymentAuthorization]) > 0 ||
		(a != "" && !hasScheme(a, payment.Scheme) && !hasScheme(a, coupons.Scheme)) {
		pw.paymentAuthorization = true
	}
	return pw
}

// readCredential reads the payment of a request that speaks the Payment
// scheme into p: a Payment credential's, checked against its challenge
// (payment.Binder.VerifyECoupon: binding, expiry, the route's terms), with
// its open document (nil when none), or an ECoupon payment's (cr nil). A
// request without either is answered 402 with a problem; it reports
// whether it read a payment (otherwise it has answered).
func (g *Gate) readCredential(pw *paymentWriter, r *http.Request, p *coupons.Payment) (cr *payment.Credential, open []byte, ok bool) {
	cr, _, err := payment.CredentialFromRequest(r.Header)
	switch {
	case errors.Is(err, payment.ErrNoCredential):
		return nil, nil, g.parsePayment(pw, r, p)
	case err != nil:
		g.refuseCredential(pw, err)
		return nil, nil, false
	}
	_, paid, doc, err := g.pay.binder.VerifyECoupon(cr, &g.pay.route, g.clock())
	if err != nil {
		g.refuseCredential(pw, err)
		return nil, nil, false
	}
	*p = *paid
	return cr, doc, true
}

// setOpen puts a credential's open document where accept reads the
// ECoupon-Open header, for the time of accept: the function it returns
// puts the request's own field back, so that the next handler sees the
// request as sent. A nil doc changes nothing.
func setOpen(h http.Header, doc []byte) func() {
	if doc == nil {
		return func() {}
	}
	saved, had := h[keyOpen]
	h[keyOpen] = []string{string(doc)}
	return func() {
		if had {
			h[keyOpen] = saved
		} else {
			delete(h, keyOpen)
		}
	}
}

// refuseCredential answers a Payment credential that the codec refused
// (payment.ProblemForError): 402 with fresh challenges, or 400 for
// another method. The error quotes at most 48 bytes of the credential.
func (g *Gate) refuseCredential(pw *paymentWriter, err error) {
	p := payment.ProblemForError(err)
	reason := p.Code
	if reason == "" {
		reason = "method_unsupported"
	}
	gateMetrics.payments.WithLabelValues(g.Vendor, reason).Inc()
	pw.writeProblem(p, nil)
}

// paymentReceipt returns the receipt of a paid response: its reference
// is the TESLA receipt respondPaid set in ECoupon-Receipt when the gate
// signs receipts, the lane and index otherwise.
func (g *Gate) paymentReceipt(h http.Header, p *coupons.Payment) *payment.Receipt {
	var tesla *coupons.Receipt
	if v := headerValue(h, keyReceipt); v != "" {
		if t, err := coupons.ParseReceipt(v); err == nil {
			tesla = t
		}
	}
	return payment.NewReceipt(p.Lane, p.Index, tesla, g.clock())
}

// receiptWriter is the writer the next handler gets for a response paid
// with a Payment credential: when the response's header is written, it
// sets Payment-Receipt and Cache-Control: private again (payment.SetReceipt),
// so that an upstream's Cache-Control: public cannot let a shared cache
// serve a paid response to others. Flushes, ReadFrom (sendfile), hijacking
// and Push reach the client's writer.
type receiptWriter struct {
	http.ResponseWriter
	receipt *payment.Receipt
	done    bool
}

func (rw *receiptWriter) seal() {
	if !rw.done {
		rw.done = true
		payment.SetReceipt(rw.Header(), rw.receipt)
	}
}

// WriteHeader seals the header before a final status.
func (rw *receiptWriter) WriteHeader(code int) {
	if code >= 200 || code < 100 {
		rw.seal()
	}
	rw.ResponseWriter.WriteHeader(code)
}

// Write writes body bytes (after an implicit 200).
func (rw *receiptWriter) Write(b []byte) (int, error) {
	rw.seal()
	return rw.ResponseWriter.Write(b)
}

// ReadFrom lets the client's writer copy a body itself.
func (rw *receiptWriter) ReadFrom(r io.Reader) (int64, error) {
	rw.seal()
	if rf, ok := rw.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(rw.ResponseWriter, r)
}

// FlushError flushes the client's writer (http.ResponseController).
func (rw *receiptWriter) FlushError() error {
	rw.seal()
	return http.NewResponseController(rw.ResponseWriter).Flush()
}

// Push implements http.Pusher when the client's writer does.
func (rw *receiptWriter) Push(target string, opts *http.PushOptions) error {
	if p, ok := rw.ResponseWriter.(http.Pusher); ok {
		return p.Push(target, opts)
	}
	return caddyhttp.ErrNotImplemented
}

// Unwrap returns the client's writer (http.ResponseController).
func (rw *receiptWriter) Unwrap() http.ResponseWriter { return rw.ResponseWriter }
