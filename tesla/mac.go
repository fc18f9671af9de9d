package tesla

import (
	"crypto/sha256"
	"crypto/subtle"
	"hash"
)

// MACSize is the size in bytes of a packet MAC: HMAC-SHA256 truncated to 128
// bits, which RFC 2104 §5 permits (at least half the hash length). RFC 4082
// §3.4 leaves the MAC to the application.
const MACSize = 16

// MAC returns the packet MAC of RFC 4082 §3.4 for a message sent in the
// interval of chain key k: HMAC-SHA256(F'(k), msg)[:16]. It takes the chain
// key K_i, not the derived MAC key.
func MAC(k Key, msg []byte) [MACSize]byte {
	return newMACer().mac(k, msg)
}

// VerifyMAC reports, in time independent of the MAC value, whether mac is
// the packet MAC of msg under chain key k.
func VerifyMAC(k Key, msg []byte, mac [MACSize]byte) bool {
	return newMACer().verify(k, msg, mac)
}

// macer computes HMAC-SHA256 (RFC 2104) by hand over one reused SHA-256
// state, because crypto/hmac allocates per key and TESLA changes the key
// every interval. It is not safe for concurrent use; Sender and Receiver
// guard theirs with their mutex.
type macer struct {
	h   hash.Hash
	pad [sha256.BlockSize]byte
	sum [sha256.Size]byte
}

func newMACer() *macer { return &macer{h: sha256.New()} }

func (m *macer) mac(k Key, msg []byte) [MACSize]byte {
	mk := FPrime(k)
	// The 32-byte key is shorter than the block: RFC 2104 pads it with zeros.
	m.keyPad(&mk, 0x36)
	m.h.Reset()
	m.h.Write(m.pad[:])
	m.h.Write(msg)
	inner := m.h.Sum(m.sum[:0])
	m.keyPad(&mk, 0x5c)
	m.h.Reset()
	m.h.Write(m.pad[:])
	m.h.Write(inner)
	outer := m.h.Sum(m.sum[:0])
	var out [MACSize]byte
	copy(out[:], outer)
	clear(m.pad[:])
	clear(m.sum[:])
	m.h.Reset()
	return out
}

func (m *macer) keyPad(mk *Key, b byte) {
	for i := range m.pad {
		m.pad[i] = b
	}
	for i, k := range mk {
		m.pad[i] ^= k
	}
}

func (m *macer) verify(k Key, msg []byte, mac [MACSize]byte) bool {
	got := m.mac(k, msg)
	return subtle.ConstantTimeCompare(got[:], mac[:]) == 1
}
