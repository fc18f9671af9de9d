package coupons

import (
	"crypto/rand"
	"slices"
	"testing"
)

// TestMerkleProofsAreEachLanesProof: the proofs built in one pass are the
// ones MerkleProof gives lane by lane, and verify, for books of 1 to 70
// lanes (balanced and not).
func TestMerkleProofsAreEachLanesProof(t *testing.T) {
	for n := 1; n <= 70; n++ {
		anchors := make([]Value, n)
		for i := range anchors {
			rand.Read(anchors[i][:])
		}
		root := MerkleRoot(anchors)
		all := MerkleProofs(anchors)
		for s := range anchors {
			one, err := MerkleProof(anchors, uint32(s))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(all[s], one) {
				t.Fatalf("n=%d lane %d: %d hashes, MerkleProof %d", n, s, len(all[s]), len(one))
			}
			if err := VerifyMerkleProof(root, uint32(n), uint32(s), &anchors[s], all[s]); err != nil {
				t.Fatalf("n=%d lane %d: %v", n, s, err)
			}
		}
	}
}

// BenchmarkMerkleProofs65536 is the proofs of a 65,536-lane book (what
// delegation.NewOwner builds once).
func BenchmarkMerkleProofs65536(b *testing.B) {
	anchors := make([]Value, 1<<16)
	for i := range anchors {
		rand.Read(anchors[i][:])
	}
	b.ReportAllocs()
	for b.Loop() {
		MerkleProofs(anchors)
	}
}
