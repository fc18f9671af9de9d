package tesla

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ecoupons/ecoupons/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Golden inputs, all fixed:
//
//	seed   = K_8 = SHA-256("ecoupons test seed"), chain of n = 8
//	msg    = "ecoupons test message"
//	packet = interval 3, MAC under K_3, discloses K_1 (delay 2), message msg
//	next   = SHA-256("ecoupons test next")
//	digest = SHA-256("ecoupons test digest")
const (
	goldenN   = 8
	goldenMsg = "ecoupons test message"
)

func goldenFiles(t *testing.T) map[string][]byte {
	keys := naiveChain(testSeed, goldenN)
	c := mustChain(t, testSeed, goldenN)
	for i, k := range keys {
		if ck, _ := c.Key(uint64(i)); ck != k {
			t.Fatalf("chain key %d differs", i)
		}
	}
	files := map[string][]byte{}

	var b bytes.Buffer
	fmt.Fprintf(&b, "# TESLA key chain, package tesla.\n")
	fmt.Fprintf(&b, "# seed = K_%d = SHA-256(%q), n = %d\n", goldenN, "ecoupons test seed", goldenN)
	fmt.Fprintf(&b, "# K_i = F(K_{i+1}) = SHA-256(%q || K_{i+1})\n", LabelF)
	fmt.Fprintf(&b, "# F'(K_i) = SHA-256(%q || K_i)\n", LabelFPrime)
	fmt.Fprintf(&b, "seed = %x\n", testSeed)
	for i, k := range keys {
		fmt.Fprintf(&b, "K_%d = %x\n", i, k)
		fmt.Fprintf(&b, "F'(K_%d) = %x\n", i, FPrime(k))
	}
	files["chain.txt"] = bytes.Clone(b.Bytes())

	b.Reset()
	mac := MAC(keys[3], []byte(goldenMsg))
	fmt.Fprintf(&b, "# Packet MAC = HMAC-SHA256(F'(key), msg)[:16]; key = K_3 of chain.txt.\n")
	fmt.Fprintf(&b, "key = %x\n", keys[3])
	fmt.Fprintf(&b, "mac_key = %x\n", FPrime(keys[3]))
	fmt.Fprintf(&b, "msg = %x\n", goldenMsg)
	fmt.Fprintf(&b, "mac = %x\n", mac)
	files["mac.txt"] = bytes.Clone(b.Bytes())

	p := Packet{Interval: 3, MAC: mac, DisclosedIndex: 1, DisclosedKey: keys[1], Message: []byte(goldenMsg)}
	enc, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	files["packet.hex"] = []byte(hex.EncodeToString(enc) + "\n")

	b.Reset()
	next := Key(sha256.Sum256([]byte("ecoupons test next")))
	digest := sha256.Sum256([]byte("ecoupons test digest"))
	fmt.Fprintf(&b, "# Request binding = SHA-256(%q || 0^16 || next || digest)[:16]\n", LabelBind)
	fmt.Fprintf(&b, "# next = SHA-256(%q), digest = SHA-256(%q)\n", "ecoupons test next", "ecoupons test digest")
	fmt.Fprintf(&b, "next = %x\n", next)
	fmt.Fprintf(&b, "digest = %x\n", digest)
	fmt.Fprintf(&b, "mac = %x\n", BindRequest(next, digest))
	files["binding.txt"] = bytes.Clone(b.Bytes())
	return files
}

func TestGolden(t *testing.T) {
	for name, computed := range goldenFiles(t) {
		testutil.Golden(t, filepath.Join("testdata", name), computed, *update)
	}
}

// TestGoldenPacketParses checks the stored packet against the stored MAC
// vector, independently of goldenFiles.
func TestGoldenPacketParses(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "packet.hex"))
	if err != nil {
		t.Fatal(err)
	}
	enc, err := hex.DecodeString(string(bytes.TrimSpace(raw)))
	if err != nil {
		t.Fatal(err)
	}
	var p Packet
	if err := p.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	keys := naiveChain(testSeed, goldenN)
	if p.Interval != 3 || p.DisclosedIndex != 1 || p.DisclosedKey != keys[1] || string(p.Message) != goldenMsg {
		t.Fatalf("packet %+v", p)
	}
	if !VerifyMAC(keys[3], p.Message, p.MAC) {
		t.Fatal("stored packet's MAC does not verify")
	}
}
