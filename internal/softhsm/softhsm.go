// Package softhsm prepares a throw-away SoftHSM2 token for tests of
// PKCS#11 keys (smart cards). Tests call [Token]; it skips the test with a
// clear message when SoftHSM2 is not installed, and fails it instead when
// the CI environment variable is "true", so that CI never passes by
// skipping.
package softhsm

import (
	"errors"
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

// ErrNotInstalled means SoftHSM2 (softhsm2-util and its PKCS#11 module)
// is not installed.
var ErrNotInstalled = errors.New("SoftHSM2 is not installed (apt-get install -y softhsm2)")

// NewToken initialises a fresh token named label in dir (its tokens and
// configuration) and returns the go.step.sm/crypto kms URI that opens it.
// It sets SOFTHSM2_CONF for the process, which the module reads when it
// is loaded.
func NewToken(dir, label string) (string, error) {
	util, err := exec.LookPath("softhsm2-util")
	if _, statErr := os.Stat(Module); err != nil || statErr != nil {
		return "", ErrNotInstalled
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return "", err
	}
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return "", err
	}
	out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", "5678").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("softhsm2-util --init-token: %v: %s", err, out)
	}
	return fmt.Sprintf("pkcs11:module-path=%s;token=%s?pin-value=%s", Module, label, PIN), nil
}

// Token initialises a fresh token named label in a temporary directory and
// returns the go.step.sm/crypto kms URI that opens it. SOFTHSM2_CONF is set
// for the rest of the test.
func Token(t testing.TB, label string) string {
	t.Helper()
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		skipOrFail(t)
	}
	if _, err := os.Stat(Module); err != nil {
		skipOrFail(t)
	}
	t.Setenv("SOFTHSM2_CONF", "") // restored when the test ends
	uri, err := NewToken(t.TempDir(), label)
	if err != nil {
		t.Fatal(err)
	}
	return uri
}

func skipOrFail(t testing.TB) {
	t.Helper()
	msg := "SoftHSM2 is not installed (apt-get install -y softhsm2): skipping the PKCS#11 smart-card test"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " — CI=true, so this is a failure")
	}
	t.Skip(msg)
}
