package main

import (
	"path/filepath"
	"testing"

	"github.com/ecoupons/ecoupons/internal/stack"
	"github.com/ecoupons/ecoupons/wallet"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"ecoupons": main})
}

// TestWalletScripts runs testdata/script/*.txtar against a broker and a
// gated site running in this process.
func TestWalletScripts(t *testing.T) {
	s, err := stack.Start(t.TempDir(), freeAddr(t), freeAddr(t), demoSite(), []stack.Route{{Path: "/premium/*", Price: 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop) // the scripts run after this function returns
	if err := s.RegisterVendor(); err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			e.Setenv("BROKER", "http://"+s.Broker)
			e.Setenv("SITE", "http://"+s.Site)
			e.Setenv("HOME", e.WorkDir)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// topup DIR AMOUNT: the broker's admin funds the wallet's account.
			"topup": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: topup DIR AMOUNT")
				}
				w, err := wallet.Load(filepath.Join(ts.Getenv("WORK"), args[0]))
				ts.Check(err)
				err = s.CallJSON(s.AdminKey, "POST", "/v1/admin/topup", map[string]string{"account": w.Config.Account, "amount": args[1], "id": "script-" + w.Config.Account}, nil)
				if neg != (err != nil) {
					ts.Fatalf("topup: %v", err)
				}
			},
		},
	})
}
