// Package coupons implements ecoupons' coupon books: PayWord-style one-way
// hash chains cut into independently seeded lanes, committed to by a
// Merkle root that the book's owner signs once.
//
// A lane s of a book is the chain w_{s,L} = x_s (its seed), w_{s,i} =
// Step(tag_s, i, w_{s,i+1}) down to the anchor w_{s,0}. Spending coupon i
// reveals w_{s,i}; a vendor holding (j, w_{s,j}) accepts (i, w) when i > j
// and hashing w forward i−j times gives w_{s,j} ([VerifyNext]). The wire
// formats and labels are specified in docs/PROTOCOL.md.
package coupons
