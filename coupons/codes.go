package coupons

// Reason codes on the wire: the "error" member of the JSON bodies that the
// gate (package caddymodule) and the broker's API (package broker) answer
// with when they refuse a request, the "code" of a refused redemption item
// (brokerapi.RedeemOutcome), and what the wallet matches in them. Each is
// listed in docs/PROTOCOL.md (§14 for the gate, §16 for the broker). The
// name of each is Code followed by the code in CamelCase.
const (
	// The gate's refusals of payments (docs/PROTOCOL.md §14).

	// CodePaymentRequired is sent by the gate (402) to a request without a
	// payment.
	CodePaymentRequired = "payment_required"
	// CodeInsufficientPayment is sent by the gate (402) to a payment of fewer
	// coupons than the price; they are kept as credit on the lane.
	CodeInsufficientPayment = "insufficient_payment"
	// CodePaymentRefused is sent by the gate (402) to a payment refused for a
	// reason no other code names.
	CodePaymentRefused = "payment_refused"
	// CodeBadPaymentHeader is sent by the gate (400) when the Authorization
	// value of a payment does not parse.
	CodeBadPaymentHeader = "bad_payment_header"
	// CodeLaneNotOpen is sent by the gate (402) to a payment without
	// ECoupon-Open on a lane it does not know (or whose record it cannot
	// use); the wallet then pays again with the lane's open.
	CodeLaneNotOpen = "lane_not_open"
	// CodeCouponSpent is sent by the gate (402) to a coupon at or below the
	// lane's position: spent already.
	CodeCouponSpent = "coupon_spent"
	// CodeBadCoupon is sent by the gate (402) to a coupon that does not hash
	// to the lane's last value, and by the broker for a redemption item whose
	// coupon does not hash to the lane's last redeemed value (final).
	CodeBadCoupon = "bad_coupon"
	// CodeIndexJumpTooLarge is sent by the gate (402) to a payment moving the
	// lane further than max_jump.
	CodeIndexJumpTooLarge = "index_jump_too_large"
	// CodeBeyondLane is sent by the gate (402) to a coupon index beyond the
	// lane's length (or the portion's end).
	CodeBeyondLane = "beyond_lane"
	// CodeCapExceeded is sent by the gate (402) to a payment that would
	// exceed the spending cap of the lane's delegation.
	CodeCapExceeded = "cap_exceeded"
	// CodeBadContentDigest is sent by the gate (400) when a paid request's
	// Content-Digest does not parse or does not match its body, or the body
	// cannot be read.
	CodeBadContentDigest = "bad_content_digest"
	// CodeContentDigestRequired is sent by the gate (400) to a paid request
	// with a body and no Content-Digest.
	CodeContentDigestRequired = "content_digest_required"
	// CodeBodyTooLarge is sent by the gate (413) to a paid request whose body
	// is beyond max_body.
	CodeBodyTooLarge = "body_too_large"
	// CodeLaneRateLimited is sent by the gate (429) to more paid requests on
	// a lane than lane_rate allows.
	CodeLaneRateLimited = "lane_rate_limited"
	// CodeStoreUnavailable is sent by the gate (503) when its spent-state
	// store fails.
	CodeStoreUnavailable = "store_unavailable"

	// The gate's refusals of lane opens (docs/PROTOCOL.md §11, §14).

	// CodeBadOpen is sent by the gate (400) to a lane-open document that does
	// not parse or keeps too many principals.
	CodeBadOpen = "bad_open"
	// CodeLaneMismatch is sent by the gate (400) to a lane open naming
	// another lane than the payment.
	CodeLaneMismatch = "lane_mismatch"
	// CodeOpenTooLarge is sent by the gate (413) to a lane-open document
	// beyond max_open_bytes.
	CodeOpenTooLarge = "open_too_large"
	// CodeOpenRateLimited is sent by the gate (429) to more lane opens from a
	// client than opens_per_minute allows.
	CodeOpenRateLimited = "open_rate_limited"
	// CodeLaneInUse is sent by the gate (402) to an open of a lane another
	// spender holds, by a key that may not take it over.
	CodeLaneInUse = "lane_in_use"
	// CodeBookNotFunded is sent by the gate (402) to a lane open without a
	// valid book certificate of the broker: the book is not funded.
	CodeBookNotFunded = "book_not_funded"
	// CodeWrongVendor is sent by the gate (402) to a lane open (or a payment
	// on a stored lane) of a book made out to another vendor.
	CodeWrongVendor = "wrong_vendor"
	// CodeWrongUnit is sent by the gate (402) to a lane open (or a payment on
	// a stored lane) whose coupons are worth another unit or currency.
	CodeWrongUnit = "wrong_unit"
	// CodeBookExpired is sent by the gate (402) to a lane open or payment past
	// the book's or grant's expiry, and by the broker (403) for an expired
	// book.
	CodeBookExpired = "book_expired"
	// CodeUntrustedBroker is sent by the gate (402) to a lane open under a
	// broker whose key the gate does not trust.
	CodeUntrustedBroker = "untrusted_broker"
	// CodeOwnerNotCertified is sent by the gate (402) to a lane open whose
	// book owner has no valid user certificate of the broker.
	CodeOwnerNotCertified = "owner_not_certified"
	// CodeNotAuthorized is sent by the gate (402) to a lane open whose
	// spender holds no grant of the lane.
	CodeNotAuthorized = "not_authorized"
	// CodeGrantWiderThanParent is sent by the gate (402) to a lane open under
	// a grant wider than the one it was made under.
	CodeGrantWiderThanParent = "grant_wider_than_parent"
	// CodeRevoked is sent by the gate (402) to a lane open or payment under a
	// revoked certificate or key, and by the broker (403) for a lane whose
	// open is revoked there.
	CodeRevoked = "revoked"
	// CodeLaneOutOfRange is sent by the gate (402) to a lane open beyond the
	// book's lanes, and by the broker (400, or as a final redemption code).
	CodeLaneOutOfRange = "lane_out_of_range"
	// CodeBadOpenSignature is sent by the gate (402) to a lane open whose
	// signature does not verify.
	CodeBadOpenSignature = "bad_open_signature"
	// CodeBadNonce is sent by the gate (402) to a lane open answering a nonce
	// that is not the gate's, or has expired.
	CodeBadNonce = "bad_nonce"
	// CodeBadMerkleProof is sent by the gate (402) to a lane open whose
	// anchor's Merkle proof does not lead to the book's root.
	CodeBadMerkleProof = "bad_merkle_proof"
	// CodeBadBook is sent by the gate (402) and by the broker (400) for a
	// book that does not parse or is inconsistent.
	CodeBadBook = "bad_book"
	// CodeRevocationsStale is sent by the gate (503) to a lane open while the
	// book's broker's revocation list is past its next-update.
	CodeRevocationsStale = "revocations_stale"
	// CodeBrokerUnavailable is sent by the gate (503) to a lane open in the
	// semi and online modes when the broker cannot be asked.
	CodeBrokerUnavailable = "broker_unavailable"
	// CodeLaneTooLong is sent by the gate (402) in the semi and online modes
	// when more of the lane was redeemed than it walks at an open.
	CodeLaneTooLong = "lane_too_long"

	// The gate's other endpoints (docs/PROTOCOL.md §14, §15).

	// CodeMethodNotAllowed is sent by the gate (405) to anything but POST at
	// its lane-open endpoint, and anything but GET at its receipt
	// commitment.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeNoReceipts is sent by the gate (404) for its receipt commitment
	// when it has no vendor_key.
	CodeNoReceipts = "no_receipts"
	// CodeUnknownCommitment is sent by the gate (404) for a receipt chain it
	// does not keep.
	CodeUnknownCommitment = "unknown_commitment"
	// CodeNoSession is sent by the gate (409) to a top-up (TopupPath) on a
	// lane with no metered response in flight at this gate; no coupon of it
	// was accepted.
	CodeNoSession = "no_session"

	// The broker's API (docs/PROTOCOL.md §16); the gate passes the broker's
	// refusal of a lane on to the client (402).

	// CodeUnsigned is sent by the broker (401) to a request without a
	// signature where one is needed.
	CodeUnsigned = "unsigned"
	// CodeBadSignature is sent by the broker (401) to a request whose
	// signature is malformed or does not verify.
	CodeBadSignature = "bad_signature"
	// CodeReplayed is sent by the broker (401) to a request replayed or
	// outside the replay window.
	CodeReplayed = "replayed"
	// CodeWrongBroker is sent by the broker (401) to a request signed for
	// another broker.
	CodeWrongBroker = "wrong_broker"
	// CodeUnknownKey is sent by the broker (401) to a signed request from a
	// key it does not know, on a call other than registering.
	CodeUnknownKey = "unknown_key"
	// CodeInsufficientFunds is sent by the broker (402) when the account
	// cannot hold a book's face value.
	CodeInsufficientFunds = "insufficient_funds"
	// CodeNotApproved is sent by the broker (403) to a user account still
	// pending approval.
	CodeNotApproved = "not_approved"
	// CodeForbidden is sent by the broker (403) to a call the caller may not
	// make.
	CodeForbidden = "forbidden"
	// CodeRevocationRefused is sent by the broker (403) to a revocation the
	// caller may not make.
	CodeRevocationRefused = "revocation_refused"
	// CodeBookClosed is sent by the broker (403, or as a final redemption
	// code) for a book released after its expiry.
	CodeBookClosed = "book_closed"
	// CodeNotYourBook is sent by the broker (403, or as a final redemption
	// code) for another vendor's book.
	CodeNotYourBook = "not_your_book"
	// CodeUnknownUser is sent by the broker (404) for a user it does not
	// know.
	CodeUnknownUser = "unknown_user"
	// CodeUnknownVendor is sent by the broker (404) for a vendor it does not
	// know.
	CodeUnknownVendor = "unknown_vendor"
	// CodeUnknownBook is sent by the broker (404, or as a final redemption
	// code) for a book it does not hold.
	CodeUnknownBook = "unknown_book"
	// CodeUnknownAccount is sent by the broker (404) for an account it does
	// not know.
	CodeUnknownAccount = "unknown_account"
	// CodeNotFound is sent by the broker (404) to a path that is no
	// endpoint, and by the gate to a path under /.well-known/ecoupons/ it
	// does not serve.
	CodeNotFound = "not_found"
	// CodeVendorTaken is sent by the broker (409) when a vendor name is
	// registered by another key.
	CodeVendorTaken = "vendor_taken"
	// CodeUnknownDenomination is sent by the broker (404) for an anonymous
	// book's denomination it does not have or is not issuing now.
	CodeUnknownDenomination = "unknown_denomination"
	// CodeIssueIdReused is sent by the broker (409) when an anonymous
	// issuance's id was used for another request (a retry must repeat it).
	CodeIssueIdReused = "issue_id_reused"
	// CodeWrongDenomination is sent by the gate (402) to a lane open, and by
	// the broker (402), for an anonymous book whose face value or currency
	// is not its denomination's, or whose proof names another denomination
	// or broker.
	CodeWrongDenomination = "wrong_denomination"
	// CodeDenominationExpired is sent by the gate (402) to a lane open, and
	// by the broker (402), for an anonymous book funded under a
	// denomination's key outside its period, or outliving it.
	CodeDenominationExpired = "denomination_expired"
	// CodeBadBlindSignature is sent by the gate (402) to a lane open, and by
	// the broker (402), for an anonymous book whose blind signature does
	// not verify: a book altered after it was signed, or a forgery.
	CodeBadBlindSignature = "bad_blind_signature"
	// CodeAlreadyRefunded is sent by the broker (409) to a second refund of
	// an anonymous book.
	CodeAlreadyRefunded = "already_refunded"
	// CodeNotExpired is sent by the broker (403) to a refund of an anonymous
	// book that may still be redeemed (before its expiry and grace).
	CodeNotExpired = "not_expired"
	// CodeLaneReserved is sent by the broker (409), and passed on by the gate
	// (402), for a lane reserved for another gate's spent state (online
	// mode); the wallet then pays on another lane.
	CodeLaneReserved = "lane_reserved"
	// CodeTooLarge is sent by the broker (413) to a request body over its
	// limit.
	CodeTooLarge = "too_large"
	// CodeRevocationRate is sent by the broker (429) to more revocations
	// from an account than it allows per hour.
	CodeRevocationRate = "revocation_rate"
	// CodeBadRequest is sent by the broker (400) to malformed input.
	CodeBadRequest = "bad_request"
	// CodeBadSexp is sent by the broker (400) to an S-expression that does
	// not parse.
	CodeBadSexp = "bad_sexp"
	// CodeBadKey is sent by the broker (400) to a key that does not parse or
	// is unsupported.
	CodeBadKey = "bad_key"
	// CodeBadCertificate is sent by the broker (400) to a certificate that
	// does not parse or verify.
	CodeBadCertificate = "bad_certificate"
	// CodeUnsupported is sent by the broker (400) to a construct it does not
	// support.
	CodeUnsupported = "unsupported"
	// CodeBadAmount is sent by the broker (400) to an amount that does not
	// parse or is out of range.
	CodeBadAmount = "bad_amount"
	// CodeCurrencyMismatch is sent by the broker (400) when currencies of an
	// operation differ.
	CodeCurrencyMismatch = "currency_mismatch"
	// CodeBookRefused is sent by the broker (400) to a book it will not hold.
	CodeBookRefused = "book_refused"
	// CodeGrantRefused is sent by the broker (400) to a grant it will not
	// record.
	CodeGrantRefused = "grant_refused"
	// CodeRedemptionRefused is sent by the broker (400) to a refused
	// redemption, and as the code of a redemption item refused for another
	// reason than the other codes (not final).
	CodeRedemptionRefused = "redemption_refused"
	// CodeInternal is sent by the broker (500) when it could not complete a
	// request; nothing was changed.
	CodeInternal = "internal"

	// Codes of refused redemption items only (brokerapi.RedeemOutcome.Code).

	// CodeBadIndex is the final redemption code of a coupon index of 0 or
	// beyond the lane's length.
	CodeBadIndex = "bad_index"
	// CodeBadProof is the final redemption code of a lane's first redemption
	// without a valid anchor and Merkle proof.
	CodeBadProof = "bad_proof"
	// CodeRedeemMoreOften is the (not final) redemption code of more coupons
	// since the lane's last redemption than the broker takes at once.
	CodeRedeemMoreOften = "redeem_more_often"
)
