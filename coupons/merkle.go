package coupons

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Merkle tree over the lane anchors, with the tree shape of RFC 9162
// §2.1.1 (split at the largest power of two below n) and these hashes:
//
//	leaf(s) = SHA-256(0x00 || be32(s) || anchor_s)
//	node    = SHA-256(0x01 || left || right)
//
// The lane index inside the leaf ties each anchor to its position, so a
// proof for one lane can never be replayed for another.

// ErrBadProof is an inclusion proof that does not lead to the book's root.
var ErrBadProof = errors.New("coupons: Merkle inclusion proof does not match the root")

// maxProofLen bounds proofs: a book has at most 2^24 lanes.
const maxProofLen = 24

// MaxLanes is the largest number of lanes in a book.
const MaxLanes = 1 << 24

func leafHash(s uint32, anchor *Value) [32]byte {
	var in [1 + 4 + 32]byte
	binary.BigEndian.PutUint32(in[1:5], s)
	copy(in[5:], anchor[:])
	return sha256.Sum256(in[:])
}

func nodeHash(l, r *[32]byte) [32]byte {
	var in [1 + 64]byte
	in[0] = 1
	copy(in[1:33], l[:])
	copy(in[33:], r[:])
	return sha256.Sum256(in[:])
}

// MerkleRoot returns the root over the anchors (lane s is anchors[s]).
func MerkleRoot(anchors []Value) [32]byte {
	leaves := make([][32]byte, len(anchors))
	for s := range anchors {
		leaves[s] = leafHash(uint32(s), &anchors[s])
	}
	return subtreeRoot(leaves)
}

func subtreeRoot(leaves [][32]byte) [32]byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := splitPoint(len(leaves))
	l, r := subtreeRoot(leaves[:k]), subtreeRoot(leaves[k:])
	return nodeHash(&l, &r)
}

// splitPoint is the largest power of two smaller than n (n ≥ 2).
func splitPoint(n int) int { return 1 << (bits.Len(uint(n-1)) - 1) }

// MerkleProof returns the audit path for lane s (RFC 9162 §2.1.3.1),
// siblings from the leaf up.
func MerkleProof(anchors []Value, s uint32) ([][32]byte, error) {
	if int(s) >= len(anchors) {
		return nil, fmt.Errorf("%w: lane %d of %d", ErrBadProof, s, len(anchors))
	}
	leaves := make([][32]byte, len(anchors))
	for i := range anchors {
		leaves[i] = leafHash(uint32(i), &anchors[i])
	}
	var path [][32]byte
	var walk func(leaves [][32]byte, m int)
	walk = func(leaves [][32]byte, m int) {
		if len(leaves) == 1 {
			return
		}
		k := splitPoint(len(leaves))
		if m < k {
			walk(leaves[:k], m)
			path = append(path, subtreeRoot(leaves[k:]))
		} else {
			walk(leaves[k:], m-k)
			path = append(path, subtreeRoot(leaves[:k]))
		}
	}
	walk(leaves, int(s))
	return path, nil
}

// MerkleProofs returns the audit path of every lane (proofs[s] is
// MerkleProof(anchors, s)), building the tree once: O(n log n) hashes
// and appends where n calls to MerkleProof take O(n²).
func MerkleProofs(anchors []Value) [][][32]byte {
	n := len(anchors)
	if n == 0 {
		return nil
	}
	leaves := make([][32]byte, n)
	for i := range anchors {
		leaves[i] = leafHash(uint32(i), &anchors[i])
	}
	depth := bits.Len(uint(n - 1))
	proofs := make([][][32]byte, n)
	backing := make([][32]byte, n*depth)
	for i := range proofs {
		proofs[i] = backing[i*depth : i*depth : (i+1)*depth]
	}
	// build returns the root of leaves[lo:hi], after appending it as the
	// sibling to the paths of the other half at each level: children are
	// built first, so each path runs from the leaf up.
	var build func(lo, hi int) [32]byte
	build = func(lo, hi int) [32]byte {
		if hi-lo == 1 {
			return leaves[lo]
		}
		k := lo + splitPoint(hi-lo)
		l, r := build(lo, k), build(k, hi)
		for i := lo; i < k; i++ {
			proofs[i] = append(proofs[i], r)
		}
		for i := k; i < hi; i++ {
			proofs[i] = append(proofs[i], l)
		}
		return nodeHash(&l, &r)
	}
	build(0, n)
	return proofs
}

// VerifyMerkleProof checks that anchor is lane s of a book with n lanes and
// the given root (RFC 9162 §2.1.3.2).
func VerifyMerkleProof(root [32]byte, n, s uint32, anchor *Value, path [][32]byte) error {
	if s >= n || n > MaxLanes || len(path) > maxProofLen {
		return fmt.Errorf("%w: lane %d of %d, %d hashes", ErrBadProof, s, n, len(path))
	}
	fn, sn := s, n-1
	r := leafHash(s, anchor)
	for _, p := range path {
		if sn == 0 {
			return fmt.Errorf("%w: proof too long", ErrBadProof)
		}
		if fn&1 == 1 || fn == sn {
			r = nodeHash(&p, &r)
			if fn&1 == 0 {
				for fn&1 == 0 && fn != 0 {
					fn >>= 1
					sn >>= 1
				}
			}
		} else {
			r = nodeHash(&r, &p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 || subtle.ConstantTimeCompare(r[:], root[:]) != 1 {
		return ErrBadProof
	}
	return nil
}
