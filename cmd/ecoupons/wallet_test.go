package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/softhsm"
	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"

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
	ticker, err := startTicker() // for metered.txtar
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ticker.Close() })
	s, err := stack.Start(t.TempDir(), freeAddr(t), freeAddr(t), demoSite(), []stack.Route{{Path: "/premium/*", Price: 2},
		{Path: "/live/*", Price: 1, Upstream: ticker.Addr().String(), Meter: map[string]any{"by": "events", "per": tickerPer, "window": tickerWindow}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop) // the scripts run after this function returns
	if err := s.RegisterVendor(); err != nil {
		t.Fatal(err)
	}
	// A smart card for smartcard.txtar: a key on a SoftHSM2 token.
	smartCard := ""
	if _, err := exec.LookPath("softhsm2-util"); err == nil || os.Getenv("CI") == "true" {
		uri := softhsm.Token(t, "cli")
		km, err := kms.New(context.Background(), apiv1.Options{Type: apiv1.PKCS11, URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		_, err = km.CreateKey(&apiv1.CreateKeyRequest{Name: "pkcs11:id=7020;object=wallet", SignatureAlgorithm: apiv1.ECDSAWithSHA256})
		km.Close()
		if err != nil {
			t.Fatal(err)
		}
		base, _, _ := strings.Cut(uri, "?")
		smartCard = base + ";id=7020;object=wallet"
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		// [smartcard]: SoftHSM2 is installed (always in CI).
		Condition: func(cond string) (bool, error) {
			if cond == "smartcard" {
				return smartCard != "", nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Setup: func(e *testscript.Env) error {
			e.Setenv("SMARTCARD", smartCard)
			e.Setenv("SOFTHSM2_CONF", os.Getenv("SOFTHSM2_CONF"))
			e.Setenv("BROKER", "http://"+s.Broker)
			e.Setenv("BROKER_KEY", filepath.Join(s.Dir, "broker.pub"))
			e.Setenv("VENDOR_PEM", filepath.Join(s.Dir, "vendor.pem"))
			e.Setenv("SITE", "http://"+s.Site)
			e.Setenv("HOME", e.WorkDir)
			e.Setenv("PROXY", freeAddr(t))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// sleep DURATION
			"sleep": func(ts *testscript.TestScript, neg bool, args []string) {
				d, err := time.ParseDuration(args[0])
				ts.Check(err)
				time.Sleep(d)
			},
			// waitfor ADDR: wait until something listens on ADDR.
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
			// denomination FACE: the broker's admin makes a denomination of
			// anonymous books of FACE EUR, issuing from an hour ago for 30 days.
			"denomination": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: denomination FACE")
				}
				now := time.Now()
				err := s.CallJSON(s.AdminKey, "POST", "/v1/admin/denominations", map[string]string{"face": args[0], "currency": "EUR",
					"not_before": now.Add(-time.Hour).Format(time.RFC3339), "not_after": now.AddDate(0, 0, 30).Format(time.RFC3339)}, nil)
				if neg != (err != nil) {
					ts.Fatalf("denomination: %v", err)
				}
			},
			// envfile NAME FILE: set $NAME to FILE's contents (trimmed).
			"envfile": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: envfile NAME FILE")
				}
				ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile(args[1])))
			},
			// topup DIR AMOUNT: the broker's admin funds the wallet's account.
			"topup": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: topup DIR AMOUNT")
				}
				w, err := wallet.LoadWith(filepath.Join(ts.Getenv("WORK"), args[0]), wallet.KeyOptions{PIN: ts.Getenv("ECOUPONS_PIN")})
				ts.Check(err)
				err = s.CallJSON(s.AdminKey, "POST", "/v1/admin/topup", map[string]string{"account": w.Config.Account, "amount": args[1], "id": "script-" + w.Config.Account}, nil)
				if neg != (err != nil) {
					ts.Fatalf("topup: %v", err)
				}
			},
		},
	})
}
