package blindfund

import (
	"bytes"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"
	"strings"
	"testing"

	"github.com/cloudflare/circl/blindsign/blindrsa"
)

// rfcVector is RFC 9474's test vector of RSABSSA-SHA384-PSS-Randomized
// (Appendix A), as JSON: every field a 0x-prefixed hex string.
type rfcVector struct {
	Name, P, Q, N, E, D                 string
	Msg, MsgPrefix, InputMsg, Salt, Inv string
	BlindedMsg, BlindSig, Sig           string
}

func (v *rfcVector) UnmarshalJSON(b []byte) error {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*v = rfcVector{Name: m["name"], P: m["p"], Q: m["q"], N: m["n"], E: m["e"], D: m["d"], Msg: m["msg"], MsgPrefix: m["msg_prefix"],
		InputMsg: m["input_msg"], Salt: m["salt"], Inv: m["inv"], BlindedMsg: m["blinded_msg"], BlindSig: m["blind_sig"], Sig: m["sig"]}
	return nil
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return b
}

// TestRFC9474Vectors checks circl's blindrsa, through the public API this
// package uses, against RFC 9474's vector of the variant every
// denomination uses: with the vector's prefix, salt and blinding factor
// fed as the client's randomness, the blinded message, the broker's blind
// signature, the unblinded signature and its verification are the RFC's.
func TestRFC9474Vectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/rfc9474-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []rfcVector
	if err := json.Unmarshal(raw, &vs); err != nil || len(vs) == 0 {
		t.Fatalf("vectors: %v", err)
	}
	for _, v := range vs {
		if v.Name != Variant.String() {
			t.Fatalf("a vector of %s; denominations use %s", v.Name, Variant)
		}
		num := func(s string) *big.Int { return new(big.Int).SetBytes(unhex(t, s)) }
		sk := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: num(v.N), E: int(num(v.E).Int64())}, D: num(v.D), Primes: []*big.Int{num(v.P), num(v.Q)}}
		sk.Precompute()
		if err := sk.Validate(); err != nil {
			t.Fatal(err)
		}
		// The client reads its randomness in this order: the message
		// prefix (Prepare), the PSS salt, then the blinding factor r as
		// crypto/rand.Int reads it (k big-endian bytes); the vector gives
		// r's inverse.
		r := new(big.Int).ModInverse(num(v.Inv), sk.N)
		rb := make([]byte, sk.Size())
		r.FillBytes(rb)
		rnd := bytes.NewReader(append(append(unhex(t, v.MsgPrefix), unhex(t, v.Salt)...), rb...))
		c, err := blindrsa.NewClient(Variant, &sk.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		prepared, err := c.Prepare(rnd, unhex(t, v.Msg))
		if err != nil || !bytes.Equal(prepared, unhex(t, v.InputMsg)) {
			t.Fatalf("prepared message: %x %v", prepared, err)
		}
		blinded, st, err := c.Blind(rnd, prepared)
		if err != nil || !bytes.Equal(blinded, unhex(t, v.BlindedMsg)) {
			t.Fatalf("blinded message differs from the RFC's: %v", err)
		}
		blindSig, err := Sign(sk, blinded)
		if err != nil || !bytes.Equal(blindSig, unhex(t, v.BlindSig)) {
			t.Fatalf("blind signature differs from the RFC's: %v", err)
		}
		sig, err := c.Finalize(st, blindSig)
		if err != nil || !bytes.Equal(sig, unhex(t, v.Sig)) {
			t.Fatalf("signature differs from the RFC's: %v", err)
		}
		ver, _ := blindrsa.NewVerifier(Variant, &sk.PublicKey)
		if err := ver.Verify(unhex(t, v.InputMsg), unhex(t, v.Sig)); err != nil {
			t.Fatal(err)
		}
		bad := unhex(t, v.Sig)
		bad[len(bad)-1] ^= 1
		if ver.Verify(unhex(t, v.InputMsg), bad) == nil {
			t.Fatal("a changed signature verifies")
		}
	}
}
