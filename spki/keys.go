package spki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// Key algorithm names as they appear inside (public-key …).
const (
	AlgEd25519   = "ed25519"
	AlgECDSAP256 = "ecdsa-p256"
)

// HashSHA256 is the hash algorithm name in (hash sha256 |…|).
const HashSHA256 = "sha256"

// Errors about keys.
var (
	// ErrUnsupportedKey is a key type or curve ecoupons does not accept.
	ErrUnsupportedKey = errors.New("spki: unsupported key type")
	// ErrBadKey is a key whose encoding is malformed.
	ErrBadKey = errors.New("spki: malformed public key")
	// ErrBadHash is a malformed (hash …) object or an unsupported hash.
	ErrBadHash = errors.New("spki: malformed hash")
)

// KeyHash is the SHA-256 of a public key's canonical S-expression; it
// names the key wherever the key itself is not needed ((hash sha256 |…|)).
type KeyHash [32]byte

// Sexp returns (hash sha256 |h|).
func (h KeyHash) Sexp() List { return L("hash", HashSHA256, h[:]) }

// String returns the advanced form of the hash object.
func (h KeyHash) String() string { return string(Advanced(h.Sexp())) }

// ID is the key hash as ecoupons spells it for people (the CLI, the
// broker's API and back office): base64url without padding, 43
// characters, the spelling of book and lane IDs too.
func (h KeyHash) ID() string { return base64.RawURLEncoding.EncodeToString(h[:]) }

// ParseHash parses (hash sha256 |32 bytes|).
func ParseHash(s Sexp) ([32]byte, error) {
	var h [32]byte
	l, ok := s.(List)
	if !ok || len(l) != 3 || !l.Is("hash") {
		return h, fmt.Errorf("%w: expected (hash sha256 |…|), got %s", ErrBadHash, describe(s))
	}
	alg, ok := plainAtom(l[1])
	if !ok || alg != HashSHA256 {
		return h, fmt.Errorf("%w: hash algorithm must be %s", ErrBadHash, HashSHA256)
	}
	v, ok := l[2].(*Atom)
	if !ok || v.Hint != nil || len(v.Value) != 32 {
		return h, fmt.Errorf("%w: sha256 value must be 32 bytes", ErrBadHash)
	}
	copy(h[:], v.Value)
	return h, nil
}

// PublicKey is an Ed25519 or ECDSA P-256 public key with its SPKI encoding
// (public-key (ed25519 |32 bytes|)) or (public-key (ecdsa-p256 |65 bytes|)),
// the latter holding the uncompressed SEC 1 point.
type PublicKey struct {
	alg  string
	ed   ed25519.PublicKey
	ec   *ecdsa.PublicKey
	sexp List
	hash KeyHash
}

// NewPublicKey wraps a standard library public key: ed25519.PublicKey or
// *ecdsa.PublicKey on P-256. This is what crypto.Signer.Public returns for
// keys held in files, in go.step.sm/crypto's kms or on a PKCS#11 token.
func NewPublicKey(pub crypto.PublicKey) (*PublicKey, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: ed25519 key of %d bytes", ErrBadKey, len(k))
		}
		return finishKey(&PublicKey{alg: AlgEd25519, ed: append(ed25519.PublicKey(nil), k...)}, k), nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA curve %s (only P-256)", ErrUnsupportedKey, k.Curve.Params().Name)
		}
		b, err := k.Bytes()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		return finishKey(&PublicKey{alg: AlgECDSAP256, ec: k}, b), nil
	default:
		return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
	}
}

func finishKey(k *PublicKey, raw []byte) *PublicKey {
	k.sexp = L("public-key", L(k.alg, append([]byte(nil), raw...)))
	k.hash = sha256.Sum256(Canonical(k.sexp))
	return k
}

// ParsePublicKey parses (public-key (ed25519 |…|)) or
// (public-key (ecdsa-p256 |…|)).
func ParsePublicKey(s Sexp) (*PublicKey, error) {
	l, ok := s.(List)
	if !ok || len(l) != 2 || !l.Is("public-key") {
		return nil, fmt.Errorf("%w: expected (public-key (alg |…|)), got %s", ErrBadKey, describe(s))
	}
	inner, ok := l[1].(List)
	if !ok || len(inner) != 2 {
		return nil, fmt.Errorf("%w: expected (alg |key bytes|)", ErrBadKey)
	}
	alg, ok := inner.Head()
	if !ok {
		return nil, fmt.Errorf("%w: missing algorithm name", ErrBadKey)
	}
	v, ok := inner[1].(*Atom)
	if !ok || v.Hint != nil {
		return nil, fmt.Errorf("%w: key value must be a plain octet string", ErrBadKey)
	}
	switch alg {
	case AlgEd25519:
		if len(v.Value) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: ed25519 key of %d bytes, want 32", ErrBadKey, len(v.Value))
		}
		return NewPublicKey(ed25519.PublicKey(v.Value))
	case AlgECDSAP256:
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), v.Value)
		if err != nil {
			return nil, fmt.Errorf("%w: ecdsa-p256 point: %v", ErrBadKey, err)
		}
		return NewPublicKey(k)
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedKey, alg)
	}
}

// Algorithm returns AlgEd25519 or AlgECDSAP256.
func (k *PublicKey) Algorithm() string { return k.alg }

// Sexp returns the key's S-expression. The result must not be modified.
func (k *PublicKey) Sexp() List { return k.sexp }

// Hash returns the SHA-256 of the key's canonical S-expression.
func (k *PublicKey) Hash() KeyHash { return k.hash }

// Crypto returns the standard library key (ed25519.PublicKey or
// *ecdsa.PublicKey).
func (k *PublicKey) Crypto() crypto.PublicKey {
	if k.ed != nil {
		return k.ed
	}
	return k.ec
}

// Equal reports whether k and o are the same key.
func (k *PublicKey) Equal(o *PublicKey) bool { return o != nil && k.hash == o.hash }

// String returns the key's advanced form.
func (k *PublicKey) String() string { return string(Advanced(k.sexp)) }

// Principal names a key: by the key itself or by its hash. Hash is always
// set; Key is nil when only the hash is known.
type Principal struct {
	Key  *PublicKey
	Hash KeyHash
}

// KeyPrincipal returns the principal for k, carrying the key.
func KeyPrincipal(k *PublicKey) Principal { return Principal{Key: k, Hash: k.Hash()} }

// HashPrincipal returns a principal known only by its hash.
func HashPrincipal(h KeyHash) Principal { return Principal{Hash: h} }

// Sexp returns the key when known, else (hash sha256 |…|).
func (p Principal) Sexp() Sexp {
	if p.Key != nil {
		return p.Key.Sexp()
	}
	return p.Hash.Sexp()
}

// ParsePrincipal parses a public key or a key hash.
func ParsePrincipal(s Sexp) (Principal, error) {
	l, ok := s.(List)
	if ok && l.Is("hash") {
		h, err := ParseHash(l)
		return Principal{Hash: h}, err
	}
	if ok && l.Is("public-key") {
		k, err := ParsePublicKey(l)
		if err != nil {
			return Principal{}, err
		}
		return KeyPrincipal(k), nil
	}
	if ok && l.Is("name") {
		return Principal{}, fmt.Errorf("%w: SDSI names are not supported yet", ErrUnsupported)
	}
	return Principal{}, fmt.Errorf("%w: expected (public-key …) or (hash …), got %s", ErrBadKey, describe(s))
}

// plainAtom returns the value of an atom without display hint.
func plainAtom(s Sexp) (string, bool) {
	a, ok := s.(*Atom)
	if !ok || a.Hint != nil {
		return "", false
	}
	return string(a.Value), true
}

// describe names what s is in error messages, without dumping it whole.
func describe(s Sexp) string {
	switch v := s.(type) {
	case *Atom:
		if len(v.Value) > 32 {
			return fmt.Sprintf("an atom of %d bytes", len(v.Value))
		}
		return "atom " + string(Advanced(v))
	case List:
		if h, ok := v.Head(); ok {
			if len(h) > 32 {
				h = h[:32] + "…"
			}
			return "(" + h + " …)"
		}
		return "a list"
	}
	return "nothing"
}
