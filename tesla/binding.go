package tesla

import (
	"crypto/sha256"
	"crypto/subtle"
)

// Request binding (DESIGN §3; construction and security argument in the
// package documentation). The input is exactly 96 bytes:
//
//	offset  size  field
//	     0    16  LabelBind
//	    16    16  zero bytes (pads the label field to 32 bytes)
//	    32    32  next: the still secret chain value w_{i+1}
//	    64    32  digest: the request digest
//
// With SHA-256's padding (1 + 8 bytes) it is two compressions; the first
// block is label, padding and key. The tag is SHA-256(input)[:16].
const (
	// LabelBind separates request binding from every other hash.
	LabelBind = "ecoupons bind v1"
	// BindingSize is the size in bytes of a request binding tag.
	BindingSize = 16

	bindLabelField = 32
	bindInputSize  = bindLabelField + KeySize + 32
)

// Compile-time checks: the label fits its field, and the input plus
// SHA-256 padding fits in two blocks (at most 119 bytes).
var (
	_ [bindLabelField - len(LabelBind)]struct{}
	_ [2*sha256.BlockSize - 9 - bindInputSize]struct{}
)

// BindRequest returns the tag that binds a request with the given digest
// to next, the chain value that the request's payment leaves secret and the
// lane's next payment discloses: SHA-256(LabelBind || 0^16 || next ||
// digest)[:16]. It does not allocate.
func BindRequest(next Key, digest [32]byte) [BindingSize]byte {
	var in [bindInputSize]byte
	copy(in[:], LabelBind)
	copy(in[bindLabelField:], next[:])
	copy(in[bindLabelField+KeySize:], digest[:])
	sum := sha256.Sum256(in[:])
	var tag [BindingSize]byte
	copy(tag[:], sum[:])
	return tag
}

// VerifyBinding reports whether tag binds digest to next, in time
// independent of the tag's value. It does not allocate.
func VerifyBinding(next Key, digest [32]byte, tag [BindingSize]byte) bool {
	want := BindRequest(next, digest)
	return subtle.ConstantTimeCompare(want[:], tag[:]) == 1
}
