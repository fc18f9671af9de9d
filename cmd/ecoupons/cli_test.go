package main

import (
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestCLI runs testdata/cli/*.txtar: the binary's own help, version and
// messages, with no broker or gate running.
func TestCLI(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/cli",
		Setup: func(e *testscript.Env) error {
			e.Setenv("HOME", e.WorkDir)
			return nil
		},
	})
}
