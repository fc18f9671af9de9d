package delegation

import (
	"flag"
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
