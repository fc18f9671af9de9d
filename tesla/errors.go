package tesla

import (
	"errors"
	"strconv"
	"strings"
)

// Sentinel errors. Functions wrap them with detail ("tesla: …: %w"); match
// them with errors.Is. None of the messages contains secret material.
var (
	// ErrChainLength: NewChain was asked for fewer than 1 or more than
	// MaxChainLength steps.
	ErrChainLength = errors.New("tesla: chain length out of range")
	// ErrIndexOutOfRange: a chain key index beyond the chain's last key.
	ErrIndexOutOfRange = errors.New("tesla: key index out of range")
	// ErrNotNewer: a disclosed key is not newer than the trusted key it is
	// checked against.
	ErrNotNewer = errors.New("tesla: disclosed key is not newer than the trusted key")
	// ErrTooManySteps: a disclosed key is further ahead of the trusted key
	// than the caller allows (a bound on the work an attacker can cause).
	ErrTooManySteps = errors.New("tesla: disclosed key too far ahead")
	// ErrBadKey: a disclosed key does not hash to the trusted key (RFC 4082
	// §3.5).
	ErrBadKey = errors.New("tesla: disclosed key does not match the chain")

	// ErrInvalidSchedule: a Schedule with a zero T0, a non-positive interval
	// or a zero disclosure delay.
	ErrInvalidSchedule = errors.New("tesla: invalid schedule")
	// ErrBeforeStart: a time before the schedule's T0.
	ErrBeforeStart = errors.New("tesla: time before the schedule's start")

	// ErrCommitmentInterval: the sender was asked to authenticate during
	// interval 0, which has no key.
	ErrCommitmentInterval = errors.New("tesla: no key in the commitment interval")
	// ErrChainExhausted: the current interval is past the chain's last key.
	ErrChainExhausted = errors.New("tesla: key chain exhausted")
	// ErrMessageTooLarge: a message longer than MaxMessageSize.
	ErrMessageTooLarge = errors.New("tesla: message too large")

	// ErrInvalidConfig: a ReceiverConfig that cannot be used.
	ErrInvalidConfig = errors.New("tesla: invalid receiver configuration")
	// ErrKeyAlreadyDisclosed: the packet's interval key is already known
	// to the receiver, so anyone could have computed its MAC.
	ErrKeyAlreadyDisclosed = errors.New("tesla: interval key already disclosed")
	// ErrFromFuture: the packet claims an interval the sender cannot have
	// reached yet, even allowing for the maximum clock skew.
	ErrFromFuture = errors.New("tesla: packet from a future interval")
	// ErrUnsafe: the security condition of RFC 4082 §3.5 fails: the sender
	// may already have disclosed the packet's key.
	ErrUnsafe = errors.New("tesla: packet arrived too late to be safe")
	// ErrBufferFull: the receiver already buffers MaxBuffered packets.
	ErrBufferFull = errors.New("tesla: receive buffer full")
	// ErrBadMAC: a buffered packet's MAC did not verify once its key was
	// disclosed; the packet was dropped.
	ErrBadMAC = errors.New("tesla: bad MAC")

	// ErrMalformed: a packet encoding could not be parsed. Every parse
	// error matches it, and also one of the more specific errors below.
	ErrMalformed = errors.New("tesla: malformed packet")
	// ErrTruncated: the encoding ends early.
	ErrTruncated = errors.New("tesla: truncated packet")
	// ErrBadVersion: an unknown version byte.
	ErrBadVersion = errors.New("tesla: unknown packet version")
	// ErrTrailingData: bytes after the message.
	ErrTrailingData = errors.New("tesla: trailing data after packet")
)

// ParseError reports where a packet encoding is malformed. It matches
// ErrMalformed and Err with errors.Is.
type ParseError struct {
	// Offset is the byte offset in the encoding where parsing failed.
	Offset int
	// Err is ErrTruncated, ErrBadVersion, ErrMessageTooLarge or
	// ErrTrailingData.
	Err error
}

// Error reports the offset and the specific error; it never includes packet bytes.
func (e *ParseError) Error() string {
	return "tesla: malformed packet at byte " + strconv.Itoa(e.Offset) + ": " + strings.TrimPrefix(e.Err.Error(), "tesla: ")
}

// Unwrap returns ErrMalformed and the specific error.
func (e *ParseError) Unwrap() []error { return []error{ErrMalformed, e.Err} }
