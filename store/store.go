// Package store keeps a vendor's spent state: for every opened lane, the
// last accepted coupon, the binding awaiting its check, the lane's credit
// and what the gate needs to verify payments after a restart. The store
// is the truth; caches in front of it may forget.
//
// Three implementations: Memory (tests), Bolt (embedded, durable, group
// commit) and Redis (shared by a fleet, in package store's redis.go), and
// a wrapper, Leased, for a store one process owns (Bolt). Every
// implementation makes Advance an atomic compare-and-set that is durable
// when it returns, or, for Leased, covered when it returns by a
// reservation made durable before (Record.Lease: after a crash, the gate
// refuses every coupon up to it), so that a coupon is never accepted
// twice, across goroutines, processes, nodes or crashes.
package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// Errors of stores.
var (
	// ErrConflict means the lane moved since it was read: another request
	// spent a coupon first. The caller re-reads and re-verifies.
	ErrConflict = errors.New("store: lane changed concurrently")
	// ErrNotFound means the lane was never opened here.
	ErrNotFound = errors.New("store: lane not opened")
	// ErrCorrupt is a stored record that does not decode.
	ErrCorrupt = errors.New("store: corrupt record")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrRevoked means the lane is marked revoked (MarkRevoked): a
	// certificate or key of the delegation chain it was opened under is
	// on a revocation list, so no payment under that chain is accepted.
	ErrRevoked = errors.New("store: the lane's delegation was revoked")
)

// Meta is what the gate learned when it verified the lane's open, kept so
// that payments verify without the open document.
type Meta struct {
	Tag      coupons.LaneTag
	Anchor   coupons.Value
	Length   uint32
	Unit     int64
	Currency string
	NotAfter time.Time
	Spender  spki.KeyHash
	Owner    spki.KeyHash
	Grant    [32]byte // hash of the last delegation certificate (zero: the owner spends)
	Cap      int64    // the grant's spending cap in nanos (0: none)
	Nonce    string   // the challenge nonce the lane was opened with; request digests include it
	// Vendor is the SHA-256 of the vendor name the lane was opened for, so
	// that a gate sharing a store with another vendor's gate refuses its
	// lanes (zero in records from before it was kept).
	Vendor [32]byte
	// Certs and Keys are the lane's revocable principals: the hashes of
	// the certificates (user certificate, then the delegation chain) and
	// the key hashes (owner, spender, delegates) its open went through
	// (coupons.OpenedLane.Certs and .Keys), kept so that any gate sharing
	// the store, or this one after a restart, can check them against the
	// revocation lists it installs (empty in records before version 3).
	Certs [][32]byte
	Keys  []spki.KeyHash
	// Revoked marks a lane one of whose principals a gate found revoked
	// (MarkRevoked). It belongs to the principals: a Reopen that carries
	// other principals (a new open of the lane under another chain, a
	// takeover) replaces them and clears it.
	Revoked bool
	// End is the last coupon the spender holds (its granted portion's end,
	// 1 … Length): coupon End may come without a request binding, as the
	// spender knows no next value. Length (or 0, read as Length) when the
	// spender holds the whole lane.
	End uint32
}

// Bounds of a lane's principals in a record.
const (
	// MaxCerts is the most certificate hashes a record holds.
	MaxCerts = 32
	// MaxKeys is the most key hashes a record holds.
	MaxKeys = 32
)

// ErrTooManyPrincipals means a lane's open went through more
// certificates or keys than a record holds (MaxCerts, MaxKeys).
var ErrTooManyPrincipals = errors.New("store: too many certificates or keys in the lane's chain")

// Equal reports whether two metas are the same, principals included.
func (m *Meta) Equal(o *Meta) bool {
	return m.Tag == o.Tag && m.Anchor == o.Anchor && m.Length == o.Length && m.Unit == o.Unit &&
		m.Currency == o.Currency && m.NotAfter.Equal(o.NotAfter) && m.Spender == o.Spender && m.Owner == o.Owner &&
		m.Grant == o.Grant && m.Cap == o.Cap && m.Nonce == o.Nonce && m.Vendor == o.Vendor &&
		m.Revoked == o.Revoked && m.PortionEnd() == o.PortionEnd() && m.SamePrincipals(o.Certs, o.Keys)
}

// PortionEnd is the last coupon the lane's spender holds: End, or Length
// when End is 0 or the whole lane.
func (m *Meta) PortionEnd() uint32 {
	if m.End == 0 || m.End > m.Length {
		return m.Length
	}
	return m.End
}

// SamePrincipals reports whether the lane's principals are certs and keys,
// in that order.
func (m *Meta) SamePrincipals(certs [][32]byte, keys []spki.KeyHash) bool {
	return slices.Equal(m.Certs, certs) && slices.Equal(m.Keys, keys)
}

// Equal reports whether two records are the same.
func (r *Record) Equal(o *Record) bool {
	return r.Meta.Equal(&o.Meta) && r.State == o.State && r.Credit == o.Credit && r.Spent == o.Spent && r.Lease == o.Lease
}

// MaxNonce is the longest lane-open nonce a record holds.
const MaxNonce = coupons.MaxNonceLen

// Record is a lane's stored state.
type Record struct {
	Meta   Meta
	State  coupons.LaneState
	Credit uint32 // coupons paid for requests the upstream failed (5xx), owed back
	Spent  uint32 // coupons accepted in total (= State.Last)
	// Lease is a lane's reservation (record version 4; 0 in older ones).
	//
	// Written (Advance, Open, Reopen): the reservation the caller asks
	// for, an index above State.Last: a store that holds reservations
	// (Leased) may then accept later Advances up to Lease from memory,
	// having made only the reservation durable. 0, or at most State.Last:
	// no reservation. A plain store (Memory, Redis, Bolt) just stores it.
	//
	// Read back: Lease > State.Last in a record that a process left
	// without releasing its reservation (a crash) means that coupons up
	// to Lease may already have been accepted and served: the gate must
	// refuse every coupon at or below Lease on the lane (the client
	// resumes at Lease+1). A store holding the lane's reservation itself
	// returns 0 (Leased.Get): it has nothing to refuse.
	Lease uint32
}

// Store is the spent-state store of a gate.
type Store interface {
	// Open records a verified lane with its first record (NewRecord, or
	// one already at the position a broker says was redeemed) if it is not
	// known yet, and returns its record (the existing one when it was
	// opened before). It is durable when it returns. proof, the Merkle
	// proof of the lane's anchor that the broker needs on its first
	// redemption, is kept in the same durable write (when the lane is
	// created, or when none is kept yet): a lane open is one write.
	Open(ctx context.Context, id coupons.LaneID, first Record, proof ...[32]byte) (Record, error)
	// Get returns a lane's record, or ErrNotFound.
	Get(ctx context.Context, id coupons.LaneID) (Record, error)
	// Advance replaces the lane's record by next if its last accepted index
	// and its credit are still prevLast and prevCredit (what the caller
	// read), else returns ErrConflict: a credit given back by another gate
	// is never overwritten. next must keep the stored principals (Certs
	// and Keys), else ErrConflict: the lane was opened again under another
	// chain (Reopen) since the caller read it, and a write computed under
	// the old chain must not bring it back. If the stored lane is marked
	// revoked and next lacks the mark, it returns ErrRevoked: nothing is
	// written. When next.Meta.Cap > 0, charge nanos are added
	// to the grant's total spending, refused with coupons.ErrCapExceeded
	// beyond the cap. It is durable when it returns, or within a
	// reservation the store holds (next.Lease, Record.Lease, Leased).
	Advance(ctx context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next Record, charge int64) error
	// Close releases the store.
	Close() error

	// The redemption outbox. Every Advance marks its lane pending; the
	// gate's redemption worker reads pending lanes, has the broker pay them
	// and records what was paid. Nothing is lost if either side crashes:
	// a lane stays pending until Redeemed covers its last coupon, and the
	// broker pays each coupon once however often it is submitted.

	// SetProof keeps the Merkle proof of a lane's anchor (from its open),
	// which the broker needs on the lane's first redemption.
	SetProof(ctx context.Context, id coupons.LaneID, proof [][32]byte) error
	// Pending returns up to limit lanes with accepted coupons the broker
	// has not paid yet and whose next attempt is due at now (Postpone),
	// those that have waited longest first: a lane waits from when it
	// became pending, was last sent (Redeemed) or, when postponed, from
	// the end of its postponement; lane IDs only order lanes due at the
	// same instant.
	Pending(ctx context.Context, now time.Time, limit int) ([]Pending, error)
	// Redeemed records that the broker paid lane id up to index (or had
	// already). A lane whose last coupon is covered leaves the pending
	// set; one with newer coupons goes to the back of the order, its
	// count of temporary failures reset. A refusal kept for the lane
	// (Refuse) is forgotten.
	Redeemed(ctx context.Context, id coupons.LaneID, index uint32) error
	// Postpone records a temporary failure to redeem lane id (the broker
	// unreachable or refusing for now): the lane stays pending, Pending
	// skips it until until, and its count of consecutive temporary
	// failures (Pending.Tries) goes up by one. A lane that is not pending
	// is left alone.
	Postpone(ctx context.Context, id coupons.LaneID, until time.Time) error
	// Refuse records that the broker refused lane id for good (an unknown
	// or closed book, a coupon that is not the lane's, …): the lane leaves
	// the pending set and the refusal is kept, replacing an earlier one,
	// until the lane is paid. A later Advance makes the lane pending again
	// (new coupons are a new claim), at the back of the order.
	Refuse(ctx context.Context, r Refusal) error
	// Refusals returns up to limit refused lanes (Refuse) with their
	// reasons, in lane-key order, for the operator.
	Refusals(ctx context.Context, limit int) ([]Refusal, error)
	// Reopen is Advance for a lane opened again, whose open the caller
	// verified: next may carry other principals than the stored ones (a
	// takeover by another spender, or a record from before version 3
	// gaining them), which it replaces, clearing a revoked mark (the mark
	// concerns the replaced principals). Keeping a marked lane's principals
	// without the mark is refused with ErrRevoked, as by Advance: a gate
	// with an older revocation list cannot reopen a lane under the chain
	// another gate found revoked. No cap is charged. It is durable when it
	// returns.
	Reopen(ctx context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next Record) error
	// MarkRevoked marks the lane revoked if its stored principals are
	// still certs and keys (those the caller found revoked); ErrConflict
	// if they are others (the lane was opened again under another chain:
	// re-read and re-check), ErrNotFound if there is no such lane. Marking
	// a marked lane changes nothing. From then on Advance refuses, with
	// ErrRevoked, any write that keeps these principals without the mark,
	// so a gate acting on a record read before the mark cannot undo it;
	// Reopen with other principals (a takeover by another spender) clears
	// it. It is durable when it returns.
	MarkRevoked(ctx context.Context, id coupons.LaneID, certs [][32]byte, keys []spki.KeyHash) error
	// ID names this spent state: random, made once and kept with it, so
	// that gates sharing the store (a fleet on one Redis) share it, and
	// gates with their own stores never do. A broker pins a reserved lane
	// to it (the online validation mode).
	ID(ctx context.Context) (string, error)
}

// newID returns a fresh store identity.
func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Pending is a lane to redeem: its highest accepted coupon, what the
// broker already paid, and the anchor and proof for a first redemption.
type Pending struct {
	ID       coupons.LaneID
	Index    uint32
	Value    coupons.Value
	Redeemed uint32
	Anchor   coupons.Value
	Proof    [][32]byte
	// Tries counts the temporary failures to redeem the lane since it was
	// last paid (Postpone), for the caller's back-off.
	Tries uint32
}

// Refusal is a lane the broker refused to pay for good, kept for the
// operator (Store.Refuse, Store.Refusals).
type Refusal struct {
	ID    coupons.LaneID
	Index uint32 // the coupon that was refused
	// Code is the broker's reason code (e.g. unknown_book), Message its
	// explanation (at most MaxRefusalMessage bytes are kept).
	Code, Message string
	At            time.Time // when the gate recorded the refusal
}

// MaxRefusalMessage is the longest refusal message a store keeps; longer
// ones are cut.
const MaxRefusalMessage = 512

// maxRefusalCode is the longest reason code a store keeps.
const maxRefusalCode = 64

// encodeRefusal encodes a refusal's fields after its lane:
// be64(at, unix nanoseconds) ‖ be32(index) ‖ len(code) ‖ code ‖ message.
func encodeRefusal(r Refusal) []byte {
	code, msg := r.Code, r.Message
	if len(code) > maxRefusalCode {
		code = code[:maxRefusalCode]
	}
	if len(msg) > MaxRefusalMessage {
		msg = msg[:MaxRefusalMessage]
	}
	b := make([]byte, 0, 13+len(code)+len(msg))
	b = binary.BigEndian.AppendUint64(b, uint64(r.At.UnixNano()))
	b = binary.BigEndian.AppendUint32(b, r.Index)
	b = append(b, byte(len(code)))
	b = append(b, code...)
	return append(b, msg...)
}

// decodeRefusal decodes what encodeRefusal made, for the lane whose store
// key is key.
func decodeRefusal(key, b []byte) (Refusal, error) {
	if len(key) != 36 || len(b) < 13 || len(b) < 13+int(b[12]) {
		return Refusal{}, fmt.Errorf("%w: refusal of %d bytes", ErrCorrupt, len(b))
	}
	r := Refusal{ID: laneOfKey(key), At: time.Unix(0, int64(binary.BigEndian.Uint64(b))).UTC(), Index: binary.BigEndian.Uint32(b[8:])}
	n := int(b[12])
	r.Code, r.Message = string(b[13:13+n]), string(b[13+n:])
	return r, nil
}

// laneOfKey is the lane whose store key (Key) is k, 36 bytes.
func laneOfKey(k []byte) coupons.LaneID {
	var id coupons.LaneID
	copy(id.Book[:], k[:32])
	id.Lane = binary.BigEndian.Uint32(k[32:36])
	return id
}

// queued is a pending lane's place in the redemption order: when it is
// due (unix nanoseconds; it has waited since then) and its count of
// temporary failures. The bolt store keeps it as the dirty mark's value,
// be64(due) ‖ be32(tries); an empty value (a mark from before the order
// was kept) is due at 0, first.
type queued struct {
	due   int64
	tries uint32
}

func (q queued) encode() []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(make([]byte, 0, 12), uint64(q.due)), q.tries)
}

func decodeQueued(b []byte) queued {
	if len(b) != 12 {
		return queued{}
	}
	return queued{due: int64(binary.BigEndian.Uint64(b)), tries: binary.BigEndian.Uint32(b[8:])}
}

// MaxProof is the longest Merkle proof a store keeps (2^24 lanes).
const MaxProof = 24

func encodeProof(p [][32]byte) ([]byte, error) {
	if len(p) > MaxProof {
		return nil, fmt.Errorf("store: proof of %d hashes", len(p))
	}
	b := make([]byte, 0, 32*len(p))
	for _, h := range p {
		b = append(b, h[:]...)
	}
	return b, nil
}

func decodeProof(b []byte) ([][32]byte, error) {
	if len(b)%32 != 0 || len(b)/32 > MaxProof {
		return nil, fmt.Errorf("%w: proof of %d bytes", ErrCorrupt, len(b))
	}
	p := make([][32]byte, len(b)/32)
	for i := range p {
		copy(p[i][:], b[32*i:])
	}
	return p, nil
}

// recordVersion is the first byte of an encoded record. Version 1
// records (no vendor), version 2 records (no principals) and version 3
// records (no lease) are still read; a gate makes the lane be opened
// again before it takes a payment on a version 1 or 2 one
// (docs/PROTOCOL.md, Spent state).
const recordVersion = 4

// The layout of an encoded record, every offset in one place (the bolt
// store's in-place compare-and-set, the Redis scripts and the decoder
// use these). Version 1 is the fixed part up to recordLenV1; version 2
// appends the vendor hash (recordLenV2); version 3 appends a flags byte,
// the spender's portion end (be32; 0 for the whole lane), then the counts
// of certificate and key hashes (a byte each, at recordTailAtV3) and the
// hashes, 32 bytes each; version 4 inserts the lease (be32) between the
// portion end and the counts (at recordTailAt). The position and the
// credit keep their offsets in every version.
const (
	recordVersionAt    = 0
	recordTagAt        = recordVersionAt + 1
	recordAnchorAt     = recordTagAt + 16
	recordLengthAt     = recordAnchorAt + 32
	recordUnitAt       = recordLengthAt + 4
	recordCurrencyAt   = recordUnitAt + 8
	recordNotAfterAt   = recordCurrencyAt + 3
	recordSpenderAt    = recordNotAfterAt + 8
	recordOwnerAt      = recordSpenderAt + 32
	recordGrantAt      = recordOwnerAt + 32
	recordCapAt        = recordGrantAt + 32
	recordNonceAt      = recordCapAt + 8 // length byte, then MaxNonce bytes, zero-padded
	recordLastAt       = recordNonceAt + 1 + MaxNonce
	recordLastValueAt  = recordLastAt + 4
	recordPrevDigestAt = recordLastValueAt + 32
	recordPrevMACAt    = recordPrevDigestAt + 32
	recordHasPrevAt    = recordPrevMACAt + 16
	recordCreditAt     = recordHasPrevAt + 1
	recordSpentAt      = recordCreditAt + 4
	recordLenV1        = recordSpentAt + 4
	recordVendorAt     = recordLenV1 // version 2
	recordLenV2        = recordVendorAt + 32
	recordFlagsAt      = recordLenV2        // version 3: flags
	recordEndAt        = recordFlagsAt + 1  // version 3: the spender's portion end
	recordTailAtV3     = recordEndAt + 4    // version 3: counts of certs and keys
	recordLeaseAt      = recordEndAt + 4    // version 4: the lease
	recordTailAt       = recordLeaseAt + 4  // version 4: counts of certs and keys
	recordFixedLenV3   = recordTailAtV3 + 2 // fixed part of a version 3 record
	recordFixedLen     = recordTailAt + 2   // fixed part of a version 4 record
)

// Flags of a version 3 or 4 record.
const (
	flagRevoked byte = 1 << iota
	flagsKnown       = flagRevoked
)

// MarshalBinary encodes a record (version 4).
func (r *Record) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, recordFixedLen+32*(len(r.Meta.Certs)+len(r.Meta.Keys))))
}

// AppendBinary appends the encoded record to b: a fixed big-endian layout,
// then the lane's principals.
func (r *Record) AppendBinary(b []byte) ([]byte, error) {
	m := &r.Meta
	if len(m.Currency) != 3 {
		return nil, fmt.Errorf("store: currency %q", m.Currency)
	}
	if len(m.Certs) > MaxCerts || len(m.Keys) > MaxKeys {
		return nil, fmt.Errorf("%w: %d certificates, %d keys", ErrTooManyPrincipals, len(m.Certs), len(m.Keys))
	}
	b = append(b, recordVersion)
	b = append(b, m.Tag[:]...)
	b = append(b, m.Anchor[:]...)
	b = binary.BigEndian.AppendUint32(b, m.Length)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Unit))
	b = append(b, m.Currency...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.NotAfter.Unix()))
	b = append(b, m.Spender[:]...)
	b = append(b, m.Owner[:]...)
	b = append(b, m.Grant[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Cap))
	if len(m.Nonce) > MaxNonce {
		return nil, fmt.Errorf("store: nonce of %d bytes", len(m.Nonce))
	}
	b = append(b, byte(len(m.Nonce)))
	b = append(b, m.Nonce...)
	b = append(b, make([]byte, MaxNonce-len(m.Nonce))...)
	s := &r.State
	b = binary.BigEndian.AppendUint32(b, s.Last)
	b = append(b, s.LastValue[:]...)
	b = append(b, s.PrevDigest[:]...)
	b = append(b, s.PrevMAC[:]...)
	if s.HasPrev {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, r.Credit)
	b = binary.BigEndian.AppendUint32(b, r.Spent)
	b = append(b, m.Vendor[:]...)
	var flags byte
	if m.Revoked {
		flags |= flagRevoked
	}
	b = append(b, flags)
	end := m.End
	if end >= m.Length {
		end = 0 // the whole lane
	}
	b = binary.BigEndian.AppendUint32(b, end)
	b = binary.BigEndian.AppendUint32(b, r.Lease)
	return appendPrincipals(b, m.Certs, m.Keys), nil
}

// appendPrincipals appends the tail of a version 4 record (recordTailAt):
// the counts, then the hashes. Callers check the bounds.
func appendPrincipals(b []byte, certs [][32]byte, keys []spki.KeyHash) []byte {
	b = append(b, byte(len(certs)), byte(len(keys)))
	for _, h := range certs {
		b = append(b, h[:]...)
	}
	for _, h := range keys {
		b = append(b, h[:]...)
	}
	return b
}

// recordVersionOf checks an encoded record's version and length (not its
// fields) and returns its version.
func recordVersionOf(b []byte) (int, error) {
	switch {
	case len(b) == recordLenV1 && b[0] == 1:
		return 1, nil
	case len(b) == recordLenV2 && b[0] == 2:
		return 2, nil
	case len(b) >= recordFixedLenV3 && b[0] == 3:
		nc, nk := int(b[recordTailAtV3]), int(b[recordTailAtV3+1])
		if nc <= MaxCerts && nk <= MaxKeys && len(b) == recordFixedLenV3+32*(nc+nk) {
			return 3, nil
		}
	case len(b) >= recordFixedLen && b[0] == 4:
		nc, nk := int(b[recordTailAt]), int(b[recordTailAt+1])
		if nc <= MaxCerts && nk <= MaxKeys && len(b) == recordFixedLen+32*(nc+nk) {
			return 4, nil
		}
	}
	return 0, fmt.Errorf("%w: %d bytes, version %d", ErrCorrupt, len(b), firstByte(b))
}

// UnmarshalBinary decodes a record of any version.
func (r *Record) UnmarshalBinary(b []byte) error {
	version, err := recordVersionOf(b)
	if err != nil {
		return err
	}
	be32 := func(at int) uint32 { return binary.BigEndian.Uint32(b[at:]) }
	be64 := func(at int) uint64 { return binary.BigEndian.Uint64(b[at:]) }
	m := &r.Meta
	copy(m.Tag[:], b[recordTagAt:])
	copy(m.Anchor[:], b[recordAnchorAt:])
	m.Length = be32(recordLengthAt)
	m.Unit = int64(be64(recordUnitAt))
	m.Currency = string(b[recordCurrencyAt : recordCurrencyAt+3])
	m.NotAfter = time.Unix(int64(be64(recordNotAfterAt)), 0).UTC()
	copy(m.Spender[:], b[recordSpenderAt:])
	copy(m.Owner[:], b[recordOwnerAt:])
	copy(m.Grant[:], b[recordGrantAt:])
	m.Cap = int64(be64(recordCapAt))
	n := int(b[recordNonceAt])
	nonce := b[recordNonceAt+1 : recordNonceAt+1+MaxNonce]
	if n > MaxNonce {
		return fmt.Errorf("%w: nonce length", ErrCorrupt)
	}
	for _, c := range nonce[n:] {
		if c != 0 {
			return fmt.Errorf("%w: nonce padding", ErrCorrupt)
		}
	}
	m.Nonce = string(nonce[:n])
	s := &r.State
	s.Last = be32(recordLastAt)
	copy(s.LastValue[:], b[recordLastValueAt:])
	copy(s.PrevDigest[:], b[recordPrevDigestAt:])
	copy(s.PrevMAC[:], b[recordPrevMACAt:])
	switch b[recordHasPrevAt] {
	case 0:
		s.HasPrev = false
	case 1:
		s.HasPrev = true
	default:
		return fmt.Errorf("%w: bad flag", ErrCorrupt)
	}
	r.Credit = be32(recordCreditAt)
	r.Spent = be32(recordSpentAt)
	m.Vendor = [32]byte{}
	m.Certs, m.Keys, m.Revoked, m.End = nil, nil, false, 0
	r.Lease = 0
	if version >= 2 {
		copy(m.Vendor[:], b[recordVendorAt:])
	}
	if version >= 3 {
		flags := b[recordFlagsAt]
		if flags&^flagsKnown != 0 {
			return fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
		}
		m.Revoked = flags&flagRevoked != 0
		m.End = be32(recordEndAt)
		if version >= 4 {
			r.Lease = be32(recordLeaseAt)
		}
		t := tailAt(byte(version))
		nc, nk := int(b[t]), int(b[t+1])
		p := b[t+2:] // recordVersionOf checked its length
		if nc > 0 {
			m.Certs = make([][32]byte, nc)
			for i := range m.Certs {
				copy(m.Certs[i][:], p[32*i:])
			}
		}
		if nk > 0 {
			m.Keys = make([]spki.KeyHash, nk)
			for i := range m.Keys {
				copy(m.Keys[i][:], p[32*(nc+i):])
			}
		}
	}
	if s.Last > m.Length || m.Unit <= 0 || coupons.CheckCurrency(m.Currency) != nil || m.End >= m.Length {
		return fmt.Errorf("%w: inconsistent fields", ErrCorrupt)
	}
	if m.End == 0 {
		m.End = m.Length
	}
	return nil
}

// noPrincipals is the tail of a record without principals, as records of
// versions 1 and 2 are compared.
const noPrincipals = "\x00\x00"

// tailAt is where the principals (their counts, then the hashes) start in
// an encoded record of version 3 or later.
func tailAt(version byte) int {
	if version == 3 {
		return recordTailAtV3
	}
	return recordTailAt
}

// principalsOf returns the principals of an encoded record as a version 3
// or 4 record encodes them (appendPrincipals), and whether it is marked
// revoked. The record's version and length were checked
// (recordVersionOf).
func principalsOf(b []byte) (string, bool) {
	if b[0] < 3 {
		return noPrincipals, false
	}
	return string(b[tailAt(b[0]):]), b[recordFlagsAt]&flagRevoked != 0
}

// checkWrite decides whether the encoded record next may replace the
// encoded record cur (both of checked versions), before the compare-and-set
// of the position: ErrRevoked when cur is marked and next keeps its
// principals without the mark; ErrConflict when next has other principals
// and the write is not a reopen (see Store.Advance and Store.Reopen).
func checkWrite(cur, next []byte, reopen bool) error {
	cp, marked := principalsOf(cur)
	np, nextMarked := principalsOf(next)
	if cp != np {
		if reopen {
			return nil
		}
		return fmt.Errorf("%w: the lane was opened again under another chain", ErrConflict)
	}
	if marked && !nextMarked {
		return ErrRevoked
	}
	return nil
}

// checkWriteRecord is checkWrite on decoded records (the memory store).
func checkWriteRecord(cur, next *Meta, reopen bool) error {
	if !cur.SamePrincipals(next.Certs, next.Keys) {
		if reopen {
			return nil
		}
		return fmt.Errorf("%w: the lane was opened again under another chain", ErrConflict)
	}
	if cur.Revoked && !next.Revoked {
		return ErrRevoked
	}
	return nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// recordPosition reads a lane's position and credit from its encoded
// record without decoding the rest (the bolt store's compare-and-set). It
// checks the version and length only: a record that UnmarshalBinary would
// refuse was never handed to a gate, so no gate advances from it.
func recordPosition(b []byte) (last, credit uint32, err error) {
	if _, err := recordVersionOf(b); err != nil {
		return 0, 0, err
	}
	return binary.BigEndian.Uint32(b[recordLastAt:]), binary.BigEndian.Uint32(b[recordCreditAt:]), nil
}

// Key returns the store key of a lane: book ID || be32(lane).
func Key(id coupons.LaneID) [36]byte {
	var k [36]byte
	copy(k[:], id.Book[:])
	binary.BigEndian.PutUint32(k[32:], id.Lane)
	return k
}

// NewRecord is the record of a lane just opened: nothing spent, the
// anchor as the last value.
func NewRecord(meta Meta) Record {
	return Record{Meta: meta, State: coupons.LaneState{LastValue: meta.Anchor}}
}
