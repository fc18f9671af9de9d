package brokerapi

import "github.com/ecoupons/ecoupons/coupons"

// LaneStatus is the broker's answer to a gate's lane query (semi and
// online validation modes), decoded from a LaneAnswer.
type LaneStatus struct {
	// Redeemed is the lane's highest redeemed coupon and Value its chain
	// value (the anchor when nothing was redeemed): a gate must not accept
	// coupons at or below it.
	Redeemed uint32
	// Value is the chain value of coupon Redeemed.
	Value coupons.Value
	// Reserved is the value (nanos) held for the vendor on this lane; 0
	// unless reserved.
	Reserved int64
	// Holder is the spent state the lane is reserved for ("" unless
	// reserved).
	Holder string
}

// MaxHolder bounds a holder name.
const MaxHolder = 64

// LaneRequest is the body of POST /v1/lanes.
type LaneRequest struct {
	Lane    string   `json:"lane"`              // <base64url book id>.<lane>
	Anchor  string   `json:"anchor"`            // base64url
	Proof   []string `json:"proof,omitempty"`   // base64url Merkle path of the anchor
	Certs   []string `json:"certs,omitempty"`   // base64url certificate hashes
	Keys    []string `json:"keys,omitempty"`    // base64url key hashes (SHA-256)
	Reserve bool     `json:"reserve,omitempty"` // reserve the lane for Holder (online mode)
	Holder  string   `json:"holder,omitempty"`  // the gate's spent state, at most MaxHolder bytes
}

// LaneAnswer is the answer of POST /v1/lanes.
type LaneAnswer struct {
	Redeemed uint32 `json:"redeemed"`           // the lane's highest redeemed coupon
	Value    string `json:"w"`                  // base64url chain value at redeemed
	Reserved string `json:"reserved,omitempty"` // decimal amount held for the vendor
	Holder   string `json:"holder,omitempty"`   // the spent state the lane is reserved for
}
