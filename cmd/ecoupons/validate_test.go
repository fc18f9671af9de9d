package main

import (
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestValidateRejectsBadConfigWithoutCreatingFiles runs
// testdata/validate/*.txtar: `ecoupons validate` and `ecoupons adapt`
// on Caddyfiles the gate rejects fail with the gate's message and leave
// Caddy's data directory ($WORK/data) empty.
func TestValidateRejectsBadConfigWithoutCreatingFiles(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/validate",
		Setup: func(e *testscript.Env) error {
			e.Setenv("HOME", e.WorkDir)
			e.Setenv("XDG_DATA_HOME", filepath.Join(e.WorkDir, "data"))
			e.Setenv("XDG_CONFIG_HOME", filepath.Join(e.WorkDir, "config"))
			return nil
		},
	})
}
