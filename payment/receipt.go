package payment

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ecoupons/ecoupons/coupons"
)

// ReceiptStatusSuccess is the only status a receipt has.
const ReceiptStatusSuccess = "success"

// Receipt is the JSON of a Payment-Receipt header (base64url, unpadded):
// the draft's members, whose reference is the gate's TESLA receipt (the
// ECoupon-Receipt value, docs/PROTOCOL.md §15) when the gate signs
// receipts and "<lane>:<index>" otherwise, and ours: the lane and coupon
// index the receipt acknowledges.
type Receipt struct {
	Status    string `json:"status"`          // ReceiptStatusSuccess
	Method    string `json:"method"`          // Method
	Timestamp string `json:"timestamp"`       // RFC 3339, when the payment was accepted
	Reference string `json:"reference"`       // the TESLA receipt, or "<lane>:<index>"
	Lane      string `json:"lane,omitempty"`  // base64url(book id) "." lane
	Index     uint32 `json:"index,omitempty"` // the coupon index paid up to
}

// NewReceipt returns the receipt of the payment of coupon index on lane,
// settled at at; tesla is the gate's receipt of it, or nil.
func NewReceipt(lane coupons.LaneID, index uint32, tesla *coupons.Receipt, at time.Time) *Receipt {
	r := &Receipt{
		Status: ReceiptStatusSuccess, Method: Method, Timestamp: at.UTC().Truncate(time.Second).Format(time.RFC3339),
		Lane: lane.String(), Index: index,
	}
	if tesla != nil {
		r.Reference = tesla.Header()
	} else {
		r.Reference = r.Lane + ":" + strconv.FormatUint(uint64(index), 10)
	}
	return r
}

// JSON returns the JCS serialisation of r.
func (r *Receipt) JSON() []byte { return appendReceiptJCS(make([]byte, 0, 256), r) }

// Header returns the Payment-Receipt value: base64url of r's JCS
// serialisation.
func (r *Receipt) Header() string {
	return b64.EncodeToString(r.JSON())
}

// ParseReceipt decodes a Payment-Receipt value. Errors match
// ErrBadReceipt.
func ParseReceipt(h string) (*Receipt, error) {
	if len(h) > MaxReceiptLen {
		return nil, tooLarge(ErrBadReceipt, len(h), MaxReceiptLen)
	}
	h = strings.TrimSpace(h)
	if !isBase64URL(h) {
		return nil, fieldErr(ErrBadReceipt, "", "not unpadded base64url")
	}
	j, err := b64.DecodeString(h)
	if err != nil {
		return nil, fieldErr(ErrBadReceipt, "", "not unpadded base64url")
	}
	if !utf8.Valid(j) {
		// encoding/json would turn each bad byte into U+FFFD (three
		// bytes), so what was read would not be what is written back.
		return nil, fieldErr(ErrBadReceipt, "", "not UTF-8")
	}
	var r Receipt
	if err := json.Unmarshal(j, &r); err != nil {
		return nil, fieldErr(ErrBadReceipt, "", "%v", err)
	}
	switch {
	case r.Status != ReceiptStatusSuccess:
		return nil, fieldErr(ErrBadReceipt, "status", "%q is not %q", clip(r.Status), ReceiptStatusSuccess)
	case !isMethodID(r.Method):
		return nil, fieldErr(ErrBadReceipt, "method", "%q is not a method identifier", clip(r.Method))
	case r.Reference == "":
		return nil, fieldErr(ErrBadReceipt, "reference", "missing")
	}
	if _, err := time.Parse(time.RFC3339, r.Timestamp); err != nil {
		return nil, fieldErr(ErrBadReceipt, "timestamp", "%q is not an RFC 3339 date-time", clip(r.Timestamp))
	}
	return &r, nil
}

// TESLA returns the gate's TESLA receipt the reference carries, or nil
// when the reference is only the lane and index (a gate without a vendor
// key).
func (r *Receipt) TESLA() (*coupons.Receipt, error) {
	if r.Method != Method {
		return nil, fieldErr(ErrMethodUnsupported, "method", "%q", clip(r.Method))
	}
	if !strings.Contains(r.Reference, "=") {
		return nil, nil
	}
	t, err := coupons.ParseReceipt(r.Reference)
	if err != nil {
		return nil, fieldErr(ErrBadReceipt, "reference", "%v", err)
	}
	return t, nil
}
