package store

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testredis"
	"github.com/ecoupons/ecoupons/spki"
)

func testMeta(capNanos int64) Meta {
	m := Meta{Length: 1 << 20, Unit: 1_000_000, Currency: "EUR", NotAfter: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), Cap: capNanos}
	m.Anchor[0], m.Tag[0], m.Grant[0] = 1, 2, 3
	m.Nonce = "AAECAwQFBgcICQoLDA0ODw"
	return m
}

func lane(n uint32) coupons.LaneID { return coupons.LaneID{Book: [32]byte{9, 9}, Lane: n} }

// openBolt opens the bolt store at path or fails the test.
func openBolt(t testing.TB, path string) *Bolt {
	t.Helper()
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// stores returns every implementation available here.
func stores(t *testing.T) map[string]Store {
	t.Helper()
	out := map[string]Store{"memory": NewMemory()}
	b, err := OpenBolt(filepath.Join(t.TempDir(), "spent.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out["bolt"] = b
	pb, err := OpenPebble(filepath.Join(t.TempDir(), "pebble"), PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out["pebble"] = pb
	r, err := NewRedis(context.Background(), testredis.Start(t), "test:")
	if err != nil {
		t.Fatal(err)
	}
	out["redis"] = r
	out["redis-cluster"] = clusterStore(t)
	t.Cleanup(func() {
		for _, s := range out {
			s.Close()
		}
	})
	return out
}

// testPrincipals are a lane's certificates and keys: a user certificate
// and a grant, the owner and the device.
func testPrincipals(device byte) ([][32]byte, []spki.KeyHash) {
	return [][32]byte{{0xc1}, {0xc2, device}}, []spki.KeyHash{{0x0a}, {0xd0, device}}
}

func TestRecordEncoding(t *testing.T) {
	r := NewRecord(testMeta(5))
	r.Meta.Vendor[0], r.Meta.Vendor[31] = 7, 8
	r.Meta.Certs, r.Meta.Keys = testPrincipals(1)
	r.State.Last, r.State.HasPrev, r.Credit, r.Spent = 0x01020304, true, 7, 0x01020304
	r.State.PrevMAC[3] = 9
	enc, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) != recordFixedLen+4*32 || string(enc[recordLastAt:recordLastAt+4]) != "\x01\x02\x03\x04" || enc[0] != 4 {
		t.Fatalf("layout: %d bytes, last at %x", len(enc), enc[recordLastAt:recordLastAt+4])
	}
	r.Meta.Length = 0x7fffffff
	enc, _ = r.MarshalBinary()
	var back Record
	if err := back.UnmarshalBinary(enc); err != nil || !back.Equal(&r) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, back, r)
	}
	// The revoked mark is the flags byte, and round-trips.
	marked := r
	marked.Meta.Revoked = true
	menc, _ := marked.MarshalBinary()
	if menc[recordFlagsAt] != flagRevoked || string(menc[:recordFlagsAt]) != string(enc[:recordFlagsAt]) {
		t.Fatalf("the mark is not (only) the flags byte")
	}
	if err := back.UnmarshalBinary(menc); err != nil || !back.Equal(&marked) {
		t.Fatalf("marked round trip: %v\n%+v", err, back)
	}
	// No principals: an empty tail, decoded as nil slices.
	bare := NewRecord(testMeta(0))
	benc, _ := bare.MarshalBinary()
	if len(benc) != recordFixedLen {
		t.Fatalf("bare record of %d bytes", len(benc))
	}
	if err := back.UnmarshalBinary(benc); err != nil || back.Meta.Certs != nil || back.Meta.Keys != nil || !back.Equal(&bare) {
		t.Fatalf("bare round trip: %v %+v", err, back.Meta)
	}
	// A version 3 record (before the lease was kept) still reads, with
	// lease 0.
	leased := r
	leased.Lease = 0x0a0b0c0d
	lenc, _ := leased.MarshalBinary()
	v3 := append(append([]byte{3}, lenc[1:recordLeaseAt]...), lenc[recordTailAt:]...)
	var old Record
	if err := old.UnmarshalBinary(v3); err != nil || !old.Equal(&r) || old.Lease != 0 {
		t.Fatalf("version 3: %v\n%+v", err, old)
	}
	if err := old.UnmarshalBinary(lenc); err != nil || !old.Equal(&leased) || old.Equal(&r) {
		t.Fatalf("lease round trip: %v %d", err, old.Lease)
	}
	if p3, _ := principalsOf(v3); p3 != string(lenc[recordTailAt:]) {
		t.Fatal("version 3 principals read at the wrong offset")
	}
	if err := checkWrite(v3, lenc, false); err != nil {
		t.Fatalf("a version 4 write over its version 3 self: %v", err)
	}
	// A version 2 record (before the principals were kept) still reads,
	// with none and no mark.
	v2 := append([]byte{2}, enc[1:recordLenV2]...)
	want2 := r
	want2.Meta.Certs, want2.Meta.Keys = nil, nil
	if err := old.UnmarshalBinary(v2); err != nil || !old.Equal(&want2) {
		t.Fatalf("version 2: %v\n%+v", err, old)
	}
	// A version 1 record (before the vendor was kept) still reads, with
	// no vendor.
	v1 := append([]byte{1}, enc[1:recordLenV1]...)
	want := want2
	want.Meta.Vendor = [32]byte{}
	if err := old.UnmarshalBinary(v1); err != nil || !old.Equal(&want) {
		t.Fatalf("version 1: %v\n%+v", err, old)
	}
	unknownFlag := append([]byte(nil), enc...)
	unknownFlag[recordFlagsAt] = 2
	badCount := append([]byte(nil), enc...)
	badCount[recordTailAt] = 3
	tooMany := append(append([]byte(nil), enc[:recordTailAt]...), MaxCerts+1, 0)
	tooMany = append(tooMany, make([]byte, 32*(MaxCerts+1))...)
	for _, bad := range [][]byte{nil, enc[:10], append(append([]byte(nil), enc...), 0), append([]byte{5}, enc[1:]...),
		append([]byte{1}, enc[1:]...), append([]byte{2}, enc[1:]...), append([]byte{3}, enc[1:recordLenV2]...),
		append([]byte{3}, enc[1:recordFixedLen]...), append([]byte{4}, enc[1:recordFixedLenV3]...),
		enc[:recordFixedLen], unknownFlag, badCount, tooMany} {
		if err := back.UnmarshalBinary(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("corrupt record accepted: %v", err)
		}
		if _, _, err := recordPosition(bad); !errors.Is(err, ErrCorrupt) && string(bad) != string(unknownFlag) { // it checks versions and lengths only
			t.Errorf("recordPosition of a corrupt record: %v", err)
		}
	}
	r.Meta.Certs = make([][32]byte, MaxCerts+1)
	if _, err := r.MarshalBinary(); !errors.Is(err, ErrTooManyPrincipals) {
		t.Errorf("too many certificates encoded: %v", err)
	}
}

// TestMarkRevoked: a lane marked revoked refuses every write that keeps
// its principals without the mark (a gate's payment from a record read
// before the mark, a reopen under the same chain), takes one that carries
// the mark (a refund computed from the marked record), and a reopen with
// other principals (a takeover), which clears it; after which a write
// under the old chain is refused. Marking is idempotent and refused for
// other principals.
func TestMarkRevoked(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			certs, keys := testPrincipals(1)
			m := testMeta(0)
			m.Certs, m.Keys = certs, keys
			if err := s.MarkRevoked(ctx, lane(20), certs, keys); !errors.Is(err, ErrNotFound) {
				t.Fatalf("marking an unknown lane: %v", err)
			}
			r, err := s.Open(ctx, lane(20), NewRecord(m))
			if err != nil || !r.Meta.SamePrincipals(certs, keys) || r.Meta.Revoked {
				t.Fatalf("Open: %v %+v", err, r.Meta)
			}
			paid := r
			paid.State.Last, paid.Spent = 2, 2
			if err := s.Advance(ctx, lane(20), 0, 0, paid, 0); err != nil {
				t.Fatal(err)
			}
			otherCerts, otherKeys := testPrincipals(2)
			if err := s.MarkRevoked(ctx, lane(20), otherCerts, otherKeys); !errors.Is(err, ErrConflict) {
				t.Fatalf("marking for principals the lane does not hold: %v", err)
			}
			if err := s.MarkRevoked(ctx, lane(20), certs, keys[:1]); !errors.Is(err, ErrConflict) {
				t.Fatalf("marking for a subset of the lane's principals: %v", err)
			}
			for range 2 { // idempotent
				if err := s.MarkRevoked(ctx, lane(20), certs, keys); err != nil {
					t.Fatalf("MarkRevoked: %v", err)
				}
			}
			got, err := s.Get(ctx, lane(20))
			if err != nil || !got.Meta.Revoked || got.State.Last != 2 || !got.Meta.SamePrincipals(certs, keys) {
				t.Fatalf("after the mark: %v %+v", err, got)
			}
			// A gate that read the lane before the mark pays: refused, even
			// with the right position, and nothing changes.
			stale := paid
			stale.State.Last, stale.Spent = 3, 3
			if err := s.Advance(ctx, lane(20), 2, 0, stale, 0); !errors.Is(err, ErrRevoked) {
				t.Fatalf("payment on a marked lane: %v", err)
			}
			if err := s.Advance(ctx, lane(20), 1, 0, stale, 0); !errors.Is(err, ErrRevoked) {
				t.Fatalf("payment from an older position on a marked lane: %v", err)
			}
			if got, _ := s.Get(ctx, lane(20)); got.State.Last != 2 || !got.Meta.Revoked {
				t.Fatalf("a refused write changed the lane: %+v", got)
			}
			// A refund computed from the marked record keeps the mark.
			refund := got
			refund.Credit = 1
			if err := s.Advance(ctx, lane(20), 2, 0, refund, 0); err != nil {
				t.Fatalf("refund on a marked lane: %v", err)
			}
			if got, _ := s.Get(ctx, lane(20)); got.Credit != 1 || !got.Meta.Revoked {
				t.Fatalf("after the refund: %+v", got)
			}
			// A takeover (the owner's own open: other principals, no mark)
			// replaces the chain, keeps the position and clears the mark.
			taken := refund
			taken.Meta.Revoked = false
			taken.Meta.Certs, taken.Meta.Keys = certs[:1], keys[:1]
			taken.Meta.Spender = keys[0]
			taken.Meta.Nonce = "takeover-nonce"
			if err := s.Advance(ctx, lane(20), 2, 1, taken, 0); !errors.Is(err, ErrConflict) {
				t.Fatalf("a payment's write bringing other principals: %v", err)
			}
			// Nor can a reopen under the revoked chain (a gate with an older
			// list) clear the mark.
			again := refund
			again.Meta.Revoked = false
			again.Meta.Nonce = "reopen-nonce"
			if err := s.Reopen(ctx, lane(20), 2, 1, again); !errors.Is(err, ErrRevoked) {
				t.Fatalf("reopen under the revoked chain: %v", err)
			}
			if err := s.Reopen(ctx, lane(20), 2, 1, taken); err != nil {
				t.Fatalf("takeover of a marked lane: %v", err)
			}
			got, _ = s.Get(ctx, lane(20))
			if got.Meta.Revoked || got.State.Last != 2 || got.Credit != 1 || !got.Meta.SamePrincipals(certs[:1], keys[:1]) {
				t.Fatalf("after the takeover: %+v", got)
			}
			next := got
			next.State.Last, next.Spent = 3, 3
			if err := s.Advance(ctx, lane(20), 2, 1, next, 0); err != nil {
				t.Fatalf("payment after the takeover: %v", err)
			}
			// The old chain's mark cannot be applied to the new chain, and a
			// gate still holding the old chain (its cache from before the
			// mark) cannot write it back, even at the right position.
			if err := s.MarkRevoked(ctx, lane(20), certs, keys); !errors.Is(err, ErrConflict) {
				t.Fatalf("marking the replaced chain: %v", err)
			}
			stale = paid
			stale.State.Last, stale.Spent, stale.Credit = 4, 4, 1
			if err := s.Advance(ctx, lane(20), 3, 1, stale, 0); !errors.Is(err, ErrConflict) {
				t.Fatalf("a payment under the replaced chain: %v", err)
			}
			if got, _ := s.Get(ctx, lane(20)); got.State.Last != 3 || !got.Meta.SamePrincipals(certs[:1], keys[:1]) {
				t.Fatalf("after the stale write: %+v", got)
			}
		})
	}
}

func TestStoreContract(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Get(ctx, lane(1)); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get before Open: %v", err)
			}
			r, err := s.Open(ctx, lane(1), NewRecord(testMeta(0)))
			if err != nil || r.State.Last != 0 || r.State.LastValue != r.Meta.Anchor {
				t.Fatalf("Open: %v %+v", err, r.State)
			}
			next := r
			next.State.Last, next.Spent = 3, 3
			if err := s.Advance(ctx, lane(1), 0, 0, next, 3); err != nil {
				t.Fatal(err)
			}
			// Opening again does not reset the lane.
			if r2, err := s.Open(ctx, lane(1), NewRecord(testMeta(0))); err != nil || r2.State.Last != 3 {
				t.Fatalf("re-Open reset the lane: %v %d", err, r2.State.Last)
			}
			// A stale compare-and-set fails and changes nothing.
			stale := next
			stale.State.Last = 4
			if err := s.Advance(ctx, lane(1), 0, 0, stale, 1); !errors.Is(err, ErrConflict) {
				t.Fatalf("stale Advance: %v", err)
			}
			if got, _ := s.Get(ctx, lane(1)); got.State.Last != 3 {
				t.Fatalf("state after conflict: %d", got.State.Last)
			}
			// A credit given back (same index, credit 2) is not overwritten
			// by a payment computed from the record before it.
			refunded := next
			refunded.Credit = 2
			if err := s.Advance(ctx, lane(1), 3, 0, refunded, 0); err != nil {
				t.Fatalf("refund: %v", err)
			}
			paid := next
			paid.State.Last, paid.Spent = 4, 4
			if err := s.Advance(ctx, lane(1), 3, 0, paid, 1); !errors.Is(err, ErrConflict) {
				t.Fatalf("payment over a newer credit: %v", err)
			}
			if got, _ := s.Get(ctx, lane(1)); got.Credit != 2 || got.State.Last != 3 {
				t.Fatalf("after the stale payment: %+v", got)
			}
			next = refunded
			if err := s.Advance(ctx, lane(2), 0, 0, next, 1); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Advance of an unknown lane: %v", err)
			}
			// The cap is shared by all lanes of a grant.
			capped := testMeta(5_000_000)
			a, _ := s.Open(ctx, lane(10), NewRecord(capped))
			b, _ := s.Open(ctx, lane(11), NewRecord(capped))
			a.State.Last = 3
			if err := s.Advance(ctx, lane(10), 0, 0, a, 3_000_000); err != nil {
				t.Fatal(err)
			}
			b.State.Last = 3
			if err := s.Advance(ctx, lane(11), 0, 0, b, 3_000_000); !errors.Is(err, coupons.ErrCapExceeded) {
				t.Fatalf("cap across lanes: %v", err)
			}
			if got, _ := s.Get(ctx, lane(11)); got.State.Last != 0 {
				t.Fatal("a refused charge moved the lane")
			}
			b.State.Last = 2
			if err := s.Advance(ctx, lane(11), 0, 0, b, 2_000_000); err != nil {
				t.Fatalf("charge up to the cap: %v", err)
			}
		})
	}
}

// TestStoreRaces: many goroutines race to spend the same coupons of one
// lane; each index is accepted exactly once.
func TestStoreRaces(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Open(ctx, lane(7), NewRecord(testMeta(0))); err != nil {
				t.Fatal(err)
			}
			const workers, target = 8, 200
			var accepted [target + 1]atomic.Int32
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						cur, err := s.Get(ctx, lane(7))
						if err != nil {
							t.Error(err)
							return
						}
						if cur.State.Last >= target {
							return
						}
						next := cur
						next.State.Last++
						switch err := s.Advance(ctx, lane(7), cur.State.Last, 0, next, 0); {
						case err == nil:
							accepted[next.State.Last].Add(1)
						case errors.Is(err, ErrConflict):
						default:
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			for i := 1; i <= target; i++ {
				if n := accepted[i].Load(); n != 1 {
					t.Fatalf("index %d accepted %d times", i, n)
				}
			}
		})
	}
}

func TestBoltSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spent.db")
	s := openBolt(t, path)
	r, _ := s.Open(ctx, lane(1), NewRecord(testMeta(0)))
	r.State.Last = 9
	if err := s.Advance(ctx, lane(1), 0, 0, r, 0); err != nil {
		t.Fatal(err)
	}
	m := testMeta(0)
	m.Certs, m.Keys = testPrincipals(1)
	if _, err := s.Open(ctx, lane(2), NewRecord(m)); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkRevoked(ctx, lane(2), m.Certs, m.Keys); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Get(ctx, lane(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v", err)
	}
	s = openBolt(t, path)
	defer s.Close()
	if got, err := s.Get(ctx, lane(1)); err != nil || got.State.Last != 9 {
		t.Fatalf("after reopen: %v %d", err, got.State.Last)
	}
	if got, err := s.Get(ctx, lane(2)); err != nil || !got.Meta.Revoked || !got.Meta.SamePrincipals(m.Certs, m.Keys) {
		t.Fatalf("the revoked mark after reopen: %v %+v", err, got.Meta)
	}
	stale := NewRecord(m)
	stale.State.Last = 1
	if err := s.Advance(ctx, lane(2), 0, 0, stale, 0); !errors.Is(err, ErrRevoked) {
		t.Fatalf("payment on a marked lane after reopen: %v", err)
	}
}

// TestBoltStats checks the group-commit counters: every successful write
// is counted once, in some group; refused writes are not counted.
func TestBoltStats(t *testing.T) {
	ctx := context.Background()
	s, err := OpenBolt(filepath.Join(t.TempDir(), "spent.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st != (BoltStats{}) {
		t.Fatalf("fresh store: %+v", st)
	}
	const lanes, steps = 8, 20
	var wg sync.WaitGroup
	for l := range uint32(lanes) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.Open(ctx, lane(l), NewRecord(testMeta(0)))
			if err != nil {
				t.Error(err)
				return
			}
			for i := range uint32(steps) {
				r.State.Last = i + 1
				if err := s.Advance(ctx, lane(l), i, 0, r, 0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// A refused write: the lane is at steps, not 0.
	if err := s.Advance(ctx, lane(0), 0, 0, NewRecord(testMeta(0)), 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale advance: %v", err)
	}
	st := s.Stats()
	if want := uint64(lanes * (steps + 1)); st.Writes != want {
		t.Errorf("writes %d, want %d", st.Writes, want)
	}
	if st.Groups == 0 || st.Groups > st.Writes || st.SyncTime <= 0 {
		t.Errorf("groups %d, sync time %v for %d writes", st.Groups, st.SyncTime, st.Writes)
	}
}

// TestBoltCloseRacingWrites: writes racing Close each either succeed, and
// are in the store after it is reopened, or get ErrClosed; none hangs.
func TestBoltCloseRacingWrites(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spent.db")
	s := openBolt(t, path)
	const lanes = 8
	acked := make([]uint32, lanes)
	var wg sync.WaitGroup
	for l := range uint32(lanes) {
		r, err := s.Open(ctx, lane(l), NewRecord(testMeta(0)))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint32(0); ; i++ {
				next := r
				next.State.Last = i + 1
				err := s.Advance(ctx, lane(l), i, 0, next, 0)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				acked[l], r = i+1, next
			}
		}()
	}
	time.Sleep(30 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Concurrent Closes all wait for the first and share its result.
	s = openBolt(t, path)
	closed := make(chan error, 3)
	for range 3 {
		go func() { closed <- s.Close() }()
	}
	for range 3 {
		if err := <-closed; err != nil {
			t.Fatalf("concurrent Close: %v", err)
		}
	}
	s = openBolt(t, path)
	defer s.Close()
	for l := range uint32(lanes) {
		got, err := s.Get(ctx, lane(l))
		if err != nil || got.State.Last != acked[l] {
			t.Errorf("lane %d at %d (%v), acknowledged %d", l, got.State.Last, err, acked[l])
		}
	}
}

// TestBoltKill9 runs a child process that advances a lane as fast as it
// can, printing each index once Advance returned, and kills it with
// SIGKILL. Every index the child reported must be in the reopened store.
func TestBoltKill9(t *testing.T) {
	testKill9(t, "bolt", "spent.db", func(path string) (Store, error) { return OpenBolt(path, BoltOptions{}) })
}

// TestPebbleKill9 is TestBoltKill9 on the pebble store.
func TestPebbleKill9(t *testing.T) {
	testKill9(t, "pebble", "pebble", func(path string) (Store, error) { return OpenPebble(path, PebbleOptions{}) })
}

func testKill9(t *testing.T, name, file string, open func(string) (Store, error)) {
	test := "^Test" + strings.ToUpper(name[:1]) + name[1:] + "Kill9$"
	if os.Getenv("ECOUPONS_KILL9_CHILD") != "" {
		kill9Child(os.Getenv("ECOUPONS_KILL9_CHILD"), open)
		return
	}
	if testing.Short() {
		t.Skip("kill -9 test skipped in -short mode")
	}
	path := filepath.Join(t.TempDir(), file)
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run", test)
		cmd.Env = append(os.Environ(), "ECOUPONS_KILL9_CHILD="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var acked uint64
		for sc.Scan() && acked < uint64(50*(round+1)) {
			if n, err := strconv.ParseUint(sc.Text(), 10, 32); err == nil {
				acked = n
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
		s, err := open(path)
		if err != nil {
			t.Fatalf("round %d: reopening: %v", round, err)
		}
		got, err := s.Get(context.Background(), lane(1))
		s.Close()
		if err != nil || uint64(got.State.Last) < acked {
			t.Fatalf("round %d: acknowledged %d, store holds %d (%v)", round, acked, got.State.Last, err)
		}
	}
}

func kill9Child(path string, open func(string) (Store, error)) {
	ctx := context.Background()
	s, err := open(path)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	r, err := s.Open(ctx, lane(1), NewRecord(testMeta(0)))
	if err != nil {
		os.Exit(1)
	}
	for {
		next := r
		next.State.Last++
		if err := s.Advance(ctx, lane(1), r.State.Last, 0, next, 0); err != nil {
			os.Exit(1)
		}
		r = next
		fmt.Println(r.State.Last)
	}
}

var (
	_ Store = (*Memory)(nil)
	_ Store = (*Bolt)(nil)
	_ Store = (*Pebble)(nil)
	_ Store = (*Redis)(nil)
)

// TestOutbox: advanced lanes are pending until the broker has paid their
// last coupon, with the proof needed for a first redemption.
func TestOutbox(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			if p, err := s.Pending(ctx, time.Now(), 10); err != nil || len(p) != 0 {
				t.Fatalf("pending on an empty store: %v %v", p, err)
			}
			r, _ := s.Open(ctx, lane(1), NewRecord(testMeta(0)))
			proof := [][32]byte{{1}, {2}}
			if err := s.SetProof(ctx, lane(1), proof); err != nil {
				t.Fatal(err)
			}
			if p, _ := s.Pending(ctx, time.Now(), 10); len(p) != 0 {
				t.Fatal("an opened lane without coupons is pending")
			}
			next := r
			next.State.Last, next.State.LastValue = 5, [32]byte{5}
			if err := s.Advance(ctx, lane(1), 0, 0, next, 0); err != nil {
				t.Fatal(err)
			}
			p, err := s.Pending(ctx, time.Now(), 10)
			if err != nil || len(p) != 1 {
				t.Fatalf("pending: %v %v", p, err)
			}
			if p[0].ID != lane(1) || p[0].Index != 5 || p[0].Value != next.State.LastValue || p[0].Redeemed != 0 ||
				p[0].Anchor != r.Meta.Anchor || len(p[0].Proof) != 2 || p[0].Proof[1] != proof[1] {
				t.Fatalf("pending item %+v", p[0])
			}
			if err := s.Redeemed(ctx, lane(1), 3); err != nil {
				t.Fatal(err)
			}
			if p, _ := s.Pending(ctx, time.Now(), 10); len(p) != 1 || p[0].Redeemed != 3 {
				t.Fatalf("after a partial redemption: %+v", p)
			}
			s.Redeemed(ctx, lane(1), 5)
			s.Redeemed(ctx, lane(1), 2) // a stale acknowledgement lowers nothing
			if p, _ := s.Pending(ctx, time.Now(), 10); len(p) != 0 {
				t.Fatalf("after full redemption: %+v", p)
			}
			prev := next
			next.State.Last = 7
			if err := s.Advance(ctx, lane(1), prev.State.Last, 0, next, 0); err != nil {
				t.Fatal(err)
			}
			if p, _ := s.Pending(ctx, time.Now(), 10); len(p) != 1 || p[0].Index != 7 || p[0].Redeemed != 5 {
				t.Fatalf("after more coupons: %+v", p)
			}
		})
	}
}

// TestStoreID: a store's identity is kept with its state: the same after
// reopening a bolt file, shared by every client of one Redis prefix,
// different between stores.
func TestStoreID(t *testing.T) {
	ctx := context.Background()
	seen := map[string]string{}
	for name, s := range stores(t) {
		id, err := s.ID(ctx)
		if err != nil || len(id) != 32 {
			t.Fatalf("%s: ID %q %v", name, id, err)
		}
		if other, dup := seen[id]; dup {
			t.Fatalf("%s and %s share the ID %s", name, other, id)
		}
		seen[id] = name
	}
	path := filepath.Join(t.TempDir(), "spent.db")
	b, _ := OpenBolt(path, BoltOptions{})
	first, _ := b.ID(ctx)
	b.Close()
	b, _ = OpenBolt(path, BoltOptions{})
	again, _ := b.ID(ctx)
	b.Close()
	if first != again {
		t.Errorf("bolt ID changed on reopen: %s, then %s", first, again)
	}
	url := testredis.Start(t)
	r1, err := NewRedis(ctx, url, "fleet:")
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, _ := NewRedis(ctx, url, "fleet:")
	defer r2.Close()
	r3, _ := NewRedis(ctx, url, "other:")
	defer r3.Close()
	id1, _ := r1.ID(ctx)
	id2, _ := r2.ID(ctx)
	id3, _ := r3.ID(ctx)
	if id1 != id2 || id1 == id3 || id1 == "" {
		t.Errorf("redis IDs: %q %q (same prefix), %q (another)", id1, id2, id3)
	}
	if m1, m2 := NewMemory(), NewMemory(); m1.id == m2.id {
		t.Error("two memory stores share an ID")
	}
}

// TestOpenAtPosition: a lane opened with a first record already at a
// position (where a broker's redemptions left it) is there at once, in
// the one durable write, and owes no redemption.
func TestOpenAtPosition(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		first := NewRecord(testMeta(0))
		first.State.Last, first.Spent = 5, 5
		first.State.LastValue[0] = 9
		r, err := s.Open(ctx, lane(40), first)
		if err != nil || r.State.Last != 5 || r.State.LastValue != first.State.LastValue {
			t.Fatalf("%s: open at 5: %+v %v", name, r.State, err)
		}
		if got, err := s.Get(ctx, lane(40)); err != nil || got.State.Last != 5 {
			t.Fatalf("%s: stored at %d: %v", name, got.State.Last, err)
		}
		if p, _ := s.Pending(ctx, time.Now(), 100); len(p) != 0 {
			t.Fatalf("%s: a lane opened at the broker's position is pending: %+v", name, p)
		}
	}
}

// TestRecordLayoutOffsets: every offset constant of the record layout
// (which the bolt compare-and-set and the Redis scripts read in place)
// points at its field in an encoded record whose fields all differ.
func TestRecordLayoutOffsets(t *testing.T) {
	m := testMeta(0x0102030405060708)
	for i := range m.Tag {
		m.Tag[i] = 0x10 + byte(i)
	}
	m.Anchor[0], m.Spender[0], m.Owner[0], m.Grant[0], m.Vendor[0] = 0x21, 0x22, 0x23, 0x24, 0x25
	m.Length, m.Unit, m.End = 0x00300000, 0x0a0b0c0d0e0f, 0x00200001
	m.NotAfter = time.Unix(0x61626364, 0).UTC()
	m.Currency, m.Nonce = "XYZ", "nonce-1"
	m.Revoked = true
	m.Certs, m.Keys = testPrincipals(1)
	r := Record{Meta: m, Credit: 0x31323334, Spent: 0x41424344, Lease: 0x51525354}
	r.State = coupons.LaneState{Last: 0x00100203, HasPrev: true}
	r.State.LastValue[0], r.State.PrevDigest[0], r.State.PrevMAC[0] = 0x26, 0x27, 0x28
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	be32 := func(at int) uint32 { return binary.BigEndian.Uint32(b[at:]) }
	be64 := func(at int) uint64 { return binary.BigEndian.Uint64(b[at:]) }
	checks := []struct {
		name      string
		got, want any
	}{
		{"version", b[recordVersionAt], byte(recordVersion)},
		{"tag", string(b[recordTagAt : recordTagAt+16]), string(m.Tag[:])},
		{"anchor", b[recordAnchorAt], m.Anchor[0]},
		{"length", be32(recordLengthAt), m.Length},
		{"unit", be64(recordUnitAt), uint64(m.Unit)},
		{"currency", string(b[recordCurrencyAt : recordCurrencyAt+3]), m.Currency},
		{"not after", be64(recordNotAfterAt), uint64(m.NotAfter.Unix())},
		{"spender", b[recordSpenderAt], m.Spender[0]},
		{"owner", b[recordOwnerAt], m.Owner[0]},
		{"grant", b[recordGrantAt], m.Grant[0]},
		{"cap", be64(recordCapAt), uint64(m.Cap)},
		{"nonce", string(b[recordNonceAt+1 : recordNonceAt+1+int(b[recordNonceAt])]), m.Nonce},
		{"last", be32(recordLastAt), r.State.Last},
		{"last value", b[recordLastValueAt], r.State.LastValue[0]},
		{"prev digest", b[recordPrevDigestAt], r.State.PrevDigest[0]},
		{"prev mac", b[recordPrevMACAt], r.State.PrevMAC[0]},
		{"has prev", b[recordHasPrevAt], byte(1)},
		{"credit", be32(recordCreditAt), r.Credit},
		{"spent", be32(recordSpentAt), r.Spent},
		{"vendor", b[recordVendorAt], m.Vendor[0]},
		{"flags", b[recordFlagsAt], flagRevoked},
		{"end", be32(recordEndAt), m.End},
		{"lease", be32(recordLeaseAt), r.Lease},
		{"counts", [2]byte{b[recordTailAt], b[recordTailAt+1]}, [2]byte{byte(len(m.Certs)), byte(len(m.Keys))}},
		{"first cert", string(b[recordTailAt+2 : recordTailAt+34]), string(m.Certs[0][:])},
		{"length", len(b), recordFixedLen + 32*(len(m.Certs)+len(m.Keys))},
		{"v1 length", recordLenV1, recordVendorAt},
		{"v3 tail", recordTailAtV3, recordLeaseAt},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v at its offset, want %v", c.name, c.got, c.want)
		}
	}
	if last, credit, err := recordPosition(b); err != nil || last != r.State.Last || credit != r.Credit {
		t.Errorf("recordPosition: %d %d %v", last, credit, err)
	}
}

// TestVersion3RecordsStillWritable: a lane whose stored record is of
// version 3 (principals at the older offset, no lease) keeps being
// checked right by the in-place compare-and-set of bolt and the Redis
// scripts: a write keeping its principals passes, one with others
// conflicts, and marking it revoked works.
func TestVersion3RecordsStillWritable(t *testing.T) {
	ctx := context.Background()
	m := testMeta(0)
	m.Certs, m.Keys = testPrincipals(1)
	r := NewRecord(m)
	r.State.Last = 5
	enc, _ := r.MarshalBinary()
	v3 := append(append([]byte{3}, enc[1:recordLeaseAt]...), enc[recordTailAt:]...)
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			k := Key(lane(30))
			switch s := s.(type) {
			case *Bolt:
				if err := s.write(func(t *kvTx) error { t.put(bLanes, k[:], v3); return nil }); err != nil {
					t.Fatal(err)
				}
			case *Pebble:
				if err := s.write(func(t *kvTx) error { t.put(bLanes, k[:], v3); return nil }); err != nil {
					t.Fatal(err)
				}
			case *Redis:
				if err := s.c.Set(ctx, s.laneKey(lane(30)), v3, 0).Err(); err != nil {
					t.Fatal(err)
				}
			default:
				t.Skip("stores decoded records")
			}
			if got, err := s.Get(ctx, lane(30)); err != nil || !got.Equal(&r) {
				t.Fatalf("Get of a version 3 record: %v %+v", err, got)
			}
			other := r
			other.Meta.Certs, other.Meta.Keys = testPrincipals(2)
			other.State.Last = 6
			if err := s.Advance(ctx, lane(30), 5, 0, other, 0); !errors.Is(err, ErrConflict) {
				t.Fatalf("other principals over a version 3 record: %v", err)
			}
			next := r
			next.State.Last, next.Lease = 6, 9
			if err := s.Advance(ctx, lane(30), 5, 0, next, 0); err != nil {
				t.Fatalf("same principals over a version 3 record: %v", err)
			}
			if err := s.MarkRevoked(ctx, lane(30), m.Certs, m.Keys); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, lane(30))
			if err != nil || !got.Meta.Revoked || got.Lease != 9 || got.State.Last != 6 {
				t.Fatalf("after the mark: %v %+v", err, got)
			}
			k3 := Key(lane(31))
			switch s := s.(type) {
			case *Bolt:
				s.write(func(t *kvTx) error { t.put(bLanes, k3[:], v3); return nil })
			case *Pebble:
				s.write(func(t *kvTx) error { t.put(bLanes, k3[:], v3); return nil })
			case *Redis:
				s.c.Set(ctx, s.laneKey(lane(31)), v3, 0)
			}
			if err := s.MarkRevoked(ctx, lane(31), m.Certs, m.Keys); err != nil {
				t.Fatalf("marking a version 3 record: %v", err)
			}
			if got, err := s.Get(ctx, lane(31)); err != nil || !got.Meta.Revoked || got.State.Last != 5 {
				t.Fatalf("the marked version 3 record: %v %+v", err, got)
			}
		})
	}
}
