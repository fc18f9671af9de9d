// Package delegation hands lanes of a coupon book to other keys — a phone,
// a laptop, a smart card, another person — and takes them back.
//
// A grant is an SPKI certificate from a book holder to a delegate's
// signing key whose tag names the book, its vendor, the lane range and an
// optional spending cap (coupons.SpendTag), shipped with the certificate
// chain above it and, sealed to the delegate's X25519 encryption key with
// HPKE (RFC 9180, crypto/hpke), per granted lane either its seed (an
// uncapped grant without propagate) or a portion: the chain value w_c at
// the portion's end c, from which the delegate computes exactly coupons
// 1…c. A cap thus holds by construction, at every gate and store: a capped
// grant of cap/unit coupons fills the lanes in order. A delegate whose
// grant carries (propagate) may sub-grant a sub-range, with portions at or
// below its own. The owner takes an unspent portion back by paying coupon
// c+1 at the vendor, which pays for the delegate's unspent coupons too. Revocation lists,
// signed by the broker, name revoked certificates and keys; vendors refuse
// lane opens under any revoked link.
//
// Smart cards: a delegate's signing key may live on a PKCS#11 token
// (through go.step.sm/crypto's kms; ECDSA P-256, since the token path does
// not sign Ed25519). Seeds cannot be unsealed on the token — the kms layer
// offers no ECDH — so every device, card or not, keeps a separate,
// file-held X25519 encryption key. Consequence: whoever copies that file
// and the grant can read the seeds, but cannot open a lane, because lane
// opens are signed by the card's key; the seeds alone let a thief race the
// device only on lanes the device has already opened, which the vendor's
// TESLA binding check then reports as theft.
package delegation
