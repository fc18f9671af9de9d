// Package softhsm prepares a throw-away SoftHSM2 token for tests of
// PKCS#11 keys (smart cards). Tests call [Token]; it skips the test with a
// clear message when SoftHSM2 is not installed, and fails it instead when
// the CI environment variable is "true", so that CI never passes by
// skipping.
package softhsm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Module is where Debian's softhsm2 package installs the PKCS#11 module.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// PIN is the user PIN of the tokens made by Token.
const PIN = "1234"

// Token initialises a fresh token named label in a temporary directory and
// returns the go.step.sm/crypto kms URI that opens it. SOFTHSM2_CONF is set
// for the rest of the test.
func Token(t testing.TB, label string) string {
	t.Helper()
	util, err := exec.LookPath("softhsm2-util")
	if _, statErr := os.Stat(Module); err != nil || statErr != nil {
		msg := "SoftHSM2 is not installed (apt-get install -y softhsm2): skipping the PKCS#11 smart-card test"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " — CI=true, so this is a failure")
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", "5678").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return fmt.Sprintf("pkcs11:module-path=%s;token=%s?pin-value=%s", Module, label, PIN)
}
