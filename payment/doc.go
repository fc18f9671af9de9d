// Package payment is the codec of the HTTP "Payment" authentication scheme
// (draft-httpauth-payment, formerly draft-ryan-httpauth-payment) for the
// payment method "ecoupon" (docs/payment-method-ecoupon.md).
//
// It parses and formats the scheme's messages and nothing else: the
// challenge (WWW-Authenticate: Payment …), its stateless HMAC binding, the
// credential (Authorization: Payment … or Payment-Authorization), problem
// details (RFC 9457), the Payment-Receipt header and Accept-Payment. The
// payment inside a credential is a coupons.Payment; verifying it is the
// gate's business, as it is for the ECoupon scheme.
//
// Every parser bounds its input (Max… constants), returns errors matching
// the package's sentinels with errors.Is, and never panics.
package payment

// Scheme is the authentication scheme name (matched case-insensitively).
const Scheme = "Payment"

// Method is the payment method identifier of ecoupons.
const Method = "ecoupon"

// Intents of the ecoupon method: a payment per request, or a metered
// response paid by a window of coupons.
const (
	IntentCharge  = "charge"
	IntentSession = "session"
)

// Header field names of the scheme.
const (
	// HeaderPaymentAuthorization carries a credential when the challenge
	// asks for it (its header parameter), so that a client keeps
	// Authorization for its own login.
	HeaderPaymentAuthorization = "Payment-Authorization"
	// HeaderReceipt carries a receipt on a paid response.
	HeaderReceipt = "Payment-Receipt"
	// HeaderAcceptPayment lists the methods and intents a client accepts.
	HeaderAcceptPayment = "Accept-Payment"
)

// Size bounds of what the parsers accept. A longer input is refused with
// an error matching ErrTooLarge before any decoding.
const (
	// MaxChallengeLen bounds a WWW-Authenticate value (the draft asks
	// servers to stay under 8 KB).
	MaxChallengeLen = 8 << 10
	// MaxRequestLen bounds the base64url request parameter.
	MaxRequestLen = 4 << 10
	// MaxCredentialLen bounds a credential header value: room for a
	// lane-open document (a gate's default max_open_bytes is 64 KiB) twice
	// base64-encoded, once inside the JSON and once around it.
	MaxCredentialLen = 128 << 10
	// MaxReceiptLen bounds a Payment-Receipt value.
	MaxReceiptLen = 4 << 10
	// MaxAcceptPaymentLen bounds an Accept-Payment value.
	MaxAcceptPaymentLen = 4 << 10
	// MaxProblemLen bounds a problem details body.
	MaxProblemLen = 16 << 10
)
