package keyfile

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"fmt"
	"hash"

	"golang.org/x/crypto/scrypt"
)

// PBES2 (RFC 8018 §6.2) as OpenSSL writes it for encrypted PKCS#8 keys:
// PBKDF2 (RFC 8018 §5.2; HMAC-SHA1, -SHA256 or -SHA512) or scrypt (RFC
// 7914 §7) as the key derivation, AES-CBC as the encryption.
var (
	oidPBES2          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidScrypt         = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
	oidHMACWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

type algorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

type encryptedPrivateKeyInfo struct {
	Algorithm     algorithmIdentifier
	EncryptedData []byte
}

type pbes2Params struct {
	KeyDerivationFunc algorithmIdentifier
	EncryptionScheme  algorithmIdentifier
}

type pbkdf2Params struct {
	Salt           []byte
	IterationCount int
	KeyLength      int                 `asn1:"optional"`
	PRF            algorithmIdentifier `asn1:"optional"`
}

type scryptParams struct {
	Salt                     []byte
	CostParameter            int
	BlockSize                int
	ParallelizationParameter int
	KeyLength                int `asn1:"optional"`
}

// Bounds on the work a key file may ask for, so that a hostile file
// cannot make a gate spend minutes or gigabytes deriving a key.
const (
	maxPBKDF2Iterations = 10_000_000
	maxScryptMemory     = 1 << 30 // 128·N·r bytes
)

// decryptPKCS8 decrypts an EncryptedPrivateKeyInfo (PBES2) with the
// passphrase and returns the PKCS#8 DER it holds.
func decryptPKCS8(der, passphrase []byte) ([]byte, error) {
	var info encryptedPrivateKeyInfo
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) > 0 {
		return nil, fmt.Errorf("%w: \"ENCRYPTED PRIVATE KEY\" does not parse", ErrFormat)
	}
	if !info.Algorithm.Algorithm.Equal(oidPBES2) {
		return nil, &FormatError{Found: fmt.Sprintf("an encrypted PKCS#8 key under %v (not PBES2)", info.Algorithm.Algorithm), Takes: PrivateFormats}
	}
	var params pbes2Params
	if _, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &params); err != nil {
		return nil, fmt.Errorf("%w: PBES2 parameters: %v", ErrFormat, err)
	}
	keyLen := 0
	switch enc := params.EncryptionScheme.Algorithm; {
	case enc.Equal(oidAES128CBC):
		keyLen = 16
	case enc.Equal(oidAES192CBC):
		keyLen = 24
	case enc.Equal(oidAES256CBC):
		keyLen = 32
	default:
		return nil, &FormatError{Found: fmt.Sprintf("an encrypted PKCS#8 key with cipher %v (AES-CBC is taken)", enc), Takes: PrivateFormats}
	}
	var iv []byte
	if _, err := asn1.Unmarshal(params.EncryptionScheme.Parameters.FullBytes, &iv); err != nil || len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("%w: PBES2: bad AES-CBC IV", ErrFormat)
	}
	key, err := deriveKey(params.KeyDerivationFunc, passphrase, keyLen)
	if err != nil {
		return nil, err
	}
	data := info.EncryptedData
	if len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: PBES2: encrypted data of %d bytes", ErrFormat, len(data))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, data)
	// PKCS#7 padding: a wrong passphrase almost always breaks it.
	n := int(out[len(out)-1])
	if n == 0 || n > aes.BlockSize {
		return nil, ErrBadPassphrase
	}
	for _, b := range out[len(out)-n:] {
		if int(b) != n {
			return nil, ErrBadPassphrase
		}
	}
	return out[:len(out)-n], nil
}

// deriveKey runs the key derivation a PBES2 structure names.
func deriveKey(kdf algorithmIdentifier, passphrase []byte, keyLen int) ([]byte, error) {
	switch {
	case kdf.Algorithm.Equal(oidPBKDF2):
		var p pbkdf2Params
		if _, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &p); err != nil {
			return nil, fmt.Errorf("%w: PBKDF2 parameters: %v", ErrFormat, err)
		}
		if p.IterationCount < 1 || p.IterationCount > maxPBKDF2Iterations {
			return nil, fmt.Errorf("%w: PBKDF2 with %d iterations (at most %d)", ErrFormat, p.IterationCount, maxPBKDF2Iterations)
		}
		if p.KeyLength != 0 && p.KeyLength != keyLen {
			return nil, fmt.Errorf("%w: PBKDF2 key length %d for a %d-byte key", ErrFormat, p.KeyLength, keyLen)
		}
		var h func() hash.Hash
		switch prf := p.PRF.Algorithm; {
		case len(prf) == 0 || prf.Equal(oidHMACWithSHA1):
			h = sha1.New
		case prf.Equal(oidHMACWithSHA256):
			h = sha256.New
		case prf.Equal(oidHMACWithSHA512):
			h = sha512.New
		default:
			return nil, &FormatError{Found: fmt.Sprintf("PBKDF2 with PRF %v", prf), Takes: PrivateFormats}
		}
		return pbkdf2.Key(h, string(passphrase), p.Salt, p.IterationCount, keyLen)
	case kdf.Algorithm.Equal(oidScrypt):
		var p scryptParams
		if _, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &p); err != nil {
			return nil, fmt.Errorf("%w: scrypt parameters: %v", ErrFormat, err)
		}
		n, r, par := p.CostParameter, p.BlockSize, p.ParallelizationParameter
		if n < 2 || n&(n-1) != 0 || r < 1 || par < 1 || int64(128)*int64(n)*int64(r) > maxScryptMemory || int64(r)*int64(par) >= 1<<30 {
			return nil, fmt.Errorf("%w: scrypt with N=%d r=%d p=%d (at most 1 GiB of memory)", ErrFormat, n, r, par)
		}
		if p.KeyLength != 0 && p.KeyLength != keyLen {
			return nil, fmt.Errorf("%w: scrypt key length %d for a %d-byte key", ErrFormat, p.KeyLength, keyLen)
		}
		return scrypt.Key(passphrase, p.Salt, n, r, par, keyLen)
	}
	return nil, &FormatError{Found: fmt.Sprintf("an encrypted PKCS#8 key with key derivation %v", kdf.Algorithm), Takes: PrivateFormats}
}
