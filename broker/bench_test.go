package broker

import (
	"testing"

	"github.com/ecoupons/ecoupons/internal/testutil"

	"github.com/ecoupons/ecoupons/coupons"
)

func BenchmarkBaselineSHA256_32(b *testing.B) { testutil.BenchSHA256_32(b) }

func BenchmarkBaselineEd25519Verify(b *testing.B) { testutil.BenchEd25519Verify(b) }

// benchRedeem measures batched redemptions: each op is one batch of 1000
// lanes, each lane moved forward by one coupon, verified and paid in one
// database transaction. It reports redemptions per second.
func benchRedeem(b *testing.B) {
	f := newFixture(b)
	const lanes = 1000
	bk := f.newBook(b, lanes, 1<<12, 1)
	if _, err := f.b.RegisterBook(ctx, pub(b, f.alice).Hash(), bk.sb); err != nil {
		b.Fatal(err)
	}
	vk := pub(b, f.vendor).Hash()
	// Chains, computed before the timer: lane s, every index.
	bookTag := func(s uint32) coupons.LaneTag { return bk.sb.Book.LaneTag(s) }
	values := make([][]coupons.Value, lanes)
	for s := range values {
		tag := bookTag(uint32(s))
		c := make([]coupons.Value, 1<<12+1)
		c[1<<12] = bk.sec.Seed(uint32(s))
		for i := 1 << 12; i > 0; i-- {
			c[i-1] = coupons.Step(&tag, uint32(i-1), &c[i])
		}
		values[s] = c
	}
	proofs := make([][][32]byte, lanes)
	for s := range proofs {
		proofs[s], _ = coupons.MerkleProof(bk.anchors, uint32(s))
	}
	batch := make([]Redemption, lanes)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idx := uint32(i%(1<<12-1)) + 1
		for s := range batch {
			batch[s] = Redemption{Lane: coupons.LaneID{Book: bk.sb.Book.ID(), Lane: uint32(s)}, Index: idx, Value: values[s][idx]}
			if idx == 1 {
				a := bk.anchors[s]
				batch[s].Anchor = &a
				batch[s].Proof = proofs[s]
			}
		}
		res, err := f.b.Redeem(ctx, vk, batch)
		if err != nil || res[0].Err != nil {
			b.Fatal(err, res[0].Err)
		}
	}
	b.ReportMetric(float64(b.N*lanes)/b.Elapsed().Seconds(), "redemptions/s")
}

func BenchmarkRedeemBatchSQLite(b *testing.B) { usePG = false; benchRedeem(b) }

func BenchmarkRedeemBatchPostgres(b *testing.B) {
	if pgErr != nil {
		b.Skip(pgErr)
	}
	usePG = true
	defer func() { usePG = false }()
	benchRedeem(b)
}
