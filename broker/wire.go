package broker

import (
	"crypto"
	"net/http"
	"time"

	"github.com/ecoupons/ecoupons/brokerapi"
	"github.com/ecoupons/ecoupons/spki"
)

// The wire types, reason codes and request signing of the API live in
// package brokerapi (which links no database driver, for the gate); these
// names keep package broker's API as it was.

// HeaderSignature carries a request's signature by the caller's key
// (brokerapi.HeaderSignature).
const HeaderSignature = brokerapi.HeaderSignature

// ReplayWindow is how far a request's timestamp may be from the broker's
// clock; nonces are remembered that long (brokerapi.ReplayWindow).
const ReplayWindow = brokerapi.ReplayWindow

// OfficePath is the prefix of the back-office pages (brokerapi.OfficePath).
const OfficePath = brokerapi.OfficePath

// MaxHolder bounds a holder name (brokerapi.MaxHolder).
const MaxHolder = brokerapi.MaxHolder

// Errors of request authentication (see brokerapi).
var (
	// ErrUnsigned is brokerapi.ErrUnsigned.
	ErrUnsigned = brokerapi.ErrUnsigned
	// ErrBadAuth is brokerapi.ErrBadAuth.
	ErrBadAuth = brokerapi.ErrBadAuth
	// ErrReplayed is brokerapi.ErrReplayed.
	ErrReplayed = brokerapi.ErrReplayed
	// ErrWrongBroker is brokerapi.ErrWrongBroker.
	ErrWrongBroker = brokerapi.ErrWrongBroker
)

// Reason codes of refused redemption items (RedeemResult.Code,
// RedeemOutcome.Code), as in brokerapi. RedeemPermanent tells which are
// final.
const (
	RedeemUnknownBook    = brokerapi.RedeemUnknownBook    // the book is not registered here
	RedeemNotYourBook    = brokerapi.RedeemNotYourBook    // the book is another vendor's
	RedeemBookClosed     = brokerapi.RedeemBookClosed     // released after expiry
	RedeemLaneOutOfRange = brokerapi.RedeemLaneOutOfRange // beyond the book's lanes
	RedeemBadIndex       = brokerapi.RedeemBadIndex       // 0 or beyond the lane's length
	RedeemBadProof       = brokerapi.RedeemBadProof       // a first redemption without a valid anchor and Merkle proof
	RedeemBadCoupon      = brokerapi.RedeemBadCoupon      // does not hash to the lane's last redeemed value
	RedeemMoreOften      = brokerapi.RedeemMoreOften      // more than MaxRedeemSteps coupons since the last redemption
	RedeemRefused        = brokerapi.RedeemRefused        // any other refusal of the item
	// RedeemCurrencyMismatch: the book is in another currency than the vendor's.
	RedeemCurrencyMismatch = brokerapi.RedeemCurrencyMismatch
)

type (
	// LaneStatus is the broker's answer to a LaneQuery (brokerapi.LaneStatus).
	LaneStatus = brokerapi.LaneStatus
	// LaneRequest is the body of POST /v1/lanes (brokerapi.LaneRequest).
	LaneRequest = brokerapi.LaneRequest
	// LaneAnswer is the answer of POST /v1/lanes (brokerapi.LaneAnswer).
	LaneAnswer = brokerapi.LaneAnswer
	// RedeemItem is one redemption in the JSON API (brokerapi.RedeemItem).
	RedeemItem = brokerapi.RedeemItem
	// TheftItem is theft evidence in the JSON API (brokerapi.TheftItem).
	TheftItem = brokerapi.TheftItem
	// RedeemOutcome is one redemption's result in the JSON API
	// (brokerapi.RedeemOutcome).
	RedeemOutcome = brokerapi.RedeemOutcome
)

// RedeemPermanent reports whether an item refused with code can never be
// paid (brokerapi.RedeemPermanent).
func RedeemPermanent(code string) bool { return brokerapi.RedeemPermanent(code) }

// RequestObject is what a caller signs for the broker whose key hash is
// broker (brokerapi.RequestObject).
func RequestObject(broker spki.KeyHash, method, path string, body []byte, ts int64, nonce []byte) spki.List {
	return brokerapi.RequestObject(broker, method, path, body, ts, nonce)
}

// SignRequest sets the ECoupon-Signature header of req for the broker
// whose key hash is broker (brokerapi.SignRequest).
func SignRequest(req *http.Request, body []byte, signer crypto.Signer, broker spki.KeyHash, now time.Time) error {
	return brokerapi.SignRequest(req, body, signer, broker, now)
}

// OfficeLoginURL returns a login link to the back office of the broker at
// base whose key hash is broker (brokerapi.OfficeLoginURL).
func OfficeLoginURL(base string, broker spki.KeyHash, signer crypto.Signer, now time.Time) (string, error) {
	return brokerapi.OfficeLoginURL(base, broker, signer, now)
}
