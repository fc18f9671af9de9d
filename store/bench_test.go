package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/ecoupons/ecoupons/internal/testutil"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testredis"
)

func BenchmarkBaselineSHA256_32(b *testing.B) { testutil.BenchSHA256_32(b) }

func BenchmarkBaselineEd25519Verify(b *testing.B) { testutil.BenchEd25519Verify(b) }

// benchAdvance measures compare-and-set advances from parallel goroutines,
// each on its own lane (the gate's shape: many lanes, one writer each), so
// the bolt store's group commit can share fsyncs.
func benchAdvance(b *testing.B, s Store) { benchAdvanceMeta(b, s, testMeta(0)) }

// benchAdvanceMeta is benchAdvance on lanes of meta m.
func benchAdvanceMeta(b *testing.B, s Store, m Meta) {
	ctx := context.Background()
	var lanes atomic.Uint32
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		id := coupons.LaneID{Book: [32]byte{7}, Lane: lanes.Add(1)}
		r, err := s.Open(ctx, id, NewRecord(m))
		if err != nil {
			b.Error(err)
			return
		}
		for pb.Next() {
			next := r
			next.State.Last++
			if err := s.Advance(ctx, id, r.State.Last, r.Credit, next, 0); err != nil {
				b.Error(err)
				return
			}
			r = next
		}
	})
}

func BenchmarkAdvanceMemory(b *testing.B) { benchAdvance(b, NewMemory()) }

// BenchmarkAdvanceBolt: durable (fsync) advances, group-committed.
func BenchmarkAdvanceBolt(b *testing.B) {
	s, err := OpenBolt(filepath.Join(b.TempDir(), "spent.db"), BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchAdvance(b, s)
}

// BenchmarkAdvanceRedis: advances through the Lua compare-and-set against a
// local redis-server with appendfsync always.
func BenchmarkAdvanceRedis(b *testing.B) {
	s, err := NewRedis(context.Background(), testredis.Start(b), fmt.Sprintf("bench%d:", b.N))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchAdvance(b, s)
}

// BenchmarkAdvanceBoltNoSync: the same without fdatasync (not durable):
// the store's own cost per advance (log record, group commit, overlay),
// apart from the disk's.
func BenchmarkAdvanceBoltNoSync(b *testing.B) {
	s, err := OpenBolt(filepath.Join(b.TempDir(), "spent.db"), BoltOptions{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchAdvance(b, s)
}

// BenchmarkAdvanceBoltNoSyncDevice is AdvanceBoltNoSync on a delegate's
// lanes, whose records keep their principals (two certificates, two keys:
// 128 bytes more per record written) and are checked against the revoked
// mark in the compare-and-set.
func BenchmarkAdvanceBoltNoSyncDevice(b *testing.B) {
	s, err := OpenBolt(filepath.Join(b.TempDir(), "spent.db"), BoltOptions{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	m := testMeta(0)
	m.Certs, m.Keys = testPrincipals(1)
	benchAdvanceMeta(b, s, m)
}

// BenchmarkRecordMarshal encodes a delegate lane's record, as every
// Advance of the bolt and Redis stores does.
func BenchmarkRecordMarshal(b *testing.B) {
	m := testMeta(0)
	m.Certs, m.Keys = testPrincipals(1)
	r := NewRecord(m)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}
