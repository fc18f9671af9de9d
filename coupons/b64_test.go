package coupons

import (
	"encoding/base64"
	"math/rand/v2"
	"testing"
)

// TestDecodeB64 checks decodeB64 against encoding/base64 (unpadded
// base64url, strict): every encoding of 16 and 32 bytes decodes, and any
// string of the right length (base64url with any trailing bits, or with
// other bytes) decodes exactly when the standard decoder
// takes it, to the same bytes.
func TestDecodeB64(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	strict := base64.RawURLEncoding.Strict()
	alphabet := b64url + "+/=.\x00\xff"
	for _, n := range []int{16, 32} {
		for k := 0; k < 20000; k++ {
			var s string
			if k%3 == 0 {
				src := make([]byte, n)
				for i := range src {
					src[i] = byte(rng.Uint32())
				}
				s = base64.RawURLEncoding.EncodeToString(src)
			} else {
				b := make([]byte, (n*8+5)/6)
				for i := range b {
					b[i] = alphabet[rng.IntN(len(alphabet))]
					if k%3 == 1 || rng.IntN(8) != 0 { // all base64url: trailing bits decide
						b[i] = b64url[rng.IntN(64)]
					}
				}
				s = string(b)
			}
			want, err := strict.DecodeString(s)
			got := make([]byte, n)
			ok := decodeB64(got, s)
			if ok != (err == nil && len(want) == n) || ok && string(got) != string(want) {
				t.Fatalf("decodeB64(%q) = %x %v, encoding/base64: %x %v", s, got, ok, want, err)
			}
		}
	}
}
