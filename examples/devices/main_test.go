package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDevices runs the scenario, with the smart card's key on a SoftHSM2
// token when SoftHSM2 is installed (required under CI=true).
func TestDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("the devices scenario takes a few seconds")
	}
	card, kind, closeCard, err := cardKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer closeCard()
	_, hsmErr := exec.LookPath("softhsm2-util")
	if (hsmErr == nil || os.Getenv("CI") == "true") && !strings.Contains(kind, "SoftHSM2 token") {
		t.Fatalf("SoftHSM2 is installed (or required under CI=true), yet the card's key is %s", kind)
	}
	t.Log("the smart card's key:", kind)
	var out bytes.Buffer
	if err := run(&out, t.TempDir(), freeAddr(), freeAddr(), card); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "the card opens a new lane and keeps paying") {
		t.Fatalf("unexpected output:\n%s", out.String())
	}
}
