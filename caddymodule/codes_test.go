package caddymodule

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
)

// TestGateCodesAreWireConstants: every reason code the gate writes (in a
// refusal, a problem body, reasonFor's table) is one of the Code…
// constants of coupons/codes.go, named, never a literal: the wallet and
// the documentation (which the coupons tests check) know every constant,
// and the compiler checks the names.
func TestGateCodesAreWireConstants(t *testing.T) {
	src, err := os.ReadFile("../coupons/codes.go")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\t(Code\w+) += "([a-z0-9_]+)"`).FindAllStringSubmatch(string(src), -1) {
		known[m[2]] = m[1]
	}
	if len(known) < 40 {
		t.Fatalf("only %d codes in coupons/codes.go", len(known))
	}
	// A code is the first argument of refuse, payRequired and badRequest,
	// a problem's Error, a brokerRefusal's Code, a challenge's Error,
	// reasonFor's table, and a returned snake_case string (reasonFor,
	// laneFits).
	uses := regexp.MustCompile(`(?:problem\{Error: |(?:refuse|payRequired|badRequest)\(w, |\{coupons\.Err\w+, |Code: |c\.Error, c\.Reason, c\.Nonce, c\.Hint = |c\.Error = )"([a-z0-9_]+)"|return "([a-z0-9]+_[a-z0-9_]+)"`)
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range uses.FindAllStringSubmatch(string(b), -1) {
			code := m[1] + m[2]
			if name, ok := known[code]; ok {
				t.Errorf("%s: the code %q is a literal: write coupons.%s", f, code, name)
			} else {
				t.Errorf("%s: the code %q is not a constant of coupons/codes.go", f, code)
			}
		}
	}
}

// TestHeaderKeysCanonical: the gate's header keys (hotpath.go) are the
// canonical forms of the names they stand for.
func TestHeaderKeysCanonical(t *testing.T) {
	for key, name := range map[string]string{
		keyAuthorization: "Authorization",
		keyOpen:          HeaderOpen,
		keyContentDigest: coupons.HeaderContentDigest,
		keyRange:         "Range",
		keyBalance:       HeaderBalance,
		keyCredit:        HeaderCredit,
		keyReceipt:       HeaderReceipt,
	} {
		if c := http.CanonicalHeaderKey(name); key != c {
			t.Errorf("key %q for %s: want %q", key, name, c)
		}
	}
}
