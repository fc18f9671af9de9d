package coupons

import (
	"crypto"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecoupons/ecoupons/spki"
)

// BookVersion is the version of the commitment format.
const BookVersion = "1"

// LabelSeed is the HKDF info prefix of lane seeds derived from a master
// seed: seed_s = HKDF-SHA256(master, salt, LabelSeed || be32(s)).
const LabelSeed = "ecoupons lane seed v1"

// Book is a coupon book's public commitment, the object the owner signs:
//
//	(ecoupons-book (version "1") (vendor news.example)
//	  (broker (hash sha256 |…|)) (owner (hash sha256 |…|))
//	  (salt |32 bytes|) (lanes "k") (length "L") (unit "0.001" EUR)
//	  (not-after "2026-12-31_23:59:59") (root |32 bytes|))
//
// Its ID is the SHA-256 of that canonical S-expression.
type Book struct {
	Vendor   string       // the only vendor that accepts the book
	Broker   spki.KeyHash // the broker that certified the owner and redeems the coupons
	Owner    spki.KeyHash // the owner's key, which signs the commitment
	Salt     [32]byte     // random; makes every lane tag (and so every chain) unique
	Lanes    uint32       // k, number of lanes (1 … MaxLanes)
	Length   uint32       // L, coupons per lane (a power of two, 2 … 2^30)
	Currency string       // ISO 4217 code
	Unit     int64        // value of one coupon, in nanos (see NanosPerUnit)
	NotAfter time.Time    // coupons are not accepted after this time (UTC, whole seconds)
	Root     [32]byte     // Merkle root of the lane anchors

	id  [32]byte
	raw spki.List // as parsed, so that the ID hashes the received bytes
}

// Validate checks the fields' ranges.
func (b *Book) Validate() error {
	switch {
	case !validVendor(b.Vendor):
		return fmt.Errorf("%w: vendor %q must be a host name (letters, digits, '-', '.', at most 253 bytes)", ErrBadBook, b.Vendor)
	case b.Lanes == 0 || b.Lanes > MaxLanes:
		return fmt.Errorf("%w: %d lanes (1 to %d)", ErrBadBook, b.Lanes, MaxLanes)
	case b.Unit <= 0:
		return fmt.Errorf("%w: coupon unit must be positive", ErrBadBook)
	case b.NotAfter.IsZero():
		return fmt.Errorf("%w: a book needs an expiry (not-after)", ErrBadBook)
	}
	if err := checkLength(b.Length); err != nil {
		return err
	}
	if err := CheckCurrency(b.Currency); err != nil {
		return fmt.Errorf("%w: %w", ErrBadBook, err)
	}
	if _, err := b.FaceValue(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadBook, err)
	}
	return nil
}

// validVendor accepts lower-case DNS host names.
func validVendor(v string) bool {
	if v == "" || len(v) > 253 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return v[0] != '.' && v[0] != '-' && v[len(v)-1] != '.'
}

// FaceValue is k × L × unit in nanos: the most the book can ever pay.
func (b *Book) FaceValue() (int64, error) {
	return MulAmount(uint64(b.Lanes)*uint64(b.Length), b.Unit)
}

// Sexp returns the commitment S-expression.
func (b *Book) Sexp() spki.List {
	if b.raw != nil {
		return b.raw
	}
	return spki.L("ecoupons-book",
		spki.L("version", BookVersion),
		spki.L("vendor", b.Vendor),
		spki.L("broker", b.Broker.Sexp()),
		spki.L("owner", b.Owner.Sexp()),
		spki.L("salt", b.Salt[:]),
		spki.L("lanes", strconv.FormatUint(uint64(b.Lanes), 10)),
		spki.L("length", strconv.FormatUint(uint64(b.Length), 10)),
		spki.L("unit", FormatAmount(b.Unit), b.Currency),
		spki.L("not-after", spki.FormatDate(b.NotAfter)),
		spki.L("root", b.Root[:]),
	)
}

// ID returns the book's identifier, SHA-256 of the canonical commitment.
func (b *Book) ID() [32]byte {
	if b.id == ([32]byte{}) {
		b.id = spki.ObjectHash(b.Sexp())
	}
	return b.id
}

// LaneTag returns the tag of lane s.
func (b *Book) LaneTag(s uint32) LaneTag { return NewLaneTag(b.Salt, s) }

// ParseBook parses and validates a commitment.
func ParseBook(x spki.Sexp) (*Book, error) {
	l, ok := x.(spki.List)
	if !ok || !l.Is("ecoupons-book") || len(l) != 11 {
		return nil, fmt.Errorf("%w: expected (ecoupons-book …) with 10 fields", ErrBadBook)
	}
	f := fields{list: l[1:]}
	b := &Book{}
	if v := f.str("version"); v != BookVersion && f.err == nil {
		f.err = fmt.Errorf("%w: version %q (this is version %s)", ErrBadBook, v, BookVersion)
	}
	b.Vendor = f.str("vendor")
	b.Broker = f.hash("broker")
	b.Owner = f.hash("owner")
	copy(b.Salt[:], f.bytes("salt", 32))
	b.Lanes = f.uint32("lanes")
	b.Length = f.uint32("length")
	unit := f.next("unit", 3)
	if f.err == nil {
		amt, ok1 := plain(unit[1])
		cur, ok2 := plain(unit[2])
		if !ok1 || !ok2 {
			f.err = fmt.Errorf("%w: (unit \"amount\" CUR)", ErrBadBook)
		} else if b.Unit, f.err = ParseAmount(amt); f.err == nil {
			b.Currency = cur
		} else {
			f.err = fmt.Errorf("%w: unit: %w", ErrBadBook, f.err)
		}
	}
	if s := f.str("not-after"); f.err == nil {
		if b.NotAfter, f.err = spki.ParseDate(s); f.err != nil {
			f.err = fmt.Errorf("%w: not-after: %w", ErrBadBook, f.err)
		}
	}
	copy(b.Root[:], f.bytes("root", 32))
	if f.err != nil {
		return nil, f.err
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	b.raw = l
	return b, nil
}

// SignedBook is a commitment with the owner's signature; on the wire
// (sequence (ecoupons-book …) (signature …)).
type SignedBook struct {
	Book      *Book
	Signature *spki.Signature
}

// Sign signs the commitment with the owner's key.
func (b *Book) Sign(owner crypto.Signer) (*SignedBook, error) {
	pub, err := spki.NewPublicKey(owner.Public())
	if err != nil {
		return nil, err
	}
	if pub.Hash() != b.Owner {
		return nil, fmt.Errorf("%w: signer is not the book's owner", spki.ErrWrongSigner)
	}
	sig, err := spki.Sign(owner, b.Sexp())
	if err != nil {
		return nil, err
	}
	return &SignedBook{Book: b, Signature: sig}, nil
}

// Verify checks the owner's signature over the commitment.
func (sb *SignedBook) Verify() error { return sb.VerifyCached(nil) }

// VerifyCached is Verify with a cache of verified signatures (may be nil).
func (sb *SignedBook) VerifyCached(cache spki.VerifyCache) error {
	if sb.Signature.Signer.Hash() != sb.Book.Owner {
		return fmt.Errorf("%w: book signed by %s, owner is %s", spki.ErrWrongSigner, sb.Signature.Signer.Hash(), sb.Book.Owner)
	}
	return sb.Signature.VerifyCached(sb.Book.ID(), cache)
}

// Sexp returns (sequence (ecoupons-book …) (signature …)).
func (sb *SignedBook) Sexp() spki.List {
	return spki.L("sequence", sb.Book.Sexp(), sb.Signature.Sexp())
}

// ParseSignedBook parses a signed commitment and checks that the signature
// names it. It does not verify the signature: call Verify.
func ParseSignedBook(x spki.Sexp) (*SignedBook, error) {
	l, ok := x.(spki.List)
	if !ok || !l.Is("sequence") || len(l) != 3 {
		return nil, fmt.Errorf("%w: expected (sequence (ecoupons-book …) (signature …))", ErrBadBook)
	}
	b, err := ParseBook(l[1])
	if err != nil {
		return nil, err
	}
	sig, err := spki.ParseSignature(l[2])
	if err != nil {
		return nil, err
	}
	if sig.Hash != b.ID() {
		return nil, fmt.Errorf("%w: the signature is over another book", spki.ErrHashMismatch)
	}
	return &SignedBook{Book: b, Signature: sig}, nil
}

// Params are what a user chooses when creating a book.
type Params struct {
	Vendor   string
	Broker   spki.KeyHash
	Owner    spki.KeyHash
	Lanes    uint32
	Length   uint32
	Currency string
	Unit     int64
	NotAfter time.Time
}

// Secrets are what the owner keeps: the master seed from which every lane
// seed derives. Never log them.
type Secrets struct {
	Master [32]byte
	Salt   [32]byte
}

// Seed returns lane s's seed w_{s,L}.
func (sec *Secrets) Seed(s uint32) Value {
	var info [len(LabelSeed) + 4]byte
	copy(info[:], LabelSeed)
	binary.BigEndian.PutUint32(info[len(LabelSeed):], s)
	k, err := hkdf.Key(sha256.New, sec.Master[:], sec.Salt[:], string(info[:]), 32)
	if err != nil {
		panic("coupons: HKDF failed: " + err.Error()) // cannot happen for 32-byte outputs
	}
	var v Value
	copy(v[:], k)
	return v
}

// Create makes a new book: random salt and master seed, every lane's chain
// walked once to its anchor (k × L hashes, spread over all CPUs), the
// Merkle root. progress, if not nil, is called with the number of lanes
// done so far (from several goroutines, never concurrently with itself).
// The returned anchors are needed to build lane-open proofs.
func Create(p Params, progress func(done, total uint32)) (*Book, *Secrets, []Value, error) {
	sec := &Secrets{}
	if _, err := rand.Read(sec.Master[:]); err != nil {
		return nil, nil, nil, err
	}
	if _, err := rand.Read(sec.Salt[:]); err != nil {
		return nil, nil, nil, err
	}
	b, anchors, err := CreateWithSecrets(p, sec, progress)
	if err != nil {
		return nil, nil, nil, err
	}
	return b, sec, anchors, nil
}

// CreateWithSecrets is Create with given secrets: it rebuilds a book from
// a backup of its master seed and salt (and makes test vectors
// reproducible). Secrets must come from a cryptographic random source.
func CreateWithSecrets(p Params, sec *Secrets, progress func(done, total uint32)) (*Book, []Value, error) {
	b := &Book{Vendor: p.Vendor, Broker: p.Broker, Owner: p.Owner, Lanes: p.Lanes, Length: p.Length,
		Currency: p.Currency, Unit: p.Unit, NotAfter: p.NotAfter.UTC().Truncate(time.Second), Salt: sec.Salt}
	if err := b.Validate(); err != nil {
		return nil, nil, err
	}
	anchors := ComputeAnchors(b, sec, progress)
	b.Root = MerkleRoot(anchors)
	return b, anchors, nil
}

// ComputeAnchors walks every lane from its seed to its anchor.
func ComputeAnchors(b *Book, sec *Secrets, progress func(done, total uint32)) []Value {
	anchors := make([]Value, b.Lanes)
	var next, done atomic.Uint32
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), int(b.Lanes)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				s := next.Add(1) - 1
				if s >= b.Lanes {
					return
				}
				tag := b.LaneTag(s)
				anchors[s] = Walk(&tag, b.Length, sec.Seed(s), 0)
				d := done.Add(1)
				if progress != nil {
					mu.Lock()
					progress(d, b.Lanes)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return anchors
}
