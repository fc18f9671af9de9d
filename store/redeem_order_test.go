package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testredis"
	bolt "go.etcd.io/bbolt"
)

// pendTo opens lane id on s if needed and advances it to last.
func pendTo(t *testing.T, s Store, id coupons.LaneID, last uint32) {
	t.Helper()
	ctx := context.Background()
	r, err := s.Open(ctx, id, NewRecord(testMeta(0)))
	if err != nil {
		t.Fatal(err)
	}
	next := r
	next.State.Last, next.State.LastValue = last, [32]byte{byte(last)}
	if err := s.Advance(ctx, id, r.State.Last, r.Credit, next, 0); err != nil {
		t.Fatal(err)
	}
}

// pendingIDs lists the lanes Pending returns at now, in its order.
func pendingIDs(t *testing.T, s Store, now time.Time) []coupons.LaneID {
	t.Helper()
	p, err := s.Pending(context.Background(), now, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []coupons.LaneID
	for _, x := range p {
		out = append(out, x.ID)
	}
	return out
}

func sameIDs(a, b []coupons.LaneID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// junkLane is a lane of a book whose ID sorts before every other.
func junkLane(n uint32) coupons.LaneID { return coupons.LaneID{Lane: n} }

// TestRedemptionOrderIgnoresLaneIDs: Pending takes the lanes that have
// waited longest first, whatever their IDs; a lane refused for good leaves
// the pending set with its reason (listed by Refusals); a lane refused for
// now is skipped until its postponement ends and counts its tries; a lane
// paid with newer coupons goes to the back. On every store.
func TestRedemptionOrderIgnoresLaneIDs(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			honest := lane(7)
			pendTo(t, s, honest, 3) // waits first …
			time.Sleep(2 * time.Millisecond)
			for n := uint32(0); n < 3; n++ {
				pendTo(t, s, junkLane(n), 1) // … before lanes whose IDs sort before it
				time.Sleep(2 * time.Millisecond)
			}
			now := time.Now()
			want := []coupons.LaneID{honest, junkLane(0), junkLane(1), junkLane(2)}
			if got := pendingIDs(t, s, now); !sameIDs(got, want) {
				t.Fatalf("order %v, want %v", got, want)
			}
			if p, _ := s.Pending(ctx, now, 2); len(p) != 2 || p[0].ID != honest || p[1].ID != junkLane(0) {
				t.Fatalf("limited: %+v", p)
			}
			// Refused for good: out of the pending set, kept with its reason.
			ref := Refusal{ID: junkLane(0), Index: 1, Code: "unknown_book", Message: "broker: unknown book: 000000…", At: now.Truncate(time.Second)}
			if err := s.Refuse(ctx, ref); err != nil {
				t.Fatal(err)
			}
			if got := pendingIDs(t, s, now); !sameIDs(got, []coupons.LaneID{honest, junkLane(1), junkLane(2)}) {
				t.Fatalf("after a refusal: %v", got)
			}
			refs, err := s.Refusals(ctx, 10)
			if err != nil || len(refs) != 1 || refs[0].ID != ref.ID || refs[0].Index != 1 || refs[0].Code != ref.Code ||
				refs[0].Message != ref.Message || !refs[0].At.Equal(ref.At) {
				t.Fatalf("refusals: %+v %v", refs, err)
			}
			// Refused for now: skipped until then, its tries counted.
			later := now.Add(time.Minute)
			if err := s.Postpone(ctx, junkLane(1), later); err != nil {
				t.Fatal(err)
			}
			if got := pendingIDs(t, s, now); !sameIDs(got, []coupons.LaneID{honest, junkLane(2)}) {
				t.Fatalf("postponed lane not skipped: %v", got)
			}
			s.Postpone(ctx, junkLane(1), later)
			p, _ := s.Pending(ctx, later, 10)
			if len(p) != 3 || p[2].ID != junkLane(1) || p[2].Tries != 2 || p[0].Tries != 0 {
				t.Fatalf("at the end of the postponement: %+v", p)
			}
			// Paid in part (newer coupons): to the back, tries reset.
			time.Sleep(2 * time.Millisecond)
			if err := s.Redeemed(ctx, honest, 2); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond)
			if err := s.Redeemed(ctx, junkLane(1), 0); err != nil {
				t.Fatal(err)
			}
			p, _ = s.Pending(ctx, time.Now().Add(time.Hour), 10)
			if len(p) != 3 || p[0].ID != junkLane(2) || p[2].ID != junkLane(1) || p[2].Tries != 0 || p[1].ID != honest || p[1].Redeemed != 2 {
				t.Fatalf("after a partial payment: %+v", p)
			}
			// New coupons on a refused lane are a new claim; its payment
			// forgets the refusal.
			time.Sleep(2 * time.Millisecond)
			pendTo(t, s, junkLane(0), 2)
			if got := pendingIDs(t, s, time.Now().Add(time.Hour)); len(got) != 4 || got[3] != junkLane(0) {
				t.Fatalf("a refused lane with new coupons: %v", got)
			}
			if err := s.Redeemed(ctx, junkLane(0), 2); err != nil {
				t.Fatal(err)
			}
			if refs, _ := s.Refusals(ctx, 10); len(refs) != 0 {
				t.Fatalf("a paid lane is still listed as refused: %+v", refs)
			}
		})
	}
}

// TestBoltRedemptionStateSurvivesRestart: refusals, postponements and the
// order of the pending lanes are kept across a crash (replayed from the
// log) and a clean close (in the bbolt file).
func TestBoltRedemptionStateSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spent.db")
	s := openBolt(t, path)
	honest := lane(7)
	pendTo(t, s, honest, 3)
	time.Sleep(2 * time.Millisecond)
	for n := uint32(0); n < 4; n++ {
		pendTo(t, s, junkLane(n), 1)
		time.Sleep(2 * time.Millisecond)
	}
	now := time.Now()
	s.Refuse(ctx, Refusal{ID: junkLane(0), Index: 1, Code: "unknown_book", Message: "m", At: now})
	s.Refuse(ctx, Refusal{ID: junkLane(1), Index: 1, Code: "book_closed", Message: "m", At: now})
	s.Postpone(ctx, junkLane(2), now.Add(time.Hour))
	check := func(when string) {
		t.Helper()
		if got := pendingIDs(t, s, now); !sameIDs(got, []coupons.LaneID{honest, junkLane(3)}) {
			t.Fatalf("%s: pending %v", when, got)
		}
		p, _ := s.Pending(ctx, now.Add(time.Hour), 10)
		if len(p) != 3 || p[2].ID != junkLane(2) || p[2].Tries != 1 {
			t.Fatalf("%s: postponed lane %+v", when, p)
		}
		refs, err := s.Refusals(ctx, 10)
		if err != nil || len(refs) != 2 || refs[0].ID != junkLane(0) || refs[1].Code != "book_closed" {
			t.Fatalf("%s: refusals %+v %v", when, refs, err)
		}
	}
	check("before")
	crash(s)
	s = openBolt(t, path)
	check("after a crash")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openBolt(t, path)
	defer s.Close()
	check("after a clean close")
}

// TestRefusalMessagesAreBounded: a broker's long refusal message is cut,
// alike on every store.
func TestRefusalMessagesAreBounded(t *testing.T) {
	ctx := context.Background()
	long := make([]byte, 4*MaxRefusalMessage)
	for i := range long {
		long[i] = 'x'
	}
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			pendTo(t, s, lane(1), 1)
			if err := s.Refuse(ctx, Refusal{ID: lane(1), Index: 1, Code: "bad_coupon", Message: string(long), At: time.Now()}); err != nil {
				t.Fatal(err)
			}
			refs, err := s.Refusals(ctx, 10)
			if err != nil || len(refs) != 1 || len(refs[0].Message) != MaxRefusalMessage {
				t.Fatalf("%+v %v", refs, err)
			}
		})
	}
}

// TestOutboxFromBeforeTheOrder: pending marks written before the order
// was kept (an empty bolt value, the Redis set <prefix>dirty) are still
// pending, first in the order, and can be postponed and paid.
func TestOutboxFromBeforeTheOrder(t *testing.T) {
	ctx := context.Background()
	t.Run("bolt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "spent.db")
		s := openBolt(t, path)
		pendTo(t, s, lane(1), 2)
		time.Sleep(2 * time.Millisecond)
		pendTo(t, s, lane(2), 2)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		k := Key(lane(2))
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("dirty")).Put(k[:], nil) }); err != nil {
			t.Fatal(err)
		}
		db.Close()
		s = openBolt(t, path)
		defer s.Close()
		if got := pendingIDs(t, s, time.Now()); !sameIDs(got, []coupons.LaneID{lane(2), lane(1)}) {
			t.Fatalf("order %v, want the old mark first", got)
		}
		later := time.Now().Add(time.Hour)
		if err := s.Postpone(ctx, lane(2), later); err != nil {
			t.Fatal(err)
		}
		if got := pendingIDs(t, s, time.Now()); !sameIDs(got, []coupons.LaneID{lane(1)}) {
			t.Fatalf("an old mark was not postponed: %v", got)
		}
		s.Redeemed(ctx, lane(2), 2)
		if got := pendingIDs(t, s, later); !sameIDs(got, []coupons.LaneID{lane(1)}) {
			t.Fatalf("after payment: %v", got)
		}
	})
	t.Run("redis", func(t *testing.T) {
		url := testredis.Start(t)
		s, err := NewRedis(ctx, url, "old:")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		pendTo(t, s, lane(1), 2)
		pendTo(t, s, lane(2), 2)
		k := Key(lane(2))
		// As a gate from before wrote it: in the set, not the sorted set.
		s.c.ZRem(ctx, s.queueKey(0), string(k[:]))
		s.c.SAdd(ctx, s.dirtyKey(), string(k[:]))
		if got := pendingIDs(t, s, time.Now()); !sameIDs(got, []coupons.LaneID{lane(2), lane(1)}) {
			t.Fatalf("order %v, want the old mark first", got)
		}
		if n, _ := s.c.Exists(ctx, s.dirtyKey()).Result(); n != 0 {
			t.Fatal("the old set was not moved")
		}
		s.Redeemed(ctx, lane(2), 2)
		if got := pendingIDs(t, s, time.Now()); !sameIDs(got, []coupons.LaneID{lane(1)}) {
			t.Fatalf("after payment: %v", got)
		}
	})
}
