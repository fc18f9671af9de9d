package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testredis"
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
	if _, err := vendorRefused(&out, path, "", "", 10, false); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, id.String()+"\t9\tunknown_book\t") || !strings.Contains(got, "broker: unknown book") {
		t.Fatalf("output %q", got)
	}
	if _, err := vendorRefused(&out, "", "", "", 10, false); err == nil {
		t.Fatal("no store named, no error")
	}
}

// TestVendorRefusedOnRedisCluster: `vendor refused --redis URL --cluster`
// reads the refusals a fleet on a Redis Cluster keeps (in every shard);
// without --cluster the same URL is a single server's, which does not
// hold them.
func TestVendorRefusedOnRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a six-node Redis Cluster")
	}
	cl := testredis.StartCluster(t, 3)
	ctx := context.Background()
	s, err := store.NewRedisCluster(ctx, cl.URL, store.ClusterOptions{MinReplicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	ids := []coupons.LaneID{{Book: [32]byte{1}, Lane: 3}, {Book: [32]byte{0xfe, 0x77}, Lane: 4}} // two shards
	for _, id := range ids {
		if err := s.Refuse(ctx, store.Refusal{ID: id, Index: 9, Code: "unknown_book", Message: "broker: unknown book", At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	var out bytes.Buffer
	if _, err := vendorRefused(&out, "", cl.URL, "", 10, true); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if !strings.Contains(out.String(), id.String()+"\t9\tunknown_book") {
			t.Fatalf("lane %s missing from:\n%s", id, out.String())
		}
	}
}
