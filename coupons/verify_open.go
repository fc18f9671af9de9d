package coupons

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/ecoupons/ecoupons/spki"
)

// UserTag is the tag of the broker's user certificate: the subject key may
// spend from the broker account in the currency.
//
//	(ecoupons-user (account "A") (currency EUR))
func UserTag(account, currency string) *spki.Tag {
	t, err := spki.ParseTag(spki.L("ecoupons-user", spki.L("account", account), spki.L("currency", currency)))
	if err != nil {
		panic(err) // the literal above is always a valid tag
	}
	return t
}

// SpendTag is the tag of a delegation grant: lanes lo…hi of a book at its
// vendor, with an optional cap (in nanos, 0 for none) on the total the
// grantee may spend.
//
//	(ecoupons-spend (book |id|) (vendor v) (lanes (* range numeric ge "lo" le "hi"))
//	                [(cap (* range numeric le "amount"))])
func SpendTag(book [32]byte, vendor string, lo, hi uint32, capNanos int64) (*spki.Tag, error) {
	if lo > hi {
		return nil, fmt.Errorf("%w: lane range %d-%d is empty", ErrNotAuthorized, lo, hi)
	}
	l := spki.L("ecoupons-spend", spki.L("book", book[:]), spki.L("vendor", vendor),
		spki.L("lanes", spki.L("*", "range", "numeric", "ge", strconv.FormatUint(uint64(lo), 10), "le", strconv.FormatUint(uint64(hi), 10))))
	if capNanos > 0 {
		l = append(l, spki.L("cap", spki.L("*", "range", "numeric", "le", FormatAmount(capNanos))))
	}
	return spki.ParseTag(l)
}

// SpendCovers returns a Covers function for spki.FindChain: the reduced
// tag must grant lane s of book at vendor; the cap it carries, if any, is
// stored in *capOut (0 when none).
func SpendCovers(book [32]byte, vendor string, lane uint32, capOut *int64) func(*spki.Tag) error {
	req, err := spki.ParseTag(spki.L("ecoupons-spend", spki.L("book", book[:]), spki.L("vendor", vendor),
		spki.L("lanes", strconv.FormatUint(uint64(lane), 10))))
	if err != nil {
		panic(err)
	}
	var covers func(t *spki.Tag) error
	covers = func(t *spki.Tag) error {
		switch t.Kind {
		case spki.TagAll:
			*capOut = 0
			return nil
		case spki.TagSet:
			for _, m := range t.Elems {
				if covers(m) == nil {
					return nil
				}
			}
		case spki.TagList:
			if len(t.Elems) < 4 || len(t.Elems) > 5 {
				break
			}
			head := &spki.Tag{Kind: spki.TagList, Elems: t.Elems[:4]}
			if !spki.Implies(req, head) {
				break
			}
			*capOut = 0
			if len(t.Elems) == 5 {
				c, err := capOf(t.Elems[4])
				if err != nil {
					return err
				}
				*capOut = c
			}
			return nil
		}
		return fmt.Errorf("grant %s does not cover lane %d of this book at %s", t, lane, vendor)
	}
	return covers
}

// capOf reads (cap (* range numeric le "amount")).
func capOf(t *spki.Tag) (int64, error) {
	if t.Kind == spki.TagList && len(t.Elems) == 2 && t.Elems[0].Kind == spki.TagAtom &&
		string(t.Elems[0].Atom.Value) == "cap" && t.Elems[1].Kind == spki.TagRange {
		r := t.Elems[1].Range
		if r.Order == spki.OrderNumeric && r.Lower == nil && r.Upper != nil && !r.UpperStrict {
			if n, err := ParseAmount(string(r.Upper)); err == nil && n > 0 {
				return n, nil
			}
		}
	}
	return 0, fmt.Errorf("malformed spending cap %s", t)
}

// VerifyOpen checks a lane-open document against the vendor's policy:
// vendor, lane range, expiry, trusted broker, challenge nonce, the anchor's
// inclusion proof, the owner's signature on the book, the broker's book
// certificate (funding), the broker's user certificate when present, the delegation chain from owner to spender (each grant no
// wider than its parent), the spender's signature over the challenge, and
// revocations. Each failure has its own sentinel error.
func VerifyOpen(o *Open, pol *OpenPolicy) (*OpenedLane, error) {
	b := o.Book.Book
	id := b.ID()
	now := pol.Now
	switch {
	case b.Vendor != pol.Vendor:
		return nil, fmt.Errorf("%w: book is for %q, this is %q", ErrWrongVendor, b.Vendor, pol.Vendor)
	case o.Lane >= b.Lanes:
		return nil, fmt.Errorf("%w: lane %d of %d", ErrLaneOutOfRange, o.Lane, b.Lanes)
	case now.After(b.NotAfter):
		return nil, fmt.Errorf("%w: on %s", ErrBookExpired, spki.FormatDate(b.NotAfter))
	}
	var broker *spki.PublicKey
	for _, k := range pol.Brokers {
		if k.Hash() == b.Broker {
			broker = k
		}
	}
	if broker == nil {
		return nil, fmt.Errorf("%w: %s", ErrUntrustedBroker, b.Broker)
	}
	if pol.CheckNonce != nil {
		if err := pol.CheckNonce(o.Nonce); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadNonce, err)
		}
	}
	if err := VerifyMerkleProof(b.Root, b.Lanes, o.Lane, &o.Anchor, o.Proof); err != nil {
		return nil, err
	}
	if err := o.Book.VerifyCached(pol.Cache); err != nil {
		return nil, fmt.Errorf("%w: owner's signature on the book: %w", ErrBadBook, err)
	}

	if o.End > b.Length {
		return nil, fmt.Errorf("%w: portion end %d beyond the lane's %d coupons", ErrBadOpen, o.End, b.Length)
	}
	lane := &OpenedLane{ID: LaneID{Book: id, Lane: o.Lane}, Tag: b.LaneTag(o.Lane), Anchor: o.Anchor, End: b.Length,
		Length: b.Length, Unit: b.Unit, Currency: b.Currency, NotAfter: b.NotAfter, Owner: b.Owner, Spender: o.Spender.Hash()}

	// The broker holds (or guarantees) the book's face value: what this
	// vendor accepts, the broker pays. An anonymous book shows the
	// broker's blind signature instead of a book certificate, and no
	// identity.
	if o.Blind != nil {
		if err := verifyBlind(o, pol, lane); err != nil {
			return nil, err
		}
	} else {
		if err := VerifyFunding(o.Funding, b, now, pol.Cache); err != nil {
			return nil, err
		}
		lane.Certs = append(lane.Certs, o.Funding.Cert.Hash())
	}

	// The broker's user certificate, when shown, names the owner's account
	// (identity for theft reports); funding does not depend on it.
	if o.User != nil {
		uc := o.User.Cert
		if uc.Issuer.Hash != b.Broker || uc.Subject.Hash != b.Owner {
			return nil, fmt.Errorf("%w: the user certificate is not from the book's broker to its owner", ErrOwnerNotCertified)
		}
		if err := o.User.VerifyCached(pol.Cache); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrOwnerNotCertified, err)
		}
		if err := uc.Validity.Check(now); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrOwnerNotCertified, err)
		}
		account, err := userAccount(uc.Tag, b.Currency)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrOwnerNotCertified, err)
		}
		lane.Account = account
		lane.Certs = append(lane.Certs, uc.Hash())
		lane.NotAfter = earliest(lane.NotAfter, uc.Validity.NotAfter)
	}

	// The owner delegates to the spender, unless the owner spends.
	var chainCerts []*spki.SignedCert
	if lane.Spender != b.Owner {
		if len(o.Delegation) == 0 {
			return nil, fmt.Errorf("%w: the spender is not the owner and shows no delegation", ErrNotAuthorized)
		}
		chain, err := spki.FindChain(o.Delegation, spki.ChainRequest{Root: b.Owner, Subject: lane.Spender, Time: now,
			Covers: SpendCovers(id, b.Vendor, o.Lane, &lane.Cap), Cache: pol.Cache})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotAuthorized, err)
		}
		lane.Grant = chain.Certs[0].Cert.Hash()
		chainCerts = chain.Certs
		for k, sc := range chain.Certs {
			if k > 0 && !spki.Implies(sc.Cert.Tag, chain.Certs[k-1].Cert.Tag) {
				return nil, fmt.Errorf("%w: certificate %d grants %s, its parent only %s", ErrGrantWider, k, sc.Cert.Tag, chain.Certs[k-1].Cert.Tag)
			}
			lane.Certs = append(lane.Certs, sc.Cert.Hash())
		}
		lane.NotAfter = earliest(lane.NotAfter, chain.Result.Validity.NotAfter)
	}

	// The spender holds its key now.
	if !o.Signature.Signer.Equal(o.Spender) {
		return nil, fmt.Errorf("%w: signed by another key than the spender's", ErrBadOpenSignature)
	}
	if err := o.Signature.VerifyObject(OpenChallenge(pol.Vendor, id, o.Lane, o.Nonce, o.End)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadOpenSignature, err)
	}

	if o.End != 0 {
		lane.End = o.End
	}
	lane.Keys = []spki.KeyHash{b.Owner}
	if lane.Spender != b.Owner {
		lane.Keys = append(lane.Keys, lane.Spender)
	}
	for _, sc := range chainCerts {
		// Only the certificates of the chain found: others in the open
		// authorize nothing, and must not change what the lane is recorded
		// under (a revoked lane's mark belongs to its principals).
		if k := sc.Cert.Subject.Hash; !slices.Contains(lane.Keys, k) {
			lane.Keys = append(lane.Keys, k)
		}
	}
	if r := pol.Revocations; r != nil {
		for _, h := range lane.Certs {
			if r.CertRevoked(h) {
				return nil, fmt.Errorf("%w: certificate %x…", ErrRevoked, h[:6])
			}
		}
		for _, k := range lane.Keys {
			if r.KeyRevoked(k) {
				return nil, fmt.Errorf("%w: key %s", ErrRevoked, k)
			}
		}
	}
	return lane, nil
}

// verifyBlind checks an anonymous book's blind funding proof with the
// policy's BlindFunding; the proof's hash joins the lane's revocable
// principals.
func verifyBlind(o *Open, pol *OpenPolicy, lane *OpenedLane) error {
	switch {
	case o.Funding != nil:
		return fmt.Errorf("%w: both a book certificate and a blind funding proof", ErrBadOpen)
	case o.User != nil:
		return fmt.Errorf("%w: an anonymous book's open carries no user certificate", ErrBadOpen)
	case pol.Blind == nil:
		return fmt.Errorf("%w: this vendor does not take anonymous books (it knows no denominations)", ErrBookNotFunded)
	}
	h, err := pol.Blind.VerifyBlindFunding(o.Blind, o.Book.Book, pol.Now)
	if err != nil {
		return err
	}
	lane.Certs = append(lane.Certs, h)
	lane.Anonymous = true
	return nil
}

// userAccount reads (ecoupons-user (account "A") (currency CUR)) and checks
// the currency.
func userAccount(t *spki.Tag, currency string) (string, error) {
	if t.Kind != spki.TagList || len(t.Elems) != 3 || t.Elems[0].Kind != spki.TagAtom || string(t.Elems[0].Atom.Value) != "ecoupons-user" {
		return "", errors.New("user certificate tag is not (ecoupons-user (account …) (currency …))")
	}
	get := func(e *spki.Tag, name string) (string, bool) {
		if e.Kind != spki.TagList || len(e.Elems) != 2 || e.Elems[0].Kind != spki.TagAtom || string(e.Elems[0].Atom.Value) != name || e.Elems[1].Kind != spki.TagAtom {
			return "", false
		}
		return string(e.Elems[1].Atom.Value), true
	}
	acct, ok1 := get(t.Elems[1], "account")
	cur, ok2 := get(t.Elems[2], "currency")
	if !ok1 || !ok2 {
		return "", errors.New("user certificate tag lacks a concrete account and currency")
	}
	if cur != currency {
		return "", fmt.Errorf("user is certified for %s, the book is in %s", cur, currency)
	}
	return acct, nil
}

func earliest(a, b time.Time) time.Time {
	if b.IsZero() || (!a.IsZero() && a.Before(b)) {
		return a
	}
	return b
}
