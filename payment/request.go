package payment

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/ecoupons/ecoupons/coupons"
)

// ECouponRequest is what the request parameter of an ecoupon challenge
// carries: what the ECoupon scheme's challenge carries
// (docs/PROTOCOL.md §14), in the charge intent's shape. On the wire:
//
//	{"amount":"<price>","currency":"<iso 4217, lower case>","recipient":"<vendor>",
//	 "methodDetails":{"unit":"<decimal>","nonce":"…","broker":"…","store":"…","lease":<n>}}
//
// serialised with JCS and base64url-encoded without padding.
type ECouponRequest struct {
	// Vendor is the vendor name books must be made out to ("recipient").
	Vendor string
	// Price is the number of coupons per request ("amount": the method's
	// base unit is one coupon).
	Price uint32
	// Unit is the value of one coupon, a decimal ("methodDetails.unit").
	Unit string
	// Currency is the ISO 4217 code of Unit, upper case here as in
	// package coupons, lower case on the wire as the charge intent asks.
	Currency string
	// Broker is the URL of the broker whose books the gate takes, if it
	// names one.
	Broker string
	// Nonce is the gate's challenge nonce: lane opens sign it and request
	// digests include it.
	Nonce string
	// Store names the gate's spent-state store when it says (optional).
	Store string
	// Lease is the route's spending lease when above 1.
	Lease uint32
	// Meter is, for intent session, the route's meter ("events 10",
	// coupons.Meter's wire form): Price is then per unit of the response.
	Meter string
	// Window is, for intent session, the units a payment pre-pays (and a
	// top-up adds).
	Window uint32
	// Description is a human-readable purpose, for display only.
	Description string
}

type requestWire struct {
	Amount        string       `json:"amount"`
	Currency      string       `json:"currency"`
	Recipient     string       `json:"recipient"`
	Description   string       `json:"description,omitempty"`
	MethodDetails *detailsWire `json:"methodDetails"`
}

type detailsWire struct {
	Unit   string `json:"unit"`
	Nonce  string `json:"nonce"`
	Broker string `json:"broker,omitempty"`
	Store  string `json:"store,omitempty"`
	Lease  uint32 `json:"lease,omitempty"`
	Meter  string `json:"meter,omitempty"`
	Window uint32 `json:"window,omitempty"`
}

// Validate checks r: a vendor, a price of at least one coupon, a decimal
// unit, a three-letter currency and a nonce. Errors match ErrBadRequest.
func (r *ECouponRequest) Validate() error {
	switch {
	case r.Vendor == "":
		return fieldErr(ErrBadRequest, "recipient", "missing vendor")
	case r.Price == 0:
		return fieldErr(ErrBadRequest, "amount", "a price of zero coupons")
	case !isDecimal(r.Unit):
		return fieldErr(ErrBadRequest, "methodDetails.unit", "%q is not a decimal", clip(r.Unit))
	case !isCurrency(r.Currency):
		return fieldErr(ErrBadRequest, "currency", "%q is not an ISO 4217 code", clip(r.Currency))
	case r.Nonce == "":
		return fieldErr(ErrBadRequest, "methodDetails.nonce", "missing")
	case (r.Meter == "") != (r.Window == 0):
		return fieldErr(ErrBadRequest, "methodDetails.window", "a meter and a window go together")
	}
	if r.Meter != "" {
		if m, err := coupons.ParseMeter(r.Meter); err != nil || m.String() != r.Meter {
			return fieldErr(ErrBadRequest, "methodDetails.meter", "%q is not '<bytes|events|seconds> <count>'", clip(r.Meter))
		}
	}
	return nil
}

// EncodeRequest returns the request parameter for r: base64url of its
// JCS serialisation.
func EncodeRequest(r *ECouponRequest) (string, error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	j := appendRequestJCS(make([]byte, 0, 256), r)
	if len(j)*4/3+1 > MaxRequestLen {
		return "", tooLarge(ErrBadRequest, len(j)*4/3+1, MaxRequestLen)
	}
	return b64.EncodeToString(j), nil
}

// DecodeRequest decodes an ecoupon request parameter. Unknown members are
// ignored, as the draft asks. Errors match ErrBadRequest.
func DecodeRequest(s string) (*ECouponRequest, error) {
	if len(s) > MaxRequestLen {
		return nil, tooLarge(ErrBadRequest, len(s), MaxRequestLen)
	}
	j, err := b64.DecodeString(s)
	if err != nil {
		return nil, fieldErr(ErrBadRequest, "", "not unpadded base64url")
	}
	var w requestWire
	if err := json.Unmarshal(j, &w); err != nil {
		return nil, fieldErr(ErrBadRequest, "", "not the method's JSON: %v", err)
	}
	if w.MethodDetails == nil {
		return nil, fieldErr(ErrBadRequest, "methodDetails", "missing")
	}
	price, ok := parseUint32(w.Amount)
	if !ok {
		return nil, fieldErr(ErrBadRequest, "amount", "%q is not a number of coupons", clip(w.Amount))
	}
	r := &ECouponRequest{
		Vendor: w.Recipient, Price: price, Unit: w.MethodDetails.Unit, Currency: strings.ToUpper(w.Currency),
		Broker: w.MethodDetails.Broker, Nonce: w.MethodDetails.Nonce, Store: w.MethodDetails.Store,
		Lease: w.MethodDetails.Lease, Meter: w.MethodDetails.Meter, Window: w.MethodDetails.Window, Description: w.Description,
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// isDecimal: 1*DIGIT [ "." 1*DIGIT ].
func isDecimal(s string) bool {
	ip, fp, dot := strings.Cut(s, ".")
	return allDigits(ip) && (!dot || allDigits(fp)) && len(s) <= 40
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isCurrency(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if c := s[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// parseUint32 parses a decimal without sign or leading zeros.
func parseUint32(s string) (uint32, bool) {
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}
