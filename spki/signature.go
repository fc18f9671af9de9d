package spki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
)

// Signature value algorithm names, inside (signature … (alg |sig|)).
const (
	SigEd25519         = "ed25519"           // 64-byte RFC 8032 signature of the 32-byte object hash
	SigECDSAP256SHA256 = "ecdsa-p256-sha256" // r||s, 32 bytes each, over the object hash as digest
)

// Errors about signatures.
var (
	// ErrBadSignature is a signature that does not verify.
	ErrBadSignature = errors.New("spki: bad signature")
	// ErrMalformedSignature is a (signature …) object that cannot be parsed.
	ErrMalformedSignature = errors.New("spki: malformed signature object")
	// ErrWrongSigner means the signing key is not the one required (for
	// a certificate: not the issuer).
	ErrWrongSigner = errors.New("spki: signed by the wrong key")
	// ErrHashMismatch means a signature names the hash of another object.
	ErrHashMismatch = errors.New("spki: signature is over a different object")
)

// Signature is an SPKI signature object:
//
//	(signature (hash sha256 |H|) (public-key …) (ed25519 |sig|))
//
// where H is the SHA-256 of the signed object's canonical form. Ed25519
// signs the 32 bytes of H; ECDSA P-256 signs H as a SHA-256 digest (so the
// signature is ECDSA-P256-SHA256 over the canonical object).
type Signature struct {
	Hash   [32]byte
	Signer *PublicKey
	Alg    string
	Value  []byte
}

// ObjectHash returns the SHA-256 of the canonical form of s.
func ObjectHash(s Sexp) [32]byte { return sha256.Sum256(Canonical(s)) }

// Sign signs the canonical form of obj with signer, whatever holds the
// private key (a file key, go.step.sm/crypto's kms, a PKCS#11 token).
func Sign(signer crypto.Signer, obj Sexp) (*Signature, error) {
	return SignHash(signer, ObjectHash(obj))
}

// SignHash signs an object hash computed by the caller.
func SignHash(signer crypto.Signer, h [32]byte) (*Signature, error) {
	pub, err := NewPublicKey(signer.Public())
	if err != nil {
		return nil, err
	}
	sig := &Signature{Hash: h, Signer: pub}
	switch pub.alg {
	case AlgEd25519:
		v, err := signer.Sign(rand.Reader, h[:], crypto.Hash(0))
		if err != nil {
			return nil, fmt.Errorf("spki: signing: %w", err)
		}
		sig.Alg, sig.Value = SigEd25519, v
	case AlgECDSAP256:
		der, err := signer.Sign(rand.Reader, h[:], crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("spki: signing: %w", err)
		}
		var rs struct{ R, S *big.Int }
		rest, err := asn1.Unmarshal(der, &rs)
		if err != nil || len(rest) != 0 || rs.R == nil || rs.S == nil || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 {
			return nil, fmt.Errorf("spki: signer returned a malformed ECDSA signature")
		}
		v := make([]byte, 64)
		rs.R.FillBytes(v[:32])
		rs.S.FillBytes(v[32:])
		sig.Alg, sig.Value = SigECDSAP256SHA256, v
	}
	if err := sig.Verify(h); err != nil {
		// A token that signs with another key than it reports is a
		// configuration error worth catching at signing time.
		return nil, fmt.Errorf("spki: signer produced an invalid signature: %w", err)
	}
	return sig, nil
}

// Verify checks that sig is a valid signature by sig.Signer over the
// object whose hash is h.
func (sig *Signature) Verify(h [32]byte) error {
	if subtle.ConstantTimeCompare(sig.Hash[:], h[:]) != 1 {
		return ErrHashMismatch
	}
	switch sig.Signer.alg {
	case AlgEd25519:
		if sig.Alg != SigEd25519 {
			return fmt.Errorf("%w: %s signature by an ed25519 key", ErrMalformedSignature, sig.Alg)
		}
		if len(sig.Value) != ed25519.SignatureSize || !ed25519.Verify(sig.Signer.ed, h[:], sig.Value) {
			return ErrBadSignature
		}
	case AlgECDSAP256:
		if sig.Alg != SigECDSAP256SHA256 {
			return fmt.Errorf("%w: %s signature by an ecdsa-p256 key", ErrMalformedSignature, sig.Alg)
		}
		if len(sig.Value) != 64 {
			return ErrBadSignature
		}
		r := new(big.Int).SetBytes(sig.Value[:32])
		s := new(big.Int).SetBytes(sig.Value[32:])
		if !ecdsa.Verify(sig.Signer.ec, h[:], r, s) {
			return ErrBadSignature
		}
	default:
		return ErrUnsupportedKey
	}
	return nil
}

// VerifyCache remembers signatures that verified, so that a verifier who
// sees the same signed object again (a book or a grant presented at every
// lane open) checks it once. Keys are [Signature.CacheKey] values, which
// cover everything verification depends on; only successes are stored.
// Implementations must be safe for concurrent use.
type VerifyCache interface {
	Verified(key [32]byte) bool
	Remember(key [32]byte)
}

// LabelSigCache prefixes the signature cache key.
const LabelSigCache = "ecoupons sig cache v1"

// CacheKey is SHA-256(LabelSigCache || object hash || signer key hash ||
// algorithm || signature value).
func (sig *Signature) CacheKey() [32]byte {
	h := sha256.New()
	h.Write([]byte(LabelSigCache))
	h.Write(sig.Hash[:])
	k := sig.Signer.Hash()
	h.Write(k[:])
	h.Write([]byte(sig.Alg))
	h.Write(sig.Value)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// VerifyCached is Verify consulting and filling cache (which may be nil).
func (sig *Signature) VerifyCached(h [32]byte, cache VerifyCache) error {
	if cache == nil {
		return sig.Verify(h)
	}
	if subtle.ConstantTimeCompare(sig.Hash[:], h[:]) != 1 {
		return ErrHashMismatch
	}
	key := sig.CacheKey()
	if cache.Verified(key) {
		return nil
	}
	if err := sig.Verify(h); err != nil {
		return err
	}
	cache.Remember(key)
	return nil
}

// VerifyObject checks sig against the canonical form of obj.
func (sig *Signature) VerifyObject(obj Sexp) error { return sig.Verify(ObjectHash(obj)) }

// Sexp returns the signature object.
func (sig *Signature) Sexp() List {
	return L("signature", L("hash", HashSHA256, sig.Hash[:]), sig.Signer.Sexp(), L(sig.Alg, sig.Value))
}

// ParseSignature parses a (signature …) object. It does not verify it.
func ParseSignature(s Sexp) (*Signature, error) {
	l, ok := s.(List)
	if !ok || len(l) != 4 || !l.Is("signature") {
		return nil, fmt.Errorf("%w: expected (signature (hash …) (public-key …) (alg |…|)), got %s", ErrMalformedSignature, describe(s))
	}
	h, err := ParseHash(l[1])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedSignature, err)
	}
	k, err := ParsePublicKey(l[2])
	if err != nil {
		return nil, err
	}
	v, ok := l[3].(List)
	if !ok || len(v) != 2 {
		return nil, fmt.Errorf("%w: expected (alg |signature|)", ErrMalformedSignature)
	}
	alg, ok := v.Head()
	val, ok2 := v[1].(*Atom)
	if !ok || !ok2 || val.Hint != nil {
		return nil, fmt.Errorf("%w: expected (alg |signature|)", ErrMalformedSignature)
	}
	if alg != SigEd25519 && alg != SigECDSAP256SHA256 {
		return nil, fmt.Errorf("%w: signature algorithm %q", ErrUnsupportedKey, alg)
	}
	return &Signature{Hash: h, Signer: k, Alg: alg, Value: append([]byte(nil), val.Value...)}, nil
}
