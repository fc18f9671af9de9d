package tesla

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

func TestBindRequestLayout(t *testing.T) {
	next := Key(sha256.Sum256([]byte("next")))
	digest := sha256.Sum256([]byte("digest"))
	var in []byte
	in = append(in, "ecoupons bind v1"...)
	in = append(in, make([]byte, 16)...)
	in = append(in, next[:]...)
	in = append(in, digest[:]...)
	if len(in) != 96 || len(in)+9 > 128 {
		t.Fatalf("input of %d bytes", len(in))
	}
	sum := sha256.Sum256(in)
	tag := BindRequest(next, digest)
	if !bytes.Equal(tag[:], sum[:BindingSize]) {
		t.Fatalf("BindRequest = %x, want %x", tag, sum[:BindingSize])
	}
	if !VerifyBinding(next, digest, tag) {
		t.Fatal("VerifyBinding rejects a good tag")
	}
	// Any change to key, digest or tag is detected.
	for i := range 32 * 8 {
		n, d := next, digest
		n[i/8] ^= 1 << (i % 8)
		d[i/8] ^= 1 << (i % 8)
		if VerifyBinding(n, digest, tag) || VerifyBinding(next, d, tag) {
			t.Fatalf("bit %d: flipped input accepted", i)
		}
	}
	for i := range BindingSize * 8 {
		bad := tag
		bad[i/8] ^= 1 << (i % 8)
		if VerifyBinding(next, digest, bad) {
			t.Fatalf("bit %d: flipped tag accepted", i)
		}
	}
	// Domain separation: the binding is not F' of the key.
	if fp := FPrime(next); bytes.Equal(fp[:BindingSize], tag[:]) {
		t.Fatal("binding equals F'")
	}
}
