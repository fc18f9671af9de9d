package payment

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/ecoupons/ecoupons/coupons"
)

// ContentTypeProblem is the media type of problem details (RFC 9457 §3).
const ContentTypeProblem = "application/problem+json"

// ProblemBase is the draft's base URI of its problem types.
const ProblemBase = "https://paymentauth.org/problems/"

// The draft's problem types, and RFC 9457's default for problems that are
// not about the payment (a request body, a rate limit, an outage).
const (
	ProblemPaymentRequired     = ProblemBase + "payment-required"     // 402: no credential
	ProblemPaymentInsufficient = ProblemBase + "payment-insufficient" // 402: fewer coupons than the price
	ProblemPaymentExpired      = ProblemBase + "payment-expired"      // 402: book, grant or challenge expired
	ProblemVerificationFailed  = ProblemBase + "verification-failed"  // 402: the payment does not verify
	ProblemMethodUnsupported   = ProblemBase + "method-unsupported"   // 400: not an ecoupon credential
	ProblemMalformedCredential = ProblemBase + "malformed-credential" // 402: the credential does not decode
	ProblemInvalidChallenge    = ProblemBase + "invalid-challenge"    // 402: unknown, forged or expired challenge
	ProblemAboutBlank          = "about:blank"                        // the HTTP status says it all
)

var problemTitles = map[string]string{
	ProblemPaymentRequired:     "Payment Required",
	ProblemPaymentInsufficient: "Payment Insufficient",
	ProblemPaymentExpired:      "Payment Expired",
	ProblemVerificationFailed:  "Verification Failed",
	ProblemMethodUnsupported:   "Method Unsupported",
	ProblemMalformedCredential: "Malformed Credential",
	ProblemInvalidChallenge:    "Invalid Challenge",
}

// Problem is an RFC 9457 problem details object as the gate sends it with
// the Payment scheme, with the draft's members and ours: Code (a
// coupons.Code… constant, the reason the ECoupon scheme would give),
// Resume and Hint.
type Problem struct {
	// Type is a Problem… constant (a URI).
	Type string `json:"type"`
	// Title is the type's short summary.
	Title string `json:"title"`
	// Status is the HTTP status of the response.
	Status int `json:"status"`
	// Detail explains this occurrence, for humans.
	Detail string `json:"detail,omitempty"`
	// ChallengeID is the id of the fresh challenge the 402 carries.
	ChallengeID string `json:"challengeId,omitempty"`
	// Code is the ecoupons reason code (package coupons).
	Code string `json:"code,omitempty"`
	// Resume is, with coupons.CodeCouponSpent, the first coupon the lane
	// takes now.
	Resume uint32 `json:"resume,omitempty"`
	// Hint says what the client may do next.
	Hint string `json:"hint,omitempty"`
}

type problemClass struct {
	typ    string
	status int
}

// codeProblems maps each reason code of the gate (docs/PROTOCOL.md §14) to
// a problem type and status. Refusals of the payment are 402 with a fresh
// challenge, as the draft wants even where the ECoupon scheme answers 400
// (a malformed payment header); problems that are not about the payment
// keep the ECoupon scheme's status under about:blank.
var codeProblems = map[string]problemClass{
	coupons.CodePaymentRequired:     {ProblemPaymentRequired, 402},
	coupons.CodeInsufficientPayment: {ProblemPaymentInsufficient, 402},
	coupons.CodeBadPaymentHeader:    {ProblemMalformedCredential, 402},
	coupons.CodeBadOpen:             {ProblemMalformedCredential, 402},
	coupons.CodeBadNonce:            {ProblemInvalidChallenge, 402},
	coupons.CodeBookExpired:         {ProblemPaymentExpired, 402},

	coupons.CodePaymentRefused:       {ProblemVerificationFailed, 402},
	coupons.CodeLaneNotOpen:          {ProblemVerificationFailed, 402},
	coupons.CodeCouponSpent:          {ProblemVerificationFailed, 402},
	coupons.CodeBadCoupon:            {ProblemVerificationFailed, 402},
	coupons.CodeIndexJumpTooLarge:    {ProblemVerificationFailed, 402},
	coupons.CodeBeyondLane:           {ProblemVerificationFailed, 402},
	coupons.CodeCapExceeded:          {ProblemVerificationFailed, 402},
	coupons.CodeLaneMismatch:         {ProblemVerificationFailed, 402},
	coupons.CodeLaneInUse:            {ProblemVerificationFailed, 402},
	coupons.CodeBookNotFunded:        {ProblemVerificationFailed, 402},
	coupons.CodeWrongVendor:          {ProblemVerificationFailed, 402},
	coupons.CodeWrongUnit:            {ProblemVerificationFailed, 402},
	coupons.CodeUntrustedBroker:      {ProblemVerificationFailed, 402},
	coupons.CodeOwnerNotCertified:    {ProblemVerificationFailed, 402},
	coupons.CodeNotAuthorized:        {ProblemVerificationFailed, 402},
	coupons.CodeGrantWiderThanParent: {ProblemVerificationFailed, 402},
	coupons.CodeRevoked:              {ProblemVerificationFailed, 402},
	coupons.CodeLaneOutOfRange:       {ProblemVerificationFailed, 402},
	coupons.CodeBadOpenSignature:     {ProblemVerificationFailed, 402},
	coupons.CodeBadMerkleProof:       {ProblemVerificationFailed, 402},
	coupons.CodeBadBook:              {ProblemVerificationFailed, 402},
	coupons.CodeLaneTooLong:          {ProblemVerificationFailed, 402},
	coupons.CodeLaneReserved:         {ProblemVerificationFailed, 402},
	coupons.CodeWrongDenomination:    {ProblemVerificationFailed, 402},
	coupons.CodeDenominationExpired:  {ProblemVerificationFailed, 402},
	coupons.CodeBadBlindSignature:    {ProblemVerificationFailed, 402},

	coupons.CodeBadContentDigest:      {ProblemAboutBlank, 400},
	coupons.CodeContentDigestRequired: {ProblemAboutBlank, 400},
	coupons.CodeBodyTooLarge:          {ProblemAboutBlank, 413},
	coupons.CodeOpenTooLarge:          {ProblemAboutBlank, 413},
	coupons.CodeLaneRateLimited:       {ProblemAboutBlank, 429},
	coupons.CodeOpenRateLimited:       {ProblemAboutBlank, 429},
	coupons.CodeStoreUnavailable:      {ProblemAboutBlank, 503},
	coupons.CodeRevocationsStale:      {ProblemAboutBlank, 503},
	coupons.CodeBrokerUnavailable:     {ProblemAboutBlank, 503},
	coupons.CodeMethodNotAllowed:      {ProblemAboutBlank, 405},
	coupons.CodeNoReceipts:            {ProblemAboutBlank, 404},
	coupons.CodeNotFound:              {ProblemAboutBlank, 404},
	coupons.CodeUnknownCommitment:     {ProblemAboutBlank, 404},
	coupons.CodeNoSession:             {ProblemAboutBlank, 409},
}

// ProblemType returns the problem type and HTTP status the gate answers a
// reason code with under the Payment scheme. A code it does not list (a
// broker's refusal passed on) is a failed verification, 402.
func ProblemType(code string) (typ string, status int) {
	if pc, ok := codeProblems[code]; ok {
		return pc.typ, pc.status
	}
	return ProblemVerificationFailed, 402
}

// NewProblem returns the problem for a reason code (coupons.Code…), with
// detail as its human-readable explanation.
func NewProblem(code, detail string) *Problem {
	typ, status := ProblemType(code)
	return &Problem{Type: typ, Title: problemTitle(typ, status), Status: status, Detail: detail, Code: code}
}

// ProblemForError returns the problem for an error of this package met
// while reading a credential: ErrExpired is payment-expired, a bad or
// forged challenge invalid-challenge, another method method-unsupported
// (400), anything else malformed-credential. It says nothing of errors
// the gate's verification of the payment gives: use NewProblem with their
// code.
func ProblemForError(err error) *Problem {
	typ, status, code := ProblemMalformedCredential, 402, coupons.CodeBadPaymentHeader
	switch {
	case errors.Is(err, ErrNoCredential):
		typ, code = ProblemPaymentRequired, coupons.CodePaymentRequired
	case errors.Is(err, ErrExpired):
		typ, code = ProblemPaymentExpired, coupons.CodeBadNonce
	case errors.Is(err, ErrInvalidChallenge), errors.Is(err, ErrBadChallenge):
		typ, code = ProblemInvalidChallenge, coupons.CodeBadNonce
	case errors.Is(err, ErrMethodUnsupported):
		typ, status, code = ProblemMethodUnsupported, 400, ""
	}
	detail := ""
	if err != nil {
		detail = err.Error()
	}
	return &Problem{Type: typ, Title: problemTitle(typ, status), Status: status, Detail: detail, Code: code}
}

func problemTitle(typ string, status int) string {
	if t, ok := problemTitles[typ]; ok {
		return t
	}
	return http.StatusText(status)
}

// JSON returns the JCS serialisation of p, the body of a response with
// Content-Type ContentTypeProblem.
func (p *Problem) JSON() []byte { return appendProblemJCS(make([]byte, 0, 256), p) }

// ParseProblem decodes a problem details body. Members it does not know
// are ignored (RFC 9457 §3.2). Errors match ErrBadProblem.
func ParseProblem(body []byte) (*Problem, error) {
	if len(body) > MaxProblemLen {
		return nil, tooLarge(ErrBadProblem, len(body), MaxProblemLen)
	}
	var p Problem
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fieldErr(ErrBadProblem, "", "%v", err)
	}
	if p.Type == "" {
		p.Type = ProblemAboutBlank // RFC 9457 §3.1.1
	}
	if p.Status != 0 && (p.Status < 100 || p.Status > 599) {
		return nil, fieldErr(ErrBadProblem, "status", "%d is not an HTTP status", p.Status)
	}
	return &p, nil
}
