package brokerapi

import "github.com/ecoupons/ecoupons/coupons"

// RedeemItem is one redemption in the JSON API (POST /v1/redeem).
type RedeemItem struct {
	Lane   string   `json:"lane"`             // <base64url book id>.<lane>
	Index  uint32   `json:"i"`                // highest coupon index
	Value  string   `json:"w"`                // base64url chain value
	Anchor string   `json:"anchor,omitempty"` // base64url, on a lane's first redemption
	Proof  []string `json:"proof,omitempty"`  // base64url Merkle path
	// Theft is evidence of a stolen coupon on this lane (see TheftItem).
	Theft *TheftItem `json:"theft,omitempty"`
}

// TheftItem is theft evidence in the JSON API: coupon i was paid for the
// request whose digest is digest with binding tag mac, which next (coupon
// i+1, base64url like the others) does not produce.
type TheftItem struct {
	Index  uint32 `json:"i"`      // the stolen coupon's index
	Digest string `json:"digest"` // base64url request digest the coupon was paid for
	MAC    string `json:"mac"`    // base64url binding tag of that request
	Next   string `json:"next"`   // base64url coupon i+1, which does not produce MAC
}

// RedeemOutcome is one redemption's result in the JSON API.
type RedeemOutcome struct {
	Lane    string `json:"lane"`            // as in the item
	Coupons uint32 `json:"coupons"`         // coupons paid by this redemption
	Amount  string `json:"amount"`          // decimal amount paid to the vendor
	Fee     string `json:"fee"`             // decimal fee kept by the broker
	Error   string `json:"error,omitempty"` // why the item was refused
	// Code is the refusal's reason code (RedeemUnknownBook, …), with Error;
	// RedeemPermanent tells whether resending the lane can ever succeed.
	Code  string `json:"code,omitempty"`
	Theft string `json:"theft,omitempty"` // "recorded", or why the evidence was refused
}

// Reason codes of refused redemption items (RedeemOutcome.Code).
// RedeemPermanent tells which are final.
const (
	RedeemUnknownBook    = coupons.CodeUnknownBook     // the book is not registered here
	RedeemNotYourBook    = coupons.CodeNotYourBook     // the book is another vendor's
	RedeemBookClosed     = coupons.CodeBookClosed      // released after expiry
	RedeemLaneOutOfRange = coupons.CodeLaneOutOfRange  // beyond the book's lanes
	RedeemBadIndex       = coupons.CodeBadIndex        // 0 or beyond the lane's length
	RedeemBadProof       = coupons.CodeBadProof        // a first redemption without a valid anchor and Merkle proof
	RedeemBadCoupon      = coupons.CodeBadCoupon       // does not hash to the lane's last redeemed value
	RedeemMoreOften      = coupons.CodeRedeemMoreOften // more than the broker's steps since the last redemption
	// RedeemCurrencyMismatch: the book is in another currency than the
	// vendor's account.
	RedeemCurrencyMismatch = coupons.CodeCurrencyMismatch
	RedeemRefused          = coupons.CodeRedemptionRefused // any other refusal of the item
)

// RedeemPermanent reports whether an item refused with code can never be
// paid, however often it is sent again: the gate then stops sending it.
// Other refusals (redeem_more_often, an unknown code) may pass later.
func RedeemPermanent(code string) bool {
	switch code {
	case RedeemUnknownBook, RedeemNotYourBook, RedeemBookClosed, RedeemLaneOutOfRange, RedeemBadIndex, RedeemBadProof, RedeemBadCoupon, RedeemCurrencyMismatch:
		return true
	}
	return false
}
