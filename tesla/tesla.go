// Package tesla implements TESLA (RFC 4082, "Timed Efficient Stream
// Loss-Tolerant Authentication"), adapted for ecoupons, and the request
// binding that ties a paid HTTP request to the next, still secret, value of a
// coupon chain.
//
// # TESLA in short
//
// The sender owns a one-way key chain K_0 … K_n (RFC 4082 §3.2, [Chain]):
// K_n is a random seed and K_i = F(K_{i+1}), so K_0, the commitment, is
// published (signed once, out of band) while every other key stays secret
// until the sender discloses it. Time is cut into intervals ([Schedule],
// RFC 4082 §3.3); interval 0 is the commitment interval and interval i ≥ 1
// uses key K_i. A packet sent in interval i carries
//
//	MAC = HMAC-SHA256(K'_i, message)[:16],   K'_i = F'(K_i)   (RFC 4082 §3.4)
//
// and discloses K_{i-d}, the key of the interval d intervals earlier
// ([Sender]). A receiver ([Receiver]) buffers a packet only while the
// sender cannot yet have disclosed K_i, given an upper bound on the clock
// skew between them (the security condition of RFC 4082 §3.5); when K_i
// arrives later, the receiver checks it against the chain and then checks the
// buffered MACs.
//
// # Primitives and labels
//
// Every hash in this package starts with a domain-separation label, a named
// exported constant next to its use, so the inputs of different functions
// never coincide:
//
//	F(K)   = SHA-256(LabelF      || K)             51 bytes, one compression
//	F'(K)  = SHA-256(LabelFPrime || K)             52 bytes, one compression
//	bind   = SHA-256(LabelBind || 0^16 || w || h)  96 bytes, two compressions
//
// F and F' are the "pseudo-random functions" of RFC 4082 §3.2; RFC 4082
// leaves their instantiation to the application. Labels are at most 23
// bytes, so label || 32-byte key (at most 55 bytes) fits in one SHA-256
// compression block together with the padding.
//
// # Request binding
//
// [BindRequest] computes a 16-byte tag over a 32-byte request digest h,
// keyed with the next chain value w_{i+1}, which the client still keeps
// secret when it sends request i and discloses with its next payment. The
// exact input is the 96 bytes
//
//	offset  0  LabelBind ("ecoupons bind v1", 16 bytes)
//	offset 16  16 zero bytes
//	offset 32  w_{i+1} (32 bytes)
//	offset 64  h (32 bytes)
//
// and the tag is the first 16 bytes of SHA-256 of it. Why a secret-prefix
// MAC is sound here, although H(key || message) is not a MAC in general:
//
//   - The key is a fresh secret 32-byte value per request (the preimage of
//     the coupon being spent, unknown to anyone but the payer until the next
//     payment), and the first compression block is exactly LabelBind,
//     padding and the key: its output is a keyed chaining value, as in NMAC
//     and HMAC, whose security rests on the same assumption (the SHA-256
//     compression function is a PRF when keyed through its chaining input
//     or its message block). The attacker does see one function of the key,
//     the spent coupon w_i = H(coupon label … || w_{i+1}); as with F and F'
//     in TESLA, the distinct label makes that hash useless for the tag.
//   - The input length is fixed (96 bytes). Length extension produces
//     hashes of longer inputs, which a verifier never accepts, so the
//     well-known weakness of H(key || message) does not apply; the second
//     block (h, then SHA-256's own padding with the fixed length 768 bits)
//     is a fixed-length PRF input.
//   - The label separates it from F and F': their inputs are 51 and 52
//     bytes long and begin with other labels, so no bind input is ever an
//     F or F' input, and no other ecoupons hash may begin with the 32-byte
//     field LabelBind || 0^16.
//
// It therefore has the security of deriving K' = F'(w) and computing a MAC
// keyed by K' (the construction of DESIGN §3 and RFC 4082 §3.4), in one pass
// of two compressions instead of one for F' and four for HMAC, and without
// allocating. Truncating to 128 bits leaves a forgery probability of 2^-128
// per attempt, and a verifier holds one expected tag per request.
//
// Secrets (seeds, undisclosed keys, MAC keys) are never logged or included in
// error messages.
package tesla

import "crypto/sha256"

// KeySize is the size in bytes of chain keys, MAC keys and digests.
const KeySize = 32

// Key is a TESLA chain key K_i, or a MAC key K'_i = F'(K_i).
type Key [KeySize]byte

// Labels of the two chain functions (RFC 4082 §3.2). Each is at most 23
// bytes so that label || key fits in one SHA-256 block.
const (
	// LabelF separates the chain step F from every other hash.
	LabelF = "ecoupons tesla F v1"
	// LabelFPrime separates the MAC-key derivation F' from every other hash.
	LabelFPrime = "ecoupons tesla F' v1"
)

// maxLabel is the longest label for which label || 32-byte key plus SHA-256
// padding (1 + 8 bytes) fits in one 64-byte block.
const maxLabel = 64 - 9 - KeySize

// Compile-time checks that the labels fit in one block.
var (
	_ [maxLabel - len(LabelF)]struct{}
	_ [maxLabel - len(LabelFPrime)]struct{}
)

// F is the chain step of RFC 4082 §3.2: K_i = F(K_{i+1}),
// F(K) = SHA-256(LabelF || K). It does not allocate.
func F(k Key) Key {
	var in [len(LabelF) + KeySize]byte
	copy(in[:], LabelF)
	copy(in[len(LabelF):], k[:])
	return sha256.Sum256(in[:])
}

// FPrime derives the MAC key of RFC 4082 §3.2: K'_i = F'(K_i),
// F'(K) = SHA-256(LabelFPrime || K). It does not allocate.
func FPrime(k Key) Key {
	var in [len(LabelFPrime) + KeySize]byte
	copy(in[:], LabelFPrime)
	copy(in[len(LabelFPrime):], k[:])
	return sha256.Sum256(in[:])
}

// fN applies F n times.
func fN(k Key, n uint64) Key {
	for ; n > 0; n-- {
		k = F(k)
	}
	return k
}
