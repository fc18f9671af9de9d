package broker

import (
	"crypto/ecdh"
	"crypto/rand"
	"testing"
)

func mustX25519(t *testing.T) *ecdh.PrivateKey {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
