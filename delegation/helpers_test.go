package delegation

import (
	"crypto/hpke"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
)

func hpkeKey(d *Device) (hpke.PublicKey, error) { return hpke.NewDHKEMPublicKey(d.Encryption) }

func sealForTest(t testing.TB, pk hpke.PublicKey, book [32]byte, lane uint32, seed coupons.Value) []byte {
	t.Helper()
	out, err := hpke.Seal(pk, sealKDF, sealAEAD, sealInfo(book, lane), seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sealPortionForTest(t testing.TB, pk hpke.PublicKey, book [32]byte, lane, end uint32, w coupons.Value) []byte {
	t.Helper()
	out, err := hpke.Seal(pk, sealKDF, sealAEAD, portionInfo(book, lane, end), w[:])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
