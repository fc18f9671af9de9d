package broker

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
)

// Redemption at scale (issue 21): lanes spread over many books, each
// batch of 1000 lanes drawn uniformly from all of them, so that a batch
// touches up to 1000 books. Books hold 1024 lanes (10k lanes: 10 books,
// 100k: 98, 1M: 977). Every lane is redeemed once (coupon 1, with its
// anchor and proof) before the timer starts; each timed batch moves its
// lanes forward by one coupon (one chain step each), with a 1% fee, so
// each lane is one lane row update and a share of the batch's ledger
// transfer. lanes/s is lanes redeemed per second of the timed batches.
const (
	scaleBookLanes = 1024
	scaleLength    = 64
	scaleBatch     = 1000
)

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
				batch = append(batch, Redemption{Lane: coupons.LaneID{Book: bk.sb.Book.ID(), Lane: s}, Index: 1,
					Value: coupons.Walk(&tag, scaleLength, bk.sec.Seed(s), 1), Anchor: &a, Proof: proofs[s]})
			}
			bk.anchors = nil
			books[i] = bk
		}
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
	total := nBooks * scaleBookLanes
	next := make([]uint8, total)
	for i := range next {
		next[i] = 2
	}
	rng := rand.New(rand.NewPCG(1, 2))
	batch := make([]Redemption, scaleBatch)
	redeemed := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		// Distinct lanes, uniformly over all books.
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
		b.StartTimer()
		res, err := f.b.Redeem(ctx, vk, batch)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil || r.Coupons != 1 {
				b.Fatal(r.Err, r.Coupons)
			}
		}
		redeemed += scaleBatch
	}
	b.ReportMetric(float64(redeemed)/b.Elapsed().Seconds(), "lanes/s")
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
