package coupons

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
)

// Value is a chain value w_{s,i}: a coupon once revealed, a secret before.
type Value [32]byte

// LaneTag is the 16-byte per-lane salt that every chain step of the lane
// hashes: it binds the step to its book and lane so that no two lanes, in
// this book or any other, share a hash function (no multi-target attacks).
type LaneTag [16]byte

// Labels of the chain construction (docs/PROTOCOL.md §8).
const (
	// LabelLane derives a lane's tag: SHA-256(LabelLane || book salt ||
	// be32(lane))[:16].
	LabelLane = "ecoupons lane v1"
	// LabelStep prefixes every chain step. It is 3 bytes so that a step,
	// label || tag || be32(i) || w = 55 bytes, is one SHA-256 compression.
	LabelStep = "EC1"
)

// stepLen is the size of a chain step's input: one compression block
// (55 bytes plus SHA-256's 9 bytes of padding = 64).
const stepLen = len(LabelStep) + 16 + 4 + 32

// NewLaneTag returns the tag of lane s of the book whose salt is salt.
func NewLaneTag(salt [32]byte, s uint32) LaneTag {
	var in [len(LabelLane) + 32 + 4]byte
	copy(in[:], LabelLane)
	copy(in[len(LabelLane):], salt[:])
	binary.BigEndian.PutUint32(in[len(LabelLane)+32:], s)
	h := sha256.Sum256(in[:])
	var t LaneTag
	copy(t[:], h[:16])
	return t
}

// Step returns w_{s,i} = SHA-256(LabelStep || tag || be32(i) || w_{s,i+1}),
// the chain value at index i computed from the one at i+1. It does not
// allocate.
func Step(tag *LaneTag, i uint32, next *Value) Value {
	var in [stepLen]byte
	copy(in[:], LabelStep)
	copy(in[3:19], tag[:])
	binary.BigEndian.PutUint32(in[19:23], i)
	copy(in[23:], next[:])
	return sha256.Sum256(in[:])
}

// Walk hashes w, the value at index from, down to index to (to ≤ from),
// returning w_{to}. It costs from − to steps.
func Walk(tag *LaneTag, from uint32, w Value, to uint32) Value {
	for i := from; i > to; i-- {
		w = Step(tag, i-1, &w)
	}
	return w
}

// Errors of coupon verification; each is a distinct reason a payment is
// refused, for callers to match with errors.Is.
var (
	// ErrReplay is a coupon at or below the lane's last accepted index: a
	// reused or older coupon.
	ErrReplay = errors.New("coupons: coupon already spent")
	// ErrJumpTooLarge is an index further ahead of the last accepted one
	// than the verifier allows per payment.
	ErrJumpTooLarge = errors.New("coupons: index jump exceeds the bound")
	// ErrBadCoupon is a value that does not hash to the last accepted one.
	ErrBadCoupon = errors.New("coupons: coupon does not belong to the lane")
	// ErrBeyondLane is an index past the lane's length.
	ErrBeyondLane = errors.New("coupons: index beyond the end of the lane")
)

// VerifyNext checks a payment (i, w) on a lane whose last accepted coupon
// is (last, lastW) (last = 0 and lastW = the anchor for a fresh lane): i
// must be in (last, min(last+maxJump, length)] and hashing w forward i−last
// times must give lastW. It costs i−last compressions, compares in constant
// time and does not allocate.
func VerifyNext(tag *LaneTag, length, last uint32, lastW *Value, i uint32, w *Value, maxJump uint32) error {
	switch {
	case i <= last:
		return ErrReplay
	case i > length:
		return ErrBeyondLane
	case i-last > maxJump:
		return ErrJumpTooLarge
	}
	got := Walk(tag, i, *w, last)
	if subtle.ConstantTimeCompare(got[:], lastW[:]) != 1 {
		return ErrBadCoupon
	}
	return nil
}

// checkLength reports whether L is a supported lane length: a power of two
// from 2 to 2^30, as the traversal requires.
func checkLength(length uint32) error {
	if length < 2 || length > 1<<30 || length&(length-1) != 0 {
		return fmt.Errorf("%w: lane length %d must be a power of two between 2 and 2^30", ErrBadBook, length)
	}
	return nil
}
