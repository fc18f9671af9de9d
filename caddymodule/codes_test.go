package caddymodule

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestGateCodesAreWireConstants: every reason code the gate writes as a
// literal (in a refusal, a problem body, reasonFor's table) is one of the
// Code… constants of coupons/codes.go, so that the wallet and the
// documentation (which the coupons tests check) know it.
func TestGateCodesAreWireConstants(t *testing.T) {
	src, err := os.ReadFile("../coupons/codes.go")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\tCode\w+ += "([a-z0-9_]+)"`).FindAllStringSubmatch(string(src), -1) {
		known[m[1]] = true
	}
	if len(known) < 40 {
		t.Fatalf("only %d codes in coupons/codes.go", len(known))
	}
	// A code is the first argument of refuse, payRequired and badRequest,
	// a problem's Error, a brokerRefusal's Code, reasonFor's table, and a
	// returned snake_case string (reasonFor, laneFits).
	uses := regexp.MustCompile(`(?:problem\{Error: |(?:refuse|payRequired|badRequest)\(w, |\{coupons\.Err\w+, |Code: )"([a-z0-9_]+)"|return "([a-z0-9]+_[a-z0-9_]+)"`)
	files, _ := filepath.Glob("*.go")
	found := 0
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
			found++
			if !known[code] {
				t.Errorf("%s: the code %q is not a constant of coupons/codes.go", f, code)
			}
		}
	}
	t.Logf("%d literal codes left in the gate's files", found)
}
