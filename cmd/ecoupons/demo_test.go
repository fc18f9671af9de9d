package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestDemoScript runs `ecoupons demo --script`: the whole stack, broker and
// gate, in this process, on free ports; it must complete every step.
func TestDemoScript(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes a few seconds")
	}
	var out bytes.Buffer
	dir := filepath.Join(t.TempDir(), "not", "yet") // --dir D creates D
	d := &demo{site: freeAddr(t), broker: freeAddr(t), dir: dir, out: &out}
	if err := d.run(true); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "admin.pem")); err != nil {
		t.Errorf("the demo's directory lacks the admin key: %v", err)
	}
	for _, want := range []string{"redeemed the 12 coupons", "read the live ticker", "25 events, 5 units charged", "refused the phone's next lane open", "Everything worked.",
		"broker account topup --dir " + dir + " --broker http://" + d.broker + " user:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
