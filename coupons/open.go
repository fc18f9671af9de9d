package coupons

import (
	"crypto"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ecoupons/ecoupons/spki"
)

// OpenVersion is the version of the lane-open document.
const OpenVersion = "1"

// Errors of lane opens, one per reason a vendor refuses to open a lane.
var (
	ErrBadOpen           = errors.New("coupons: malformed lane-open document")
	ErrWrongVendor       = errors.New("coupons: book is for another vendor")
	ErrBookExpired       = errors.New("coupons: book expired")
	ErrUntrustedBroker   = errors.New("coupons: book's broker is not trusted here")
	ErrOwnerNotCertified = errors.New("coupons: book owner not certified by the broker")
	ErrNotAuthorized     = errors.New("coupons: spender not authorized for this lane")
	ErrGrantWider        = errors.New("coupons: sub-grant wider than its parent grant")
	ErrRevoked           = errors.New("coupons: certificate or key revoked")
	ErrLaneOutOfRange    = errors.New("coupons: lane index beyond the book")
	ErrBadOpenSignature  = errors.New("coupons: spender's signature over the challenge is invalid")
	ErrBadNonce          = errors.New("coupons: challenge nonce invalid or expired")
)

// Open is a lane-open document: everything a vendor needs to accept
// payments on one lane, verified once, off-line.
//
//	(ecoupons-open (version "1")
//	  (book (sequence (ecoupons-book …) (signature …)))
//	  (lane "s") (anchor |w_0|) (proof |h| …)
//	  (funding (sequence (cert …) (signature …)))     ; the broker's book certificate
//	  | (funding (ecoupon-blind-funding …))             ; or an anonymous book's blind signature
//	  [(user (sequence (cert …) (signature …)))]      ; the broker certifies the owner's account
//	  [(delegation (sequence (cert …) (signature …) …))] ; owner → … → spender
//	  (spender (public-key …))
//	  (nonce "…")
//	  [(end "c")]                                      ; the spender holds coupons 1…c only (a portion)
//	  (signature …))                                   ; by the spender over OpenChallenge
type Open struct {
	Book   *SignedBook
	Lane   uint32
	Anchor Value
	Proof  [][32]byte
	// Funding is the broker's book certificate (FundingCert): the proof
	// that the broker holds or guarantees the book's face value. A parsed
	// open may lack it; VerifyOpen then refuses it (ErrBookNotFunded).
	Funding *spki.SignedCert
	// Blind is an anonymous book's funding proof instead of a book
	// certificate: the (ecoupon-blind-funding …) of package blindfund,
	// checked by the policy's BlindFunding. Never both; an anonymous
	// book's open carries no user certificate.
	Blind spki.List
	// User is the broker's user certificate of the owner: identity (the
	// account theft reports and the back office name), not funding. May
	// be nil.
	User       *spki.SignedCert
	Delegation []*spki.SignedCert
	Spender    *spki.PublicKey
	Nonce      string
	// End is the last coupon the spender holds when it holds a portion of
	// the lane (1 ≤ End < L): coupon End has no next value the spender
	// knows, so the vendor accepts it without a request binding. 0: the
	// whole lane. The spender signs it with the challenge.
	End       uint32
	Signature *spki.Signature
}

// MaxNonceLen bounds the challenge nonce in a lane open.
const MaxNonceLen = 128

// OpenChallenge is what the spender signs to prove it holds its key now,
// for this vendor, book, lane and challenge:
//
//	(ecoupons-lane-open (vendor v) (book |id|) (lane "s") (nonce "n") [(end "c")])
//
// end is the spender's portion end (0: the whole lane, and no (end …)).
func OpenChallenge(vendor string, book [32]byte, lane uint32, nonce string, end uint32) spki.List {
	l := spki.L("ecoupons-lane-open", spki.L("vendor", vendor), spki.L("book", book[:]),
		spki.L("lane", strconv.FormatUint(uint64(lane), 10)), spki.L("nonce", nonce))
	if end != 0 {
		l = append(l, spki.L("end", strconv.FormatUint(uint64(end), 10)))
	}
	return l
}

// SignOpen fills in the spender's key and signature for nonce.
func (o *Open) SignOpen(spender crypto.Signer, nonce string) error {
	pub, err := spki.NewPublicKey(spender.Public())
	if err != nil {
		return err
	}
	o.Spender, o.Nonce = pub, nonce
	o.Signature, err = spki.Sign(spender, OpenChallenge(o.Book.Book.Vendor, o.Book.Book.ID(), o.Lane, nonce, o.End))
	return err
}

// Sexp returns the document.
func (o *Open) Sexp() spki.List {
	proof := spki.L("proof")
	for _, h := range o.Proof {
		proof = append(proof, spki.NewBytes(append([]byte(nil), h[:]...)))
	}
	l := spki.L("ecoupons-open", spki.L("version", OpenVersion), spki.L("book", o.Book.Sexp()),
		spki.L("lane", strconv.FormatUint(uint64(o.Lane), 10)), spki.L("anchor", o.Anchor[:]), proof)
	if o.Funding != nil {
		l = append(l, spki.L("funding", o.Funding.Sexp()))
	} else if o.Blind != nil {
		l = append(l, spki.L("funding", o.Blind))
	}
	if o.User != nil {
		l = append(l, spki.L("user", o.User.Sexp()))
	}
	if len(o.Delegation) > 0 {
		seq := spki.L("sequence")
		for _, sc := range o.Delegation {
			seq = append(seq, sc.Cert.Sexp(), sc.Signature.Sexp())
		}
		l = append(l, spki.L("delegation", seq))
	}
	l = append(l, spki.L("spender", o.Spender.Sexp()), spki.L("nonce", o.Nonce))
	if o.End != 0 {
		l = append(l, spki.L("end", strconv.FormatUint(uint64(o.End), 10)))
	}
	return append(l, o.Signature.Sexp())
}

// ParseOpen parses a lane-open document (any S-expression form). It checks
// structure only; VerifyOpen checks meaning.
func ParseOpen(x spki.Sexp) (*Open, error) {
	l, ok := x.(spki.List)
	if !ok || !l.Is("ecoupons-open") {
		return nil, fmt.Errorf("%w: expected (ecoupons-open …)", ErrBadOpen)
	}
	f := fields{list: l[1:]}
	o := &Open{}
	if v := f.str("version"); f.err == nil && v != OpenVersion {
		return nil, fmt.Errorf("%w: version %q (this is version %s)", ErrBadOpen, v, OpenVersion)
	}
	if b := f.next("book", 2); b != nil {
		if o.Book, f.err = ParseSignedBook(b[1]); f.err != nil {
			return nil, f.err
		}
	}
	o.Lane = f.uint32("lane")
	copy(o.Anchor[:], f.bytes("anchor", 32))
	if f.err == nil && len(f.list) > 0 {
		p, ok := f.list[0].(spki.List)
		f.list = f.list[1:]
		if !ok || !p.Is("proof") || len(p)-1 > maxProofLen {
			f.err = fmt.Errorf("%w: expected (proof |hash| …) with at most %d hashes", ErrBadOpen, maxProofLen)
		}
		for _, e := range p[min(1, len(p)):] {
			h, ok := plain(e)
			if !ok || len(h) != 32 {
				f.err = fmt.Errorf("%w: proof hashes are 32 bytes", ErrBadOpen)
				break
			}
			var v [32]byte
			copy(v[:], h)
			o.Proof = append(o.Proof, v)
		}
	}
	if f.err == nil && len(f.list) > 0 {
		if u, ok := f.list[0].(spki.List); ok && u.Is("funding") {
			f.list = f.list[1:]
			if len(u) != 2 {
				return nil, fmt.Errorf("%w: (funding (sequence (cert …) (signature …)))", ErrBadOpen)
			}
			if bl, ok := u[1].(spki.List); ok && bl.Is(BlindFundingHead) {
				o.Blind = bl
			} else if o.Funding, f.err = spki.ParseSignedCert(u[1]); f.err != nil {
				return nil, fmt.Errorf("%w: book certificate: %w", ErrBadOpen, f.err)
			}
		}
	}
	if f.err == nil && len(f.list) > 0 {
		if u, ok := f.list[0].(spki.List); ok && u.Is("user") {
			f.list = f.list[1:]
			if len(u) != 2 {
				return nil, fmt.Errorf("%w: (user (sequence (cert …) (signature …)))", ErrBadOpen)
			}
			if o.User, f.err = spki.ParseSignedCert(u[1]); f.err != nil {
				return nil, fmt.Errorf("%w: user certificate: %w", ErrBadOpen, f.err)
			}
		}
	}
	if f.err == nil && len(f.list) > 0 {
		if d, ok := f.list[0].(spki.List); ok && d.Is("delegation") {
			f.list = f.list[1:]
			if len(d) != 2 {
				return nil, fmt.Errorf("%w: (delegation (sequence …))", ErrBadOpen)
			}
			if o.Delegation, f.err = spki.ParseSequence(d[1]); f.err != nil {
				return nil, fmt.Errorf("%w: delegation: %w", ErrBadOpen, f.err)
			}
			if len(o.Delegation) == 0 || len(o.Delegation) > 8 {
				return nil, fmt.Errorf("%w: delegation holds 1 to 8 certificates", ErrBadOpen)
			}
		}
	}
	if s := f.next("spender", 2); s != nil {
		if o.Spender, f.err = spki.ParsePublicKey(s[1]); f.err != nil {
			return nil, fmt.Errorf("%w: spender: %w", ErrBadOpen, f.err)
		}
	}
	o.Nonce = f.str("nonce")
	if f.err == nil && len(o.Nonce) > MaxNonceLen {
		f.err = fmt.Errorf("%w: nonce longer than %d bytes", ErrBadOpen, MaxNonceLen)
	}
	if f.err == nil && len(f.list) > 1 {
		if e, ok := f.list[0].(spki.List); ok && e.Is("end") {
			o.End = f.uint32("end")
			if f.err == nil && o.End == 0 {
				f.err = fmt.Errorf("%w: (end \"c\") names a coupon from 1", ErrBadOpen)
			}
		}
	}
	if f.err == nil {
		if len(f.list) != 1 {
			return nil, fmt.Errorf("%w: expected the spender's (signature …) last", ErrBadOpen)
		}
		if o.Signature, f.err = spki.ParseSignature(f.list[0]); f.err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadOpen, f.err)
		}
	}
	if f.err != nil {
		if errors.Is(f.err, ErrBadBook) && !errors.Is(f.err, ErrBadOpen) {
			return nil, fmt.Errorf("%w: %w", ErrBadOpen, f.err)
		}
		return nil, f.err
	}
	return o, nil
}

// Revocations answers whether a certificate (by the hash of its (cert …)
// body) or a key has been revoked. Package delegation's verified revocation
// lists implement it.
type Revocations interface {
	CertRevoked(hash [32]byte) bool
	KeyRevoked(hash spki.KeyHash) bool
}

// OpenPolicy is what a vendor checks lane opens against.
type OpenPolicy struct {
	Vendor      string
	Brokers     []*spki.PublicKey        // brokers whose users this vendor accepts
	Now         time.Time                // the time of the open
	CheckNonce  func(nonce string) error // validates the challenge nonce (stateless HMAC in the gate)
	Revocations Revocations              // nil: nothing revoked
	// Blind checks anonymous books' blind funding proofs; nil: anonymous
	// books are refused (ErrBookNotFunded).
	Blind BlindFunding
	// Cache remembers verified signatures (books, certificates) across lane
	// opens, so that opening the next lane of a known book under known
	// grants costs one signature check, the spender's. nil: no cache.
	Cache spki.VerifyCache
}

// OpenedLane is a verified lane: what the vendor caches and stores.
type OpenedLane struct {
	ID       LaneID
	Tag      LaneTag
	Anchor   Value
	Length   uint32
	Unit     int64
	Currency string
	NotAfter time.Time // the earliest of the book's expiry and the grants' not-after
	Owner    spki.KeyHash
	Spender  spki.KeyHash
	Account  string // the broker account named in the user certificate ("" without one)
	// Certs are the hashes of the book certificate, the user certificate
	// (when the open carries one) and the delegation certificates, root
	// first: a revocation list naming any of them stops the lane.
	Certs [][32]byte
	// Keys are the keys whose revocation stops the lane: the owner's, the
	// spender's and those the open's delegation certificates name.
	Keys []spki.KeyHash
	Cap  int64 // spending cap of the delegation in nanos, 0 when none
	// End is the last coupon the spender holds (its portion's end), the
	// lane's length when it holds the whole lane.
	End uint32
	// Anonymous is set for a book funded by a blind signature (no user
	// certificate, a fresh owner key; Account is "").
	Anonymous bool
	// Grant is the hash of the owner's own grant, the first delegation
	// certificate of the chain (zero when the owner spends): caps are
	// charged to it.
	Grant [32]byte
}
