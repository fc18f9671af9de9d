package caddymodule

import (
	"crypto"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/tesla"
)

// labelReceiptChain is the HKDF info prefix of a receipt chain's seed.
const labelReceiptChain = "ecoupons receipt chain v1"

// VendorPath serves the vendor's signed receipt-chain commitments.
const VendorPath = coupons.ReceiptCommitmentPath

// HeaderReceipt carries the TESLA receipt of a paid response.
const HeaderReceipt = coupons.HeaderReceipt

// receiptIntervals is the length of one receipt chain; at its end the gate
// starts a new chain with a new signed commitment.
const receiptIntervals = 86400

// receiptEpoch is one receipt key chain and its signed commitment.
type receiptEpoch struct {
	sender *tesla.Sender
	doc    []byte // canonical (sequence (ecoupons-receipts …) (signature …))
	id     string // base64url of the first 12 bytes of the commitment object's hash
}

// receipts issues TESLA receipts: each paid response is MACed under the
// key of the current interval, which is disclosed Delay intervals later,
// so a client can prove afterwards that the vendor acknowledged a payment.
type receipts struct {
	signer   crypto.Signer
	pub      *spki.PublicKey
	vendor   string
	secret   []byte
	interval time.Duration
	delay    uint64
	now      func() time.Time

	mu        sync.Mutex
	cur, prev *receiptEpoch
}

func newReceipts(signer crypto.Signer, vendor string, secret []byte, interval time.Duration, delay uint64, now func() time.Time) (*receipts, error) {
	pub, err := spki.NewPublicKey(signer.Public())
	if err != nil {
		return nil, err
	}
	r := &receipts{signer: signer, pub: pub, vendor: vendor, secret: secret, interval: interval, delay: delay, now: now}
	if r.cur, err = r.newEpoch(); err != nil {
		return nil, err
	}
	return r, nil
}

// newEpoch derives the chain of the current period and signs its
// commitment. Periods are receiptIntervals intervals long (a day at 1 s)
// and aligned (time.Truncate), and the chain's seed depends only on the
// secret, the vendor and the period: every gate of a fleet sharing a
// secret_file issues receipts under the same chain and serves the same
// commitment, whichever node a client asks.
func (r *receipts) newEpoch() (*receiptEpoch, error) {
	t0 := r.now().Truncate(r.interval * receiptIntervals).Add(-r.interval)
	info := binary.BigEndian.AppendUint64([]byte(labelReceiptChain), uint64(t0.Unix()))
	seedBytes, err := hkdf.Key(sha256.New, r.secret, []byte(r.vendor), string(info), 32)
	if err != nil {
		return nil, err
	}
	var seed tesla.Key
	copy(seed[:], seedBytes)
	chain, err := tesla.NewChain(seed, receiptIntervals)
	if err != nil {
		return nil, err
	}
	sched := tesla.Schedule{T0: t0, Interval: r.interval, Delay: r.delay}
	sender, err := tesla.NewSender(chain, sched, r.now)
	if err != nil {
		return nil, err
	}
	c := &coupons.ReceiptCommitment{Vendor: r.vendor, Schedule: sched, Intervals: receiptIntervals, Commitment: chain.Commitment()}
	if err := c.Sign(r.signer); err != nil {
		return nil, fmt.Errorf("signing the receipt commitment: %w", err)
	}
	return &receiptEpoch{sender: sender, doc: spki.Canonical(c.Sexp()), id: c.ID()}, nil
}

// header returns the ECoupon-Receipt value for msg:
// c=<commitment id>, t=<interval>, m=<MAC>, d=<disclosed interval>, k=<disclosed key>.
func (r *receipts) header(msg []byte) (string, error) {
	r.mu.Lock()
	ep := r.cur
	r.mu.Unlock()
	p, err := ep.sender.Authenticate(msg)
	if errors.Is(err, tesla.ErrChainExhausted) {
		r.mu.Lock()
		if r.cur == ep { // rotate once, whoever gets here first
			next, nerr := r.newEpoch()
			if nerr != nil {
				r.mu.Unlock()
				return "", nerr
			}
			r.prev, r.cur = r.cur, next
		}
		ep = r.cur
		r.mu.Unlock()
		p, err = ep.sender.Authenticate(msg)
	}
	if err != nil {
		return "", err
	}
	p.Message = nil
	return (&coupons.Receipt{Commitment: ep.id, Packet: p}).Header(), nil
}

// serve answers GET /.well-known/ecoupons/vendor[?c=<id>] with the signed
// commitment (the current one, or the one named).
func (r *receipts) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	cur, prev := r.cur, r.prev
	r.mu.Unlock()
	ep := cur
	if id := req.URL.Query().Get("c"); id != "" && id != cur.id {
		if prev == nil || prev.id != id {
			writeJSON(w, http.StatusNotFound, problem{Error: coupons.CodeUnknownCommitment, Reason: "no receipt chain " + id + " here (only the current and the previous one are kept)"})
			return
		}
		ep = prev
	}
	w.Header().Set("Content-Type", "application/x-spki-sexp")
	if ep == cur {
		// The key disclosed now (no message is authenticated: an empty
		// MAC is computed and dropped).
		if p, err := ep.sender.Authenticate(nil); err == nil && p.DisclosedIndex > 0 {
			w.Header().Set(coupons.HeaderDisclosed, "d="+strconv.FormatUint(p.DisclosedIndex, 10)+", k="+base64.RawURLEncoding.EncodeToString(p.DisclosedKey[:]))
		}
		w.Header().Set("Cache-Control", "no-store")
	} else {
		// A past chain: once its schedule allows, its last key, which
		// authenticates the receipts of its last intervals.
		if n, k, ok := ep.sender.Final(r.now()); ok {
			w.Header().Set(coupons.HeaderDisclosed, "d="+strconv.FormatUint(n, 10)+", k="+base64.RawURLEncoding.EncodeToString(k[:]))
		}
		w.Header().Set("Cache-Control", "public, max-age=60")
	}
	w.Write(ep.doc)
}
