package brokermodule

import (
	"bytes"
	"context"
	"encoding/pem"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/ecoupons/ecoupons/internal/testutil"
	"go.step.sm/crypto/pemutil"
)

// releaseLoops counts the goroutines running a broker module's release
// loop.
func releaseLoops() int {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	return strings.Count(b.String(), "(*BrokerHandler).Provision.func")
}

// TestBrokerModuleRejectsBadConfigWithoutCreatingFiles: the broker module
// rejects a configuration Validate would reject before it opens (creates)
// the ledger or starts its release loop.
func TestBrokerModuleRejectsBadConfigWithoutCreatingFiles(t *testing.T) {
	block, err := pemutil.Serialize(testutil.Key("broker"))
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "broker.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		h    BrokerHandler
		want string
	}{
		{"no key", BrokerHandler{}, "key is required"},
		{"fee above 10000", BrokerHandler{KeyFile: keyFile, FeeBasisPoints: 10001}, "fee"},
		{"short release_every", BrokerHandler{KeyFile: keyFile, ReleaseEvery: caddy.Duration(1)}, "release_every"},
		{"unknown users policy", BrokerHandler{KeyFile: keyFile, Users: "closed"}, "users must be open or approve"},
		{"negative revocations_per_hour", BrokerHandler{KeyFile: keyFile, RevocationsPerHour: -1}, "revocations_per_hour"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := t.TempDir()
			t.Setenv("XDG_DATA_HOME", data)
			before := releaseLoops()
			h := c.h
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := h.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Provision: %v, want an error mentioning %q", err, c.want)
			}
			if after := releaseLoops(); after > before {
				t.Errorf("Provision started %d release loops", after-before)
			}
			if h.db != nil || h.stop != nil {
				t.Errorf("Provision opened the ledger or started the release loop")
			}
			h.Cleanup()
			var made []string
			filepath.WalkDir(data, func(p string, _ os.DirEntry, _ error) error {
				if p != data {
					made = append(made, p)
				}
				return nil
			})
			if len(made) > 0 {
				t.Errorf("Provision created %v", made)
			}
		})
	}
}
