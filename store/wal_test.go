package store

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// advanceTo advances lane id from index from to index to, one coupon at
// a time.
func advanceTo(t *testing.T, s *Bolt, id uint32, from, to uint32) {
	t.Helper()
	ctx := context.Background()
	r, err := s.Get(ctx, lane(id))
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < to; i++ {
		next := r
		next.State.Last = i + 1
		if err := s.Advance(ctx, lane(id), i, 0, next, 0); err != nil {
			t.Fatal(err)
		}
		r = next
	}
}

// crash abandons s as a killed process would: its log and file stay as
// they are, with no checkpoint; the bbolt file lock is released.
func crash(s *Bolt) {
	s.closeOnce.Do(func() {
		s.stopCommitter()
		s.log.close()
		s.db.Close()
		s.closeErr = ErrClosed
	})
}

// TestWALReplay: writes acknowledged but not checkpointed are replayed at
// the next open; a record torn by the crash is not; a torn header means
// an empty log (everything was checkpointed before it was rewritten).
func TestWALReplay(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spent.db")
	s := openBolt(t, path)
	s.Open(ctx, lane(1), NewRecord(testMeta(0)))
	s.SetProof(ctx, lane(1), [][32]byte{{1}, {2}})
	advanceTo(t, s, 1, 0, 7)
	if err := s.Redeemed(ctx, lane(1), 3); err != nil {
		t.Fatal(err)
	}
	off := s.log.off
	advanceTo(t, s, 1, 7, 8) // the last record, torn below
	crash(s)

	// Tear the last record: flip a byte of its payload.
	f, err := os.OpenFile(path+".wal", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, off+20)
	b[0] ^= 0xff
	f.WriteAt(b, off+20)
	f.Close()

	s = openBolt(t, path)
	got, err := s.Get(ctx, lane(1))
	if err != nil || got.State.Last != 7 {
		t.Fatalf("after replay: %d %v, want 7 (the torn 8th not replayed)", got.State.Last, err)
	}
	p, err := s.Pending(ctx, time.Now(), 10)
	if err != nil || len(p) != 1 || p[0].Redeemed != 3 || p[0].Index != 7 || len(p[0].Proof) != 2 {
		t.Fatalf("pending after replay: %+v %v", p, err)
	}
	// Replay checkpointed the log: a clean close and a torn header lose nothing.
	advanceTo(t, s, 1, 7, 9)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, _ = os.OpenFile(path+".wal", os.O_RDWR, 0)
	f.WriteAt([]byte("garbage!"), 0)
	f.Close()
	s = openBolt(t, path)
	defer s.Close()
	if got, err := s.Get(ctx, lane(1)); err != nil || got.State.Last != 9 {
		t.Fatalf("after a torn header: %d %v", got.State.Last, err)
	}
}

// TestWALStaleRecordsIgnored: after a checkpoint the log starts a new
// generation; the old records still in the file after the current ones
// are never replayed.
func TestWALStaleRecordsIgnored(t *testing.T) {
	old := walSize
	walSize = 16 << 10
	defer func() { walSize = old }()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spent.db")
	s := openBolt(t, path)
	s.Open(ctx, lane(1), NewRecord(testMeta(0)))
	advanceTo(t, s, 1, 0, 100) // several logs' worth: several checkpoints
	crash(s)
	w, recs, err := openWAL(path+".wal", false)
	if err != nil {
		t.Fatal(err)
	}
	next := make([]byte, 4)
	w.f.ReadAt(next, w.off)
	w.close()
	if len(recs) >= 100 || binary.BigEndian.Uint32(next) == 0 {
		t.Fatalf("%d records replayable, next length %x: the test did not leave stale records", len(recs), next)
	}
	s = openBolt(t, path)
	defer s.Close()
	if got, _ := s.Get(ctx, lane(1)); got.State.Last != 100 {
		t.Fatalf("store at %d, want 100", got.State.Last)
	}
}

// TestWALFullCheckpoints: with a tiny log, racing writers fill it many
// times over; every write lands, and a crash at the end loses nothing.
func TestWALFullCheckpoints(t *testing.T) {
	old := walSize
	walSize = 64 << 10
	defer func() { walSize = old }()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spent.db")
	s, err := OpenBolt(path, BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	const lanes, per = 8, 300
	for l := uint32(0); l < lanes; l++ {
		s.Open(ctx, lane(l), NewRecord(testMeta(0)))
	}
	var wg sync.WaitGroup
	for l := uint32(0); l < lanes; l++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			advanceTo(t, s, l, 0, per)
		}()
	}
	wg.Wait()
	crash(s)
	s = openBolt(t, path)
	defer s.Close()
	for l := uint32(0); l < lanes; l++ {
		if got, err := s.Get(ctx, lane(l)); err != nil || got.State.Last != per {
			t.Fatalf("lane %d at %d (%v), want %d", l, got.State.Last, err, per)
		}
	}
	if p, _ := s.Pending(ctx, time.Now(), 100); len(p) != lanes {
		t.Fatalf("%d lanes pending, want %d", len(p), lanes)
	}
}

// FuzzWALChanges: decoding a log record never panics, and what it decodes
// encodes back to the same bytes.
func FuzzWALChanges(f *testing.F) {
	f.Add(appendChange(appendChange(nil, change{k: string(rune(bLanes)) + "k", val: []byte("v")}), change{k: string(rune(bDirty)) + "k", del: true}))
	f.Add([]byte{0, 1, 0, 1, 0, 0, 0, 9, 'k'})
	f.Fuzz(func(t *testing.T, p []byte) {
		var again []byte
		if err := decodeChanges(p, func(c change) error { again = appendChange(again, c); return nil }); err != nil {
			return
		}
		if string(again) != string(p) {
			t.Fatalf("re-encoded %x, want %x", again, p)
		}
	})
}

// FuzzRecord: decoding a stored record (from a bolt file, Redis or the
// log) never panics, and what decodes encodes back to the same bytes
// (version 4) or to its version 4 form (versions 1 to 3), which decodes
// to the same record; the position, the credit and the lease read in
// place agree, and so does the revoked check of Advance (a record never
// refuses a write of itself, and refuses its unmarked self when it is
// marked).
func FuzzRecord(f *testing.F) {
	r := NewRecord(testMeta(5))
	enc, _ := r.MarshalBinary()
	f.Add(enc)
	r.Meta.Certs, r.Meta.Keys = testPrincipals(1)
	r.Meta.Revoked = true
	full, _ := r.MarshalBinary()
	f.Add(full)
	r.Lease = 0x01020304
	leased, _ := r.MarshalBinary()
	f.Add(leased)
	f.Add(append(append([]byte{3}, leased[1:recordLeaseAt]...), leased[recordTailAt:]...))
	f.Add(append([]byte{1}, enc[1:recordLenV1]...))
	f.Add(append([]byte{2}, enc[1:recordLenV2]...))
	f.Add([]byte{2, 0, 0})
	f.Add([]byte{3, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if r.UnmarshalBinary(b) != nil {
			return
		}
		again, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("a decoded record does not encode: %v", err)
		}
		if b[0] == recordVersion && string(again) != string(b) {
			t.Fatalf("re-encoded %x, want %x", again, b)
		}
		var back Record
		if err := back.UnmarshalBinary(again); err != nil || !back.Equal(&r) {
			t.Fatalf("round trip: %v", err)
		}
		if b[0] == recordVersion && binary.BigEndian.Uint32(b[recordLeaseAt:]) != r.Lease || b[0] < 4 && r.Lease != 0 {
			t.Fatalf("lease %d", r.Lease)
		}
		if last, credit, err := recordPosition(b); err != nil || last != r.State.Last || credit != r.Credit {
			t.Fatalf("recordPosition: %d, %d, %v; want %d, %d", last, credit, err, r.State.Last, r.Credit)
		}
		if err := checkWrite(b, again, false); err != nil {
			t.Fatalf("a record refuses a write of itself: %v", err)
		}
		unmarked := r
		unmarked.Meta.Revoked = false
		u, _ := unmarked.MarshalBinary()
		for _, reopen := range []bool{false, true} {
			if err := checkWrite(again, u, reopen); errors.Is(err, ErrRevoked) != r.Meta.Revoked {
				t.Fatalf("writing the unmarked record over one marked %v (reopen %v): %v", r.Meta.Revoked, reopen, err)
			}
		}
		other := r
		other.Meta.Certs = append(slices.Clone(r.Meta.Certs), [32]byte{0xee})
		if len(other.Meta.Certs) <= MaxCerts {
			o, _ := other.MarshalBinary()
			if err := checkWrite(b, o, false); !errors.Is(err, ErrConflict) {
				t.Fatalf("a write with other principals: %v", err)
			}
			if err := checkWrite(b, o, true); err != nil {
				t.Fatalf("a reopen with other principals: %v", err)
			}
		}
	})
}
