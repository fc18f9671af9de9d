package main

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

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
			e.Setenv("PROXY", freeAddr(t))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// waitfor ADDR: wait until something listens on ADDR.
			// sleep DURATION
			"sleep": func(ts *testscript.TestScript, neg bool, args []string) {
				d, err := time.ParseDuration(args[0])
				ts.Check(err)
				time.Sleep(d)
			},
			"waitfor": func(ts *testscript.TestScript, neg bool, args []string) {
				for k := 0; k < 200; k++ {
					if c, err := net.Dial("tcp", args[0]); err == nil {
						c.Close()
						return
					}
					time.Sleep(25 * time.Millisecond)
				}
				ts.Fatalf("nothing listens on %s", args[0])
			},
			// fetch URL: a plain HTTP GET (a client that cannot pay), body to stdout.
			"fetch": func(ts *testscript.TestScript, neg bool, args []string) {
				resp, err := http.Get(args[0])
				ts.Check(err)
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				ts.Stdout().Write(b)
				if neg != (resp.StatusCode != 200) {
					ts.Fatalf("GET %s: %s", args[0], resp.Status)
				}
			},
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
