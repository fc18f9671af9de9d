package broker

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testutil"
)

// Redemption at scale (issue 21): lanes spread over many books, each
// batch of 1000 lanes drawn uniformly from all of them, so that a batch
// touches up to 1000 books. Books hold 1024 lanes (10k lanes: 10 books,
// 100k: 98, 1M: 977). Every lane is redeemed once (coupon 1, with its
// anchor and proof) before the timer starts; each timed batch moves its
// lanes forward by one coupon (one chain step each), with a 1% fee, so
// each lane is one lane row update and a share of the batch's ledger
// transfer. lanes/s is lanes redeemed per second of the timed batches;
// cpu-ns/op is a batch's CPU time on the benchmark's thread, where the
// driver runs SQLite (testutil.CPUClock: it leaves out the waits for a
// core of a loaded machine, and the garbage collector's background work);
// written-B/lane is what the process wrote per lane (Linux only).
//
// Environment knobs (SQLite): BROKER_SCALE_FIRST=2 redeems coupon 2
// before the timer instead of coupon 1. SQLite stores the integer 1 in no
// bytes and 2 in one, so with coupon 1 a lane's first timed update grows
// its row by a byte in a page that the setup's inserts packed full: a
// page split. At 1M lanes nearly every timed update is such a first one
// (measured: 3,400 pages written per batch, against 1,120 once rows
// have their size), which a lane pays once in its life. BROKER_SCALE_PROFILE
// logs the PRAGMAs in effect, the pages of each table and index, the query
// plans, and the pages three batches write to the WAL; BROKER_SCALE_PRAGMA
// ("cache_size=-65536 wal_autocheckpoint=8192") sets PRAGMAs first.
const (
	scaleBookLanes = 1024
	scaleLength    = 64
	scaleBatch     = 1000
)

var scaleFirst = uint32(envInt("BROKER_SCALE_FIRST", 1))

type scaleLane struct {
	book int32
	next uint8 // the next coupon to redeem
}

func benchRedeemAtScale(b *testing.B, lanes int) {
	f := newFixture(b)
	f.b.FeeBasisPoints = 100
	nBooks := (lanes + scaleBookLanes - 1) / scaleBookLanes
	const unit = 1000 // nanos per coupon
	if err := f.b.TopUp(ctx, f.acct, int64(nBooks)*scaleBookLanes*scaleLength*unit, "scale"); err != nil {
		b.Fatal(err)
	}
	vk := pub(b, f.vendor).Hash()
	books := make([]*book, nBooks)
	// Register the books and redeem every lane's first coupon, a few
	// books per batch (untimed).
	const perSetup = 8
	for first := 0; first < nBooks; first += perSetup {
		var batch []Redemption
		for i := first; i < min(first+perSetup, nBooks); i++ {
			bk := f.newBook(b, scaleBookLanes, scaleLength, unit)
			if _, err := f.b.RegisterBook(ctx, pub(b, f.alice).Hash(), bk.sb); err != nil {
				b.Fatal(err)
			}
			proofs := coupons.MerkleProofs(bk.anchors)
			for s := uint32(0); s < scaleBookLanes; s++ {
				tag := bk.sb.Book.LaneTag(s)
				a := bk.anchors[s]
				batch = append(batch, Redemption{Lane: coupons.LaneID{Book: bk.sb.Book.ID(), Lane: s}, Index: scaleFirst,
					Value: coupons.Walk(&tag, scaleLength, bk.sec.Seed(s), scaleFirst), Anchor: &a, Proof: proofs[s]})
			}
			bk.anchors = nil
			books[i] = bk
		}
		res, err := f.b.Redeem(ctx, vk, batch)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil || r.Coupons != scaleFirst {
				b.Fatal(r.Err, r.Coupons)
			}
		}
	}
	total := nBooks * scaleBookLanes
	next := make([]uint8, total)
	for i := range next {
		next[i] = uint8(scaleFirst + 1)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	batch := make([]Redemption, scaleBatch)
	// makeBatch draws distinct lanes, uniformly over all books, each
	// redeemed one coupon further.
	makeBatch := func() {
		seen := make(map[int]bool, scaleBatch)
		for j := range batch {
			g := rng.IntN(total)
			for seen[g] {
				g = rng.IntN(total)
			}
			seen[g] = true
			bk, s := books[g/scaleBookLanes], uint32(g%scaleBookLanes)
			idx := uint32(next[g])
			if idx > scaleLength {
				b.Fatalf("lane %d redeemed to the end of its chain: use a smaller -benchtime", g)
			}
			next[g]++
			tag := bk.sb.Book.LaneTag(s)
			batch[j] = Redemption{Lane: coupons.LaneID{Book: bk.sb.Book.ID(), Lane: s}, Index: idx,
				Value: coupons.Walk(&tag, scaleLength, bk.sec.Seed(s), idx)}
		}
	}
	redeem := func() {
		res, err := f.b.Redeem(ctx, vk, batch)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil || r.Coupons != 1 {
				b.Fatal(r.Err, r.Coupons)
			}
		}
	}
	if f.b.DB.dialect == "sqlite" {
		for _, p := range strings.Fields(os.Getenv("BROKER_SCALE_PRAGMA")) {
			if _, err := f.b.DB.db.ExecContext(ctx, "PRAGMA "+p); err != nil {
				b.Fatal(err)
			}
		}
	}
	if f.b.DB.dialect == "sqlite" && profileScale() {
		profileSQLite(b, f.b.DB)
		for range 3 {
			makeBatch()
			frames := walFrames(b, f.b.DB)
			start := time.Now()
			redeem()
			b.Logf("one batch: %v, %d pages written to the WAL", time.Since(start), frames())
		}
	}
	redeemed := 0
	written := writtenBytes()
	cpu := testutil.NewCPUClock(b)
	b.ReportAllocs()
	b.ResetTimer()
	cpu.Reset()
	for b.Loop() {
		b.StopTimer()
		cpu.Stop()
		makeBatch()
		cpu.Start()
		b.StartTimer()
		redeem()
		redeemed += scaleBatch
	}
	cpu.Report(b)
	b.ReportMetric(float64(redeemed)/b.Elapsed().Seconds(), "lanes/s")
	if w := writtenBytes(); w >= 0 && written >= 0 && redeemed > 0 {
		// What the process wrote (WAL frames, checkpoints) per lane:
		// SQLite's pages written, 4 KiB each.
		b.ReportMetric(float64(w-written)/float64(redeemed), "written-B/lane")
	}
}

func BenchmarkRedeemAtScale(b *testing.B) {
	sizes := []struct {
		name  string
		lanes int
	}{{"10k", 10_000}, {"100k", 100_000}, {"1M", 1_000_000}}
	for _, db := range []string{"sqlite", "postgres"} {
		for _, sz := range sizes {
			b.Run(fmt.Sprintf("%s/lanes=%s", db, sz.name), func(b *testing.B) {
				if db == "postgres" {
					if pgErr != nil {
						b.Skip(pgErr)
					}
					usePG = true
					defer func() { usePG = false }()
				}
				benchRedeemAtScale(b, sz.lanes)
			})
		}
	}
}
