package payment

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error of the package matches one of them with
// errors.Is; parse errors are *Error values naming the part and field.
var (
	// ErrTooLarge is an input beyond its Max… bound; it is refused unread.
	ErrTooLarge = errors.New("payment: input too large")
	// ErrBadAuthParams is a header that does not follow RFC 9110 §11's
	// challenge and auth-param grammar.
	ErrBadAuthParams = errors.New("payment: malformed authentication header")
	// ErrBadChallenge is a Payment challenge missing a required parameter
	// or with a malformed one.
	ErrBadChallenge = errors.New("payment: malformed challenge")
	// ErrBadRequest is a request parameter that does not decode to the
	// ecoupon method's request.
	ErrBadRequest = errors.New("payment: malformed request parameter")
	// ErrNoCredential is a request without a Payment credential.
	ErrNoCredential = errors.New("payment: no Payment credential")
	// ErrBadCredential is a credential that does not decode: the gate
	// answers 402 with a fresh challenge and ProblemMalformedCredential.
	ErrBadCredential = errors.New("payment: malformed credential")
	// ErrMethodUnsupported is a credential or payload for another method
	// than ecoupon.
	ErrMethodUnsupported = errors.New("payment: payment method not supported")
	// ErrInvalidChallenge is a credential whose challenge id is not the
	// binding of its parameters under any of the server's secrets.
	ErrInvalidChallenge = errors.New("payment: challenge id does not match its parameters")
	// ErrExpired is a challenge past its expires time.
	ErrExpired = errors.New("payment: challenge expired")
	// ErrWeakSecret is a binding secret shorter than MinSecretLen.
	ErrWeakSecret = errors.New("payment: binding secret too short")
	// ErrBadReceipt is a Payment-Receipt value that does not decode.
	ErrBadReceipt = errors.New("payment: malformed receipt")
	// ErrBadProblem is a problem details body that does not decode.
	ErrBadProblem = errors.New("payment: malformed problem details")
	// ErrBadAcceptPayment is an Accept-Payment value that does not parse;
	// the draft lets a server ignore it.
	ErrBadAcceptPayment = errors.New("payment: malformed Accept-Payment")
	// ErrBadJSON is input that JCS (RFC 8785) cannot canonicalise: not
	// I-JSON (invalid UTF-8, duplicate names, numbers beyond IEEE 754
	// double) or nested too deeply.
	ErrBadJSON = errors.New("payment: JSON not canonicalisable")
)

// Error says which part of a message failed and why. Unwrap gives the
// sentinel (ErrBadChallenge, ErrBadCredential, …).
type Error struct {
	Err    error  // the sentinel
	Field  string // the parameter or JSON member, or "" for the whole value
	Reason string // what is wrong with it
}

// Error returns the sentinel's text, the field and the reason.
func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%v: %s", e.Err, e.Reason)
	}
	return fmt.Sprintf("%v: %s: %s", e.Err, e.Field, e.Reason)
}

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Err }

func fieldErr(sentinel error, field, format string, args ...any) error {
	return &Error{Err: sentinel, Field: field, Reason: fmt.Sprintf(format, args...)}
}

func tooLarge(sentinel error, n, limit int) error {
	return fmt.Errorf("%w: %w: %d bytes (limit %d)", sentinel, ErrTooLarge, n, limit)
}

// clip shortens attacker-supplied text quoted in errors.
func clip(s string) string {
	if len(s) > 48 {
		return s[:48] + "…"
	}
	return s
}
