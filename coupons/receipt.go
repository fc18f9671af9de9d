package coupons

import (
	"crypto"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/tesla"
)

// LabelReceipt prefixes the message a vendor's receipt MACs.
const LabelReceipt = "ecoupons receipt v1"

// HeaderReceipt is the response header that carries a receipt.
const HeaderReceipt = "ECoupon-Receipt"

// HeaderDisclosed, on a receipt commitment served by a gate, carries the
// newest key of that chain the gate may disclose: "d=<index>, k=<key>"
// (base64url), so a client can check its receipts without another paid
// request.
const HeaderDisclosed = "ECoupon-Disclosed"

// ReceiptCommitmentPath is where a gate serves its signed receipt
// commitments: the current one, or the one named by ?c=<id>.
const ReceiptCommitmentPath = "/.well-known/ecoupons/vendor"

// ErrBadReceipt is a malformed receipt header or receipt commitment.
var ErrBadReceipt = errors.New("coupons: malformed receipt")

// ReceiptMessage is what a receipt MACs: LabelReceipt || book id ||
// be32(lane) || be32(index) || be32(coupons paid) || request digest.
func ReceiptMessage(lane LaneID, index, paid uint32, digest *[32]byte) []byte {
	m := make([]byte, 0, len(LabelReceipt)+32+12+32)
	m = append(m, LabelReceipt...)
	m = append(m, lane.Book[:]...)
	m = binary.BigEndian.AppendUint32(m, lane.Lane)
	m = binary.BigEndian.AppendUint32(m, index)
	m = binary.BigEndian.AppendUint32(m, paid)
	return append(m, digest[:]...)
}

// ReceiptCommitment is a vendor's signed commitment to a TESLA key chain
// under which it MACs receipts:
//
//	(sequence
//	  (ecoupons-receipts (version "1") (vendor v) (key (public-key …))
//	    (t0 "date") (interval-ms "n") (delay "d") (intervals "n")
//	    (commitment |K_0|))
//	  (signature …))                       ; by the vendor's key
type ReceiptCommitment struct {
	Vendor     string
	Key        *spki.PublicKey
	Schedule   tesla.Schedule
	Intervals  uint64
	Commitment tesla.Key
	Signature  *spki.Signature
}

func (c *ReceiptCommitment) body() spki.List {
	return spki.L("ecoupons-receipts", spki.L("version", "1"), spki.L("vendor", c.Vendor), spki.L("key", c.Key.Sexp()),
		spki.L("t0", spki.FormatDate(c.Schedule.T0)), spki.L("interval-ms", strconv.FormatInt(c.Schedule.Interval.Milliseconds(), 10)),
		spki.L("delay", strconv.FormatUint(c.Schedule.Delay, 10)), spki.L("intervals", strconv.FormatUint(c.Intervals, 10)),
		spki.L("commitment", c.Commitment[:]))
}

// Sign signs the commitment with the vendor's key.
func (c *ReceiptCommitment) Sign(vendor crypto.Signer) error {
	pub, err := spki.NewPublicKey(vendor.Public())
	if err != nil {
		return err
	}
	c.Key = pub
	c.Signature, err = spki.Sign(vendor, c.body())
	return err
}

// Sexp returns the signed commitment.
func (c *ReceiptCommitment) Sexp() spki.List { return spki.L("sequence", c.body(), c.Signature.Sexp()) }

// ID names the commitment in receipt headers: base64url of the first 12
// bytes of the SHA-256 of its (ecoupons-receipts …) body.
func (c *ReceiptCommitment) ID() string {
	h := spki.ObjectHash(c.body())
	return base64.RawURLEncoding.EncodeToString(h[:12])
}

// ParseReceiptCommitment parses a signed commitment and verifies its
// signature by its own key; the caller decides whether it trusts that key
// for the vendor.
func ParseReceiptCommitment(x spki.Sexp) (*ReceiptCommitment, error) {
	l, ok := x.(spki.List)
	if !ok || !l.Is("sequence") || len(l) != 3 {
		return nil, fmt.Errorf("%w: expected (sequence (ecoupons-receipts …) (signature …))", ErrBadReceipt)
	}
	b, ok := l[1].(spki.List)
	if !ok || !b.Is("ecoupons-receipts") {
		return nil, fmt.Errorf("%w: expected (ecoupons-receipts …)", ErrBadReceipt)
	}
	f := fields{list: b[1:]}
	c := &ReceiptCommitment{}
	if v := f.str("version"); f.err == nil && v != "1" {
		return nil, fmt.Errorf("%w: version %q", ErrBadReceipt, v)
	}
	c.Vendor = f.str("vendor")
	if k := f.next("key", 2); k != nil {
		if c.Key, f.err = spki.ParsePublicKey(k[1]); f.err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadReceipt, f.err)
		}
	}
	if t := f.str("t0"); f.err == nil {
		c.Schedule.T0, f.err = spki.ParseDate(t)
	}
	ms := f.uint32("interval-ms")
	c.Schedule.Interval = time.Duration(ms) * time.Millisecond
	c.Schedule.Delay = uint64(f.uint32("delay"))
	c.Intervals = uint64(f.uint32("intervals"))
	copy(c.Commitment[:], f.bytes("commitment", 32))
	if f.err == nil && len(f.list) != 0 {
		f.err = fmt.Errorf("%w: trailing fields", ErrBadReceipt)
	}
	if f.err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReceipt, f.err)
	}
	if err := c.Schedule.Validate(); err != nil || c.Intervals == 0 || c.Intervals > tesla.MaxChainLength {
		return nil, fmt.Errorf("%w: schedule", ErrBadReceipt)
	}
	var err error
	if c.Signature, err = spki.ParseSignature(l[2]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReceipt, err)
	}
	if !c.Signature.Signer.Equal(c.Key) {
		return nil, fmt.Errorf("%w: signed by another key than the one it names", ErrBadReceipt)
	}
	if err := c.Signature.VerifyObject(c.body()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReceipt, err)
	}
	return c, nil
}

// Receipt is a decoded ECoupon-Receipt header:
//
//	ECoupon-Receipt: c=<commitment id>, t=<interval>, m=<MAC>, d=<disclosed interval>, k=<disclosed key>
//
// with base64url MAC (16 bytes) and key (32 bytes). Its MAC covers
// ReceiptMessage of the payment it acknowledges.
type Receipt struct {
	Commitment string
	Packet     tesla.Packet // without Message: the client rebuilds it
}

// Header renders the receipt.
func (r *Receipt) Header() string {
	enc := base64.RawURLEncoding
	return "c=" + r.Commitment + ", t=" + strconv.FormatUint(r.Packet.Interval, 10) + ", m=" + enc.EncodeToString(r.Packet.MAC[:]) +
		", d=" + strconv.FormatUint(r.Packet.DisclosedIndex, 10) + ", k=" + enc.EncodeToString(r.Packet.DisclosedKey[:])
}

// ParseReceipt parses an ECoupon-Receipt header value.
func ParseReceipt(h string) (*Receipt, error) {
	if len(h) > MaxHeaderLen {
		return nil, fmt.Errorf("%w: header too long", ErrBadReceipt)
	}
	r := &Receipt{}
	seen := map[string]bool{}
	for _, part := range strings.Split(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || seen[k] {
			return nil, fmt.Errorf("%w: %q", ErrBadReceipt, clip(part))
		}
		seen[k] = true
		var err error
		switch k {
		case "c":
			if len(v) != 16 {
				err = errors.New("commitment id")
			}
			r.Commitment = v
		case "t":
			r.Packet.Interval, err = strconv.ParseUint(v, 10, 64)
		case "d":
			r.Packet.DisclosedIndex, err = strconv.ParseUint(v, 10, 64)
		case "m":
			if len(v) != 22 || !decodeB64(r.Packet.MAC[:], v) {
				err = errors.New("MAC")
			}
		case "k":
			if len(v) != 43 || !decodeB64(r.Packet.DisclosedKey[:], v) {
				err = errors.New("key")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadReceipt, k, err)
		}
	}
	for _, k := range []string{"c", "t", "m", "d", "k"} {
		if !seen[k] {
			return nil, fmt.Errorf("%w: missing %s", ErrBadReceipt, k)
		}
	}
	return r, nil
}
