package caddymodule

import (
	"os/exec"
	"strings"
	"testing"
)

// TestGateLinksNoBrokerLedger: the gate's package depends neither on
// package broker nor on SQLite (the broker's ledger), so that a plugin
// build of the gate alone (xcaddy build --with …/caddymodule) does not
// link them; the gate's wire types come from package brokerapi. (PostgreSQL's
// pgx is linked by Caddy itself, through caddypki, so it is not checked.)
func TestGateLinksNoBrokerLedger(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "github.com/ecoupons/ecoupons/broker" || strings.Contains(p, "sqlite") {
			t.Errorf("package caddymodule depends on %s", p)
		}
	}
}
