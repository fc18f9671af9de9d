package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestLaneOpenIsOneDurableWrite: a lane opened with its anchor's proof
// keeps both (the proof comes back with the lane's first pending
// redemption), and on the bolt store the open is one write, one group: a
// crash cannot keep the lane without the proof the broker needs. A second
// open keeps the first proof.
func TestLaneOpenIsOneDurableWrite(t *testing.T) {
	ctx := context.Background()
	proof := [][32]byte{{1}, {2}, {3}}
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			r, err := s.Open(ctx, lane(7), NewRecord(testMeta(0)), proof...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Open(ctx, lane(7), NewRecord(testMeta(0)), [32]byte{9}); err != nil {
				t.Fatal(err)
			}
			next := r
			next.State.Last, next.State.LastValue = 2, [32]byte{2}
			if err := s.Advance(ctx, lane(7), 0, 0, next, 0); err != nil {
				t.Fatal(err)
			}
			p, err := s.Pending(ctx, time.Now(), 10)
			if err != nil || len(p) != 1 || len(p[0].Proof) != 3 || p[0].Proof[2] != proof[2] {
				t.Fatalf("pending after an open with a proof: %+v %v", p, err)
			}
		})
	}
	b, err := OpenBolt(filepath.Join(t.TempDir(), "spent.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p, err := OpenPebble(filepath.Join(t.TempDir(), "pebble"), PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for name, s := range map[string]interface {
		Store
		Stats() BoltStats
	}{"bolt": b, "pebble": p} {
		before := s.Stats()
		if _, err := s.Open(ctx, lane(8), NewRecord(testMeta(0)), proof...); err != nil {
			t.Fatal(err)
		}
		after := s.Stats()
		if w, g := after.Writes-before.Writes, after.Groups-before.Groups; w != 1 || g != 1 {
			t.Fatalf("%s: a lane open with its proof took %d writes in %d groups, want 1 in 1", name, w, g)
		}
	}
}
