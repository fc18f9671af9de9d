package delegation

import (
	"crypto"
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// GrantVersion is the version of the grant document.
const GrantVersion = "1"

// LabelSeal prefixes the HPKE info of a sealed seed: info = LabelSeal ||
// book ID || be32(lane), so a sealed seed opens only as the seed of its own
// lane of its own book.
const LabelSeal = "ecoupons seal v1"

// LabelSealPortion prefixes the HPKE info of a sealed portion value w_c:
// info = LabelSealPortion || book ID || be32(lane) || be32(c), so a sealed
// value opens only as the end of its own portion of its own lane: never as
// a seed, another lane's value or the value of another end.
const LabelSealPortion = "ecoupons seal portion v1"

// The HPKE suite of sealed seeds (RFC 9180): DHKEM(X25519, HKDF-SHA256),
// HKDF-SHA256, ChaCha20-Poly1305, base mode.
var (
	sealKDF  = hpke.HKDFSHA256()
	sealAEAD = hpke.ChaCha20Poly1305()
)

// maxGrantLanes bounds the lanes one grant document may carry.
const maxGrantLanes = 4096

// SealedLane is one granted lane: its anchor and Merkle proof (so the
// delegate can open it at the vendor) and, sealed to the delegate, either
// its seed (End 0: the whole lane) or the chain value w_End, the end of the
// portion 1…End the delegate may spend.
type SealedLane struct {
	Lane   uint32
	Anchor coupons.Value
	Proof  [][32]byte
	End    uint32 // the portion's end c (1…L), or 0 for a sealed seed
	Sealed []byte // HPKE enc || ciphertext of the 32-byte seed or w_End
}

// Grant is what a delegate receives:
//
//	(ecoupons-grant (version "1")
//	  (book (sequence (ecoupons-book …) (signature …)))
//	  (funding (sequence (cert …) (signature …)))     ; the broker's book certificate
//	  [(user (sequence (cert …) (signature …)))]      ; the broker's user certificate of the owner
//	  (chain (sequence (cert …) (signature …) …))     ; owner → … → delegate
//	  (lanes (lane "s" (anchor |…|) (proof |…| …) (seed |sealed|)) …))
//
// where a portion lane is (lane "s" (anchor |…|) (proof |…| …) (end "c")
// (portion |sealed w_c|)).
type Grant struct {
	Book    *coupons.SignedBook
	Funding *spki.SignedCert // the broker's book certificate (coupons.FundingCert)
	// Blind is an anonymous book's blind funding proof, in Funding's place
	// (coupons.Open.Blind); such a grant carries no user certificate.
	Blind spki.List
	User  *spki.SignedCert // may be nil
	Chain []*spki.SignedCert
	Lanes []SealedLane
}

// Cert returns the grant's own certificate, the last of the chain.
func (g *Grant) Cert() *spki.SignedCert { return g.Chain[len(g.Chain)-1] }

// Sexp returns the grant document.
func (g *Grant) Sexp() spki.List {
	chain := spki.L("sequence")
	for _, sc := range g.Chain {
		chain = append(chain, sc.Cert.Sexp(), sc.Signature.Sexp())
	}
	lanes := spki.L("lanes")
	for _, sl := range g.Lanes {
		proof := spki.L("proof")
		for _, h := range sl.Proof {
			proof = append(proof, spki.NewBytes(append([]byte(nil), h[:]...)))
		}
		lanes = append(lanes, sl.sexp(proof))
	}
	l := spki.L("ecoupons-grant", spki.L("version", GrantVersion), spki.L("book", g.Book.Sexp()))
	if g.Funding != nil {
		l = append(l, spki.L("funding", g.Funding.Sexp()))
	} else if g.Blind != nil {
		l = append(l, spki.L("funding", g.Blind))
	}
	if g.User != nil {
		l = append(l, spki.L("user", g.User.Sexp()))
	}
	return append(l, spki.L("chain", chain), lanes)
}

// ParseGrant parses a grant document's structure; Accept verifies it.
func ParseGrant(x spki.Sexp) (*Grant, error) {
	l, ok := x.(spki.List)
	if !ok || !l.Is("ecoupons-grant") || len(l) < 5 || len(l) > 7 {
		return nil, fmt.Errorf("%w: expected (ecoupons-grant (version …) (book …) (funding …) [(user …)] (chain …) (lanes …))", ErrBadGrant)
	}
	if v, ok := field(l[1], "version"); !ok || !isAtom(v, GrantVersion) {
		return nil, fmt.Errorf("%w: version (this is version %s)", ErrBadGrant, GrantVersion)
	}
	g := &Grant{}
	var err error
	b, ok := field(l[2], "book")
	if !ok {
		return nil, fmt.Errorf("%w: (book …)", ErrBadGrant)
	}
	if g.Book, err = coupons.ParseSignedBook(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadGrant, err)
	}
	rest := l[3:]
	if f, ok := field(rest[0], "funding"); ok {
		if bl, isBlind := f.(spki.List); isBlind && bl.Is(coupons.BlindFundingHead) {
			g.Blind = bl
		} else if g.Funding, err = spki.ParseSignedCert(f); err != nil {
			return nil, fmt.Errorf("%w: book certificate: %w", ErrBadGrant, err)
		}
		rest = rest[1:]
	}
	if u, ok := field(rest[0], "user"); ok {
		if g.User, err = spki.ParseSignedCert(u); err != nil {
			return nil, fmt.Errorf("%w: user certificate: %w", ErrBadGrant, err)
		}
		rest = rest[1:]
	}
	if len(rest) != 2 {
		return nil, fmt.Errorf("%w: expected (chain …) (lanes …) after the book and its certificates", ErrBadGrant)
	}
	c, ok := field(rest[0], "chain")
	if !ok {
		return nil, fmt.Errorf("%w: (chain (sequence …))", ErrBadGrant)
	}
	if g.Chain, err = spki.ParseSequence(c); err != nil {
		return nil, fmt.Errorf("%w: chain: %w", ErrBadGrant, err)
	}
	if len(g.Chain) == 0 || len(g.Chain) > 8 {
		return nil, fmt.Errorf("%w: the chain holds 1 to 8 certificates", ErrBadGrant)
	}
	lanes, ok := rest[1].(spki.List)
	if !ok || !lanes.Is("lanes") || len(lanes) < 2 || len(lanes)-1 > maxGrantLanes {
		return nil, fmt.Errorf("%w: (lanes (lane …) …) with 1 to %d lanes", ErrBadGrant, maxGrantLanes)
	}
	for _, e := range lanes[1:] {
		sl, err := parseSealedLane(e)
		if err != nil {
			return nil, err
		}
		g.Lanes = append(g.Lanes, sl)
	}
	return g, nil
}

// sexp returns the lane's entry in the grant document.
func (sl *SealedLane) sexp(proof spki.List) spki.List {
	l := spki.L("lane", strconv.FormatUint(uint64(sl.Lane), 10), spki.L("anchor", sl.Anchor[:]), proof)
	if sl.End == 0 {
		return append(l, spki.L("seed", sl.Sealed))
	}
	return append(l, spki.L("end", strconv.FormatUint(uint64(sl.End), 10)), spki.L("portion", sl.Sealed))
}

func parseSealedLane(x spki.Sexp) (SealedLane, error) {
	var sl SealedLane
	l, ok := x.(spki.List)
	if !ok || !l.Is("lane") || (len(l) != 5 && len(l) != 6) {
		return sl, fmt.Errorf("%w: expected (lane \"s\" (anchor …) (proof …) (seed …)) or (lane \"s\" (anchor …) (proof …) (end \"c\") (portion …))", ErrBadGrant)
	}
	s, ok := atomString(l[1])
	n, err := strconv.ParseUint(s, 10, 32)
	if !ok || err != nil || strconv.FormatUint(n, 10) != s {
		return sl, fmt.Errorf("%w: lane index %q", ErrBadGrant, s)
	}
	sl.Lane = uint32(n)
	a, ok := field(l[2], "anchor")
	as, ok2 := atomString(a)
	if !ok || !ok2 || len(as) != 32 {
		return sl, fmt.Errorf("%w: (anchor |32 bytes|)", ErrBadGrant)
	}
	copy(sl.Anchor[:], as)
	p, ok := l[3].(spki.List)
	if !ok || !p.Is("proof") || len(p)-1 > 24 {
		return sl, fmt.Errorf("%w: (proof |hash| …)", ErrBadGrant)
	}
	for _, e := range p[1:] {
		h, ok := atomString(e)
		if !ok || len(h) != 32 {
			return sl, fmt.Errorf("%w: proof hashes are 32 bytes", ErrBadGrant)
		}
		var v [32]byte
		copy(v[:], h)
		sl.Proof = append(sl.Proof, v)
	}
	name := "seed"
	if len(l) == 6 {
		name = "portion"
		e, ok := field(l[4], "end")
		es, ok2 := atomString(e)
		c, err := strconv.ParseUint(es, 10, 32)
		if !ok || !ok2 || err != nil || c == 0 || c > 1<<30 || strconv.FormatUint(c, 10) != es {
			return sl, fmt.Errorf("%w: (end \"c\") with c from 1 to 2^30", ErrBadGrant)
		}
		sl.End = uint32(c)
	}
	sd, ok := field(l[len(l)-1], name)
	ss, ok2 := atomString(sd)
	if !ok || !ok2 || len(ss) > 256 {
		return sl, fmt.Errorf("%w: (%s |sealed|)", ErrBadGrant, name)
	}
	sl.Sealed = []byte(ss)
	return sl, nil
}

func isAtom(x spki.Sexp, want string) bool {
	s, ok := atomString(x)
	return ok && s == want
}

func sealInfo(book [32]byte, lane uint32) []byte {
	info := make([]byte, 0, len(LabelSeal)+36)
	info = append(info, LabelSeal...)
	info = append(info, book[:]...)
	return binary.BigEndian.AppendUint32(info, lane)
}

// portionInfo is the HPKE info of the sealed value w_end of a lane.
func portionInfo(book [32]byte, lane, end uint32) []byte {
	info := make([]byte, 0, len(LabelSealPortion)+40)
	info = append(info, LabelSealPortion...)
	info = append(info, book[:]...)
	info = binary.BigEndian.AppendUint32(info, lane)
	return binary.BigEndian.AppendUint32(info, end)
}

// Holder is whoever holds lanes of a book and can spend, open and grant
// them: the owner (all lanes) or a delegate (the lanes of its grant).
type Holder struct {
	Book *coupons.SignedBook
	// Funding is the broker's book certificate, which every lane open
	// carries; without it the holder cannot open lanes (the owner sets it
	// once the broker has accepted the book).
	Funding *spki.SignedCert
	// Blind is an anonymous book's blind funding proof, carried instead of
	// Funding (coupons.Open.Blind).
	Blind  spki.List
	User   *spki.SignedCert   // the broker's user certificate of the owner; may be nil
	Chain  []*spki.SignedCert // certificates from the owner to this holder; nil for the owner
	Signer crypto.Signer
	lanes  map[uint32]*heldLane
}

// heldLane is a lane the holder may spend: coupons 1…end, from value =
// w_end (the seed when end = L).
type heldLane struct {
	value  coupons.Value
	end    uint32
	anchor coupons.Value
	proof  [][32]byte
}

// NewOwner returns the owner's holder of every lane of a book it created.
func NewOwner(book *coupons.SignedBook, user *spki.SignedCert, sec *coupons.Secrets, anchors []coupons.Value, signer crypto.Signer) (*Holder, error) {
	if uint32(len(anchors)) != book.Book.Lanes {
		return nil, fmt.Errorf("%w: %d anchors for %d lanes", ErrBadGrant, len(anchors), book.Book.Lanes)
	}
	h := &Holder{Book: book, User: user, Signer: signer, lanes: make(map[uint32]*heldLane, len(anchors))}
	proofs := coupons.MerkleProofs(anchors) // the tree once, not once per lane
	for s := range anchors {
		h.lanes[uint32(s)] = &heldLane{value: sec.Seed(uint32(s)), end: book.Book.Length, anchor: anchors[s], proof: proofs[s]}
	}
	return h, nil
}

// Lanes returns the lanes the holder holds, in no particular order.
func (h *Holder) Lanes() []uint32 {
	out := make([]uint32, 0, len(h.lanes))
	for s := range h.lanes {
		out = append(out, s)
	}
	return out
}

// Seed returns the seed of a lane held whole (not a portion of it). It is
// a secret: never log it.
func (h *Holder) Seed(lane uint32) (coupons.Value, bool) {
	l, ok := h.lanes[lane]
	if !ok || l.end != h.Book.Book.Length {
		return coupons.Value{}, false
	}
	return l.value, true
}

// Portion returns what the holder holds of a lane: the last coupon it may
// spend, end (L for a whole lane), and w_end (the seed for a whole lane),
// from which it computes coupons 1…end and nothing above. w_end is a
// secret: never log it.
func (h *Holder) Portion(lane uint32) (end uint32, w coupons.Value, ok bool) {
	l, ok := h.lanes[lane]
	if !ok {
		return 0, coupons.Value{}, false
	}
	return l.end, l.value, true
}

// Cursor returns a fresh cursor over what the holder holds of a lane (the
// whole lane or its portion), and the lane's anchor.
func (h *Holder) Cursor(lane uint32) (*coupons.Cursor, coupons.Value, error) {
	l, ok := h.lanes[lane]
	if !ok {
		return nil, coupons.Value{}, fmt.Errorf("%w: lane %d is not held", coupons.ErrNotAuthorized, lane)
	}
	b := h.Book.Book
	return coupons.NewPortionCursor(b.LaneTag(lane), b.Length, l.end, l.value)
}

// GrantOptions are the optional parts of a grant.
type GrantOptions struct {
	// Cap is the most the delegate may spend over all granted lanes, in
	// nanos; 0: none (a sub-grant then inherits its parent's cap). A capped
	// grant hands portions: Cap / unit coupons, filling the lanes lo, lo+1, …
	// in order, each up to what the issuer holds of it; lanes left with no
	// coupon are not granted, and the certificate names only the lanes
	// granted.
	Cap       int64
	Propagate bool      // the delegate may sub-grant; it is handed portions, whole or not
	NotBefore time.Time // zero: no lower bound
	NotAfter  time.Time // zero: no upper bound (the book's expiry still applies)
}

// Issue grants lanes lo…hi to a device: it signs the grant certificate
// with the holder's key and seals to the device, per lane, the seed (an
// uncapped grant without propagate, of lanes held whole) or the portion
// end value w_c (otherwise): see GrantOptions.Cap for how a cap becomes
// portions. A delegate may issue only within its own grant (ErrGrantWider)
// and only if its grant carries propagate (ErrNoPropagate); the portions it
// hands end at or below its own. A holder should grant only lanes it has
// not spent from, and stop spending a lane it granted: both would spend
// the same coupons (the wallet enforces it).
func (h *Holder) Issue(to *Device, lo, hi uint32, opt GrantOptions) (*Grant, error) {
	b := h.Book.Book
	if lo > hi || hi >= b.Lanes {
		return nil, fmt.Errorf("%w: lanes %d-%d of a book of %d", ErrGrantWider, lo, hi, b.Lanes)
	}
	if hi-lo+1 > maxGrantLanes {
		return nil, fmt.Errorf("%w: at most %d lanes per grant", ErrBadGrant, maxGrantLanes)
	}
	for s := lo; ; s++ {
		if _, ok := h.lanes[s]; !ok {
			return nil, fmt.Errorf("%w: lane %d is not held by the issuer", ErrGrantWider, s)
		}
		if s == hi {
			break
		}
	}
	capNanos := opt.Cap
	var parent *spki.Cert
	if len(h.Chain) > 0 {
		parent = h.Chain[len(h.Chain)-1].Cert
		if !parent.Propagate {
			return nil, ErrNoPropagate
		}
		if capNanos == 0 {
			// Inherit the parent's cap rather than fail: the sub-grant is
			// then exactly as capped as its parent.
			var parentCap int64
			if err := coupons.SpendCovers(b.ID(), b.Vendor, lo, &parentCap)(parent.Tag); err == nil && parentCap > 0 {
				capNanos = parentCap
			}
		}
	}
	// What each lane gets: its end c, 1…(what the issuer holds of it).
	portions := capNanos > 0 || opt.Propagate
	var ends []uint32
	if capNanos > 0 {
		left := uint64(capNanos / b.Unit)
		if left == 0 {
			return nil, fmt.Errorf("%w: %s is less than one coupon of %s", ErrCapBelowCoupon, coupons.FormatAmount(capNanos), coupons.FormatAmount(b.Unit))
		}
		for s := lo; s <= hi && left > 0; s++ {
			e := uint32(min(uint64(h.lanes[s].end), left))
			ends = append(ends, e)
			left -= uint64(e)
		}
		hi = lo + uint32(len(ends)) - 1
	} else {
		for s := lo; s <= hi; s++ {
			ends = append(ends, h.lanes[s].end)
			portions = portions || h.lanes[s].end < b.Length
		}
	}
	tag, err := coupons.SpendTag(b.ID(), b.Vendor, lo, hi, capNanos)
	if err != nil {
		return nil, err
	}
	if parent != nil && !spki.Implies(tag, parent.Tag) {
		return nil, fmt.Errorf("%w: %s is not within %s", ErrGrantWider, tag, parent.Tag)
	}
	issuer, err := spki.NewPublicKey(h.Signer.Public())
	if err != nil {
		return nil, err
	}
	cert := &spki.Cert{Issuer: spki.KeyPrincipal(issuer), Subject: spki.KeyPrincipal(to.Signing), Propagate: opt.Propagate,
		Tag: tag, Validity: spki.Validity{NotBefore: opt.NotBefore.UTC().Truncate(time.Second), NotAfter: opt.NotAfter.UTC().Truncate(time.Second)}}
	if to.Name != "" {
		cert.Comment = to.Name
	}
	pk, err := hpke.NewDHKEMPublicKey(to.Encryption)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadDevice, err)
	}
	sc, err := spki.SignCert(cert, h.Signer)
	if err != nil {
		return nil, err
	}
	if h.Funding == nil && h.Blind == nil {
		return nil, fmt.Errorf("%w: the book has no certificate from its broker yet; a delegate could not open its lanes", coupons.ErrBookNotFunded)
	}
	g := &Grant{Book: h.Book, Funding: h.Funding, Blind: h.Blind, User: h.User, Chain: append(append([]*spki.SignedCert(nil), h.Chain...), sc)}
	for x, e := range ends {
		s := lo + uint32(x)
		l := h.lanes[s]
		sl := SealedLane{Lane: s, Anchor: l.anchor, Proof: l.proof}
		if portions {
			lt := b.LaneTag(s)
			w := coupons.Walk(&lt, l.end, l.value, e)
			sl.End = e
			sl.Sealed, err = hpke.Seal(pk, sealKDF, sealAEAD, portionInfo(b.ID(), s, e), w[:])
			clear(w[:])
		} else {
			sl.Sealed, err = hpke.Seal(pk, sealKDF, sealAEAD, sealInfo(b.ID(), s), l.value[:])
		}
		if err != nil {
			return nil, fmt.Errorf("delegation: sealing lane %d: %w", s, err)
		}
		g.Lanes = append(g.Lanes, sl)
	}
	return g, nil
}

// Accept verifies a grant addressed to the device whose signing key is
// signer and whose encryption key is enc, at time now: the owner's
// signature on the book, the broker's user certificate, the chain from the
// owner to this device covering every lane, and for each lane that the
// seed or portion value opens (a portion's end c in 1…L, its value sealed
// for that end), walks to the committed anchor (L or c steps) and that the
// anchor is in the book. Under a capped chain every lane must be a portion
// and the ends must sum to at most cap / unit coupons. It returns the
// device's holder of the granted lanes, which spends at most c coupons of
// a portion lane.
func Accept(g *Grant, signer crypto.Signer, enc *ecdh.PrivateKey, now time.Time) (*Holder, error) {
	me, err := spki.NewPublicKey(signer.Public())
	if err != nil {
		return nil, err
	}
	if g.Cert().Cert.Subject.Hash != me.Hash() {
		return nil, fmt.Errorf("%w: addressed to %s, this device is %s", ErrNotForMe, g.Cert().Cert.Subject.Hash, me.Hash())
	}
	b := g.Book.Book
	if err := g.Book.Verify(); err != nil {
		return nil, fmt.Errorf("%w: book: %w", ErrBadGrant, err)
	}
	if g.Blind != nil {
		// An anonymous book: the gate checks the blind signature against
		// the broker's denominations; here it only must be one, alone.
		if g.Funding != nil || g.User != nil {
			return nil, fmt.Errorf("%w: an anonymous book's grant carries neither a book nor a user certificate", ErrBadGrant)
		}
	} else if err := coupons.VerifyFunding(g.Funding, b, now, nil); err != nil {
		return nil, err
	}
	if g.User != nil {
		if err := g.User.Verify(); err != nil || g.User.Cert.Subject.Hash != b.Owner || g.User.Cert.Issuer.Hash != b.Broker {
			return nil, fmt.Errorf("%w: the user certificate is not the broker's for the book's owner", coupons.ErrOwnerNotCertified)
		}
	}
	// Every certificate of the chain must be used, in order: a chain with
	// extra links is refused rather than silently trimmed.
	for k, sc := range g.Chain {
		want := b.Owner
		if k > 0 {
			want = g.Chain[k-1].Cert.Subject.Hash
		}
		if sc.Cert.Issuer.Hash != want {
			return nil, fmt.Errorf("%w: chain link %d is not issued by the previous subject", ErrBadGrant, k)
		}
		if k > 0 && !spki.Implies(sc.Cert.Tag, g.Chain[k-1].Cert.Tag) {
			return nil, fmt.Errorf("%w: link %d", ErrGrantWider, k)
		}
	}
	dk, err := hpke.NewDHKEMPrivateKey(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSeal, err)
	}
	h := &Holder{Book: g.Book, Funding: g.Funding, Blind: g.Blind, User: g.User, Chain: g.Chain, Signer: signer, lanes: map[uint32]*heldLane{}}
	// The chain is reduced once (signatures, validity, propagation, tag
	// intersection); each lane is then checked against what it grants.
	chain, err := spki.FindChain(g.Chain, spki.ChainRequest{Root: b.Owner, Subject: me.Hash(), Time: now,
		Covers: func(*spki.Tag) error { return nil }})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", coupons.ErrNotAuthorized, err)
	}
	var total uint64 // coupons granted under a cap
	for _, sl := range g.Lanes {
		var capNanos int64
		if err := coupons.SpendCovers(b.ID(), b.Vendor, sl.Lane, &capNanos)(chain.Result.Tag); err != nil {
			return nil, fmt.Errorf("%w: lane %d: %w", coupons.ErrNotAuthorized, sl.Lane, err)
		}
		if _, dup := h.lanes[sl.Lane]; dup {
			return nil, fmt.Errorf("%w: lane %d twice", ErrBadGrant, sl.Lane)
		}
		if err := coupons.VerifyMerkleProof(b.Root, b.Lanes, sl.Lane, &sl.Anchor, sl.Proof); err != nil {
			return nil, fmt.Errorf("lane %d: %w", sl.Lane, err)
		}
		end, info := b.Length, sealInfo(b.ID(), sl.Lane)
		if sl.End != 0 {
			if sl.End > b.Length {
				return nil, fmt.Errorf("%w: lane %d: portion end %d beyond the lane's %d coupons", ErrBadGrant, sl.Lane, sl.End, b.Length)
			}
			end, info = sl.End, portionInfo(b.ID(), sl.Lane, sl.End)
		} else if capNanos > 0 {
			return nil, fmt.Errorf("%w: lane %d: a capped grant hands portions, not seeds", ErrBadGrant, sl.Lane)
		}
		plain, err := hpke.Open(dk, sealKDF, sealAEAD, info, sl.Sealed)
		if err != nil || len(plain) != 32 {
			return nil, fmt.Errorf("%w: lane %d", ErrSeal, sl.Lane)
		}
		var w coupons.Value
		copy(w[:], plain)
		clear(plain)
		tag := b.LaneTag(sl.Lane)
		if coupons.Walk(&tag, end, w, 0) != sl.Anchor {
			return nil, fmt.Errorf("%w: lane %d", ErrSeedMismatch, sl.Lane)
		}
		if capNanos > 0 {
			if total += uint64(end); total > uint64(capNanos/b.Unit) {
				return nil, fmt.Errorf("%w: %d coupons by lane %d, the cap is %s", ErrPortionsExceedCap, total, sl.Lane, coupons.FormatAmount(capNanos))
			}
		}
		h.lanes[sl.Lane] = &heldLane{value: w, end: end, anchor: sl.Anchor, proof: sl.Proof}
	}
	return h, nil
}

// Open builds the lane-open document for a held lane answering the
// vendor's challenge nonce.
func (h *Holder) Open(lane uint32, nonce string) (*coupons.Open, error) {
	l, ok := h.lanes[lane]
	if !ok {
		return nil, fmt.Errorf("%w: lane %d is not held", coupons.ErrNotAuthorized, lane)
	}
	if h.Funding == nil && h.Blind == nil {
		return nil, fmt.Errorf("%w: no book certificate from the broker to open lanes with (register the book first)", coupons.ErrBookNotFunded)
	}
	o := &coupons.Open{Book: h.Book, Lane: lane, Anchor: l.anchor, Proof: l.proof, Funding: h.Funding, Blind: h.Blind, User: h.User, Delegation: h.Chain}
	if l.end < h.Book.Book.Length {
		// The vendor learns where the portion ends, so that its last coupon
		// may come unbound (there is no next value to bind it with).
		o.End = l.end
	}
	if err := o.SignOpen(h.Signer, nonce); err != nil {
		return nil, err
	}
	return o, nil
}
