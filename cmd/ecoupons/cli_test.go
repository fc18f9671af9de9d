package main

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestCLI runs testdata/cli/*.txtar: the binary's own help, version and
// messages, and the broker's files, with no other service running.
func TestCLI(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/cli",
		Setup: func(e *testscript.Env) error {
			e.Setenv("HOME", e.WorkDir)
			e.Setenv("XDG_CONFIG_HOME", filepath.Join(e.WorkDir, "config"))
			e.Setenv("XDG_DATA_HOME", filepath.Join(e.WorkDir, "data"))
			e.Setenv("LISTEN", freeAddr(t))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// listening ADDR: wait until something listens on ADDR (10s).
			"listening": func(ts *testscript.TestScript, neg bool, args []string) {
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(25 * time.Millisecond) {
					if c, err := net.Dial("tcp", args[0]); err == nil {
						c.Close()
						return
					}
				}
				ts.Fatalf("nothing listens on %s", args[0])
			},
		},
	})
}
