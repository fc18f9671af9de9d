package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/store"
)

// TestVendorRefusedListsRefusals: `ecoupons vendor refused --store` prints
// the lanes a bolt store keeps as refused, with their reasons.
func TestVendorRefusedListsRefusals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spent.db")
	s, err := store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := coupons.LaneID{Lane: 3}
	if err := s.Refuse(context.Background(), store.Refusal{ID: id, Index: 9, Code: "unknown_book", Message: "broker: unknown book: 000000…", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	var out bytes.Buffer
	if _, err := vendorRefused(&out, path, "", "", 10); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, id.String()+"\t9\tunknown_book\t") || !strings.Contains(got, "broker: unknown book") {
		t.Fatalf("output %q", got)
	}
	if _, err := vendorRefused(&out, "", "", "", 10); err == nil {
		t.Fatal("no store named, no error")
	}
}
