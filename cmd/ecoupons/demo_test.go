package main

import (
	"bytes"
	"net"
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
	d := &demo{site: freeAddr(t), broker: freeAddr(t), dir: t.TempDir(), out: &out}
	if err := d.run(true); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{"redeemed the 6 coupons", "refused the phone's next lane open", "Everything worked."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
