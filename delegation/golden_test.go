package delegation

import (
	"bytes"
	"crypto/hpke"
	"flag"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"

	"github.com/ecoupons/ecoupons/spki"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// checkGolden compares got with testdata/name, or rewrites it under -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	testutil.Golden(t, filepath.Join("testdata", name), got, *update)
}

func TestGoldenDeviceGrantRevocations(t *testing.T) {
	f := newFixture(t)
	d, _ := device(t, "phone", testKey("phone"))
	checkGolden(t, "device.adv", append(spki.AdvancedIndent(d.Sexp()), '\n'))
	// The grant certificate is deterministic (Ed25519); the sealed seeds are
	// not (HPKE draws a fresh ephemeral key), so only the certificate is a
	// golden file.
	g, err := f.owner.Issue(d, 0, 9, GrantOptions{Propagate: true, Cap: 5 * 1_000_000_000, NotAfter: time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "grant-cert.adv", append(spki.AdvancedIndent(g.Cert().Sexp()), '\n'))
	r, err := SignRevocations(f.broker, 42, t0, t0.Add(time.Hour), [][32]byte{g.Cert().Cert.Hash()}, []spki.KeyHash{pub(t, testKey("lost laptop")).Hash()})
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "revocations.adv", append(spki.AdvancedIndent(r.Sexp()), '\n'))
}

// TestGoldenPortionLane documents a portion lane of a grant: lane 2 of a
// grant capped at 21 coupons over lanes 0–9 of the fixture's book (L = 8),
// so lanes 0 and 1 are whole and lane 2 ends at 5. The sealed value is not
// reproducible (HPKE draws a fresh ephemeral key): the vector shows the
// entry with an all-zero stand-in of the sealed value's length (enc 32 ‖
// ciphertext 32 ‖ tag 16), the HPKE info and the plaintext w_5, and the
// test opens the real sealed value with the device's key.
func TestGoldenPortionLane(t *testing.T) {
	f := newFixture(t)
	d, enc := device(t, "phone", testKey("phone"))
	g, err := f.owner.Issue(d, 0, 9, GrantOptions{Cap: 21 * 1_000_000, NotAfter: time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	sl := g.Lanes[2]
	if sl.Lane != 2 || sl.End != 5 || len(sl.Sealed) != 80 {
		t.Fatalf("lane %d, end %d, %d sealed bytes", sl.Lane, sl.End, len(sl.Sealed))
	}
	info := portionInfo(f.owner.Book.Book.ID(), 2, 5)
	dk, err := hpke.NewDHKEMPrivateKey(enc)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := hpke.Open(dk, sealKDF, sealAEAD, info, sl.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	if w := f.ownerValue(2, 5); !bytes.Equal(plain, w[:]) {
		t.Fatal("the sealed value is not w_5")
	}
	stand := sl
	stand.Sealed = make([]byte, len(sl.Sealed))
	proof := spkiProof(stand.Proof)
	var b bytes.Buffer
	b.WriteString("# Lane 2 of a grant capped at 21 coupons over lanes 0-9 of the delegation test book (L = 8):\n")
	b.WriteString("# lanes 0 and 1 are whole (end 8), lane 2 ends at 5. The sealed value is shown as 80 zero bytes.\n")
	b.Write(spki.AdvancedIndent(stand.sexp(proof)))
	fmt.Fprintf(&b, "\n# HPKE info = %q || book_id || be32(2) || be32(5)\ninfo = %x\nplaintext w_5 = %x\n", LabelSealPortion, info, plain)
	checkGolden(t, "grant-lane.txt", b.Bytes())
}

func spkiProof(p [][32]byte) spki.List {
	proof := spki.L("proof")
	for _, h := range p {
		proof = append(proof, spki.NewBytes(append([]byte(nil), h[:]...)))
	}
	return proof
}
