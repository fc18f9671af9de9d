package wallet

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/ecoupons/ecoupons/blindfund"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// Anonymous books (docs/PROTOCOL.md §20): a book owned by a key made for
// it alone, funded by the broker's blind signature under a denomination,
// carrying no user certificate. The broker debits the wallet's account
// when it signs, but never sees the book.
//
// The steps, each durable before the next: NewAnonymousBook stores the
// book, its owner key, the denomination and a blinding seed (pending);
// AnonymousRequest blinds (the same every time, from the seed) for the
// broker's POST /v1/anonymous; SaveBlindSignature unblinds the answer and
// keeps the proof (funded). A crash at any point is finished by calling
// AnonymousRequest again: the broker answers a retried issuance id with
// the same blind signature and debits once.

// ErrNotAnonymous means an anonymous-book call on a book that is not one.
var ErrNotAnonymous = errors.New("wallet: not an anonymous book")

// AnonymousParams are what a reader chooses for an anonymous book: its
// face value (Lanes × Length × Unit) and currency must be the
// denomination's, and it must expire by the denomination's end.
type AnonymousParams struct {
	Vendor       string
	Lanes        uint32
	Length       uint32
	Unit         int64
	NotAfter     time.Time
	Denomination *blindfund.Denomination
}

// NewAnonymousBook makes a book owned by a fresh Ed25519 key and stores
// it, with that key, the denomination and a random blinding seed, before
// anything is paid. It returns the book's ID.
func (w *Wallet) NewAnonymousBook(p AnonymousParams, progress func(done, total uint32)) ([32]byte, error) {
	d := p.Denomination
	bk, err := w.BrokerPublicKey()
	if err != nil {
		return [32]byte{}, err
	}
	face, err := coupons.MulAmount(uint64(p.Lanes)*uint64(p.Length), p.Unit)
	switch {
	case err != nil:
		return [32]byte{}, err
	case face != d.Face:
		return [32]byte{}, fmt.Errorf("wallet: a book of %s %s under a denomination of %s %s: the face values must be equal",
			coupons.FormatAmount(face), d.Currency, coupons.FormatAmount(d.Face), d.Currency)
	case p.NotAfter.After(d.NotAfter):
		return [32]byte{}, fmt.Errorf("wallet: the book would outlive its denomination's key (%s)", d.NotAfter.Format(time.RFC3339))
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return [32]byte{}, err
	}
	owner, err := spki.NewPublicKey(key.Public())
	if err != nil {
		return [32]byte{}, err
	}
	b, sec, anchors, err := coupons.Create(coupons.Params{Vendor: p.Vendor, Broker: bk.Hash(), Owner: owner.Hash(), Lanes: p.Lanes, Length: p.Length,
		Currency: d.Currency, Unit: p.Unit, NotAfter: p.NotAfter}, progress)
	if err != nil {
		return [32]byte{}, err
	}
	sb, err := b.Sign(key)
	if err != nil {
		return [32]byte{}, err
	}
	var seed, issue [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return [32]byte{}, err
	}
	if _, err := rand.Read(issue[:16]); err != nil {
		return [32]byte{}, err
	}
	f := newBookFile(sb, sec, anchors)
	f.Anonymous = &anonymousFile{OwnerKey: hex.EncodeToString(key.Seed()), Denomination: string(spki.Transport(d.Sexp())),
		Seed: hex.EncodeToString(seed[:]), Issue: hex.EncodeToString(issue[:16])}
	return b.ID(), w.writeBookFile(sb.Book.ID(), f)
}

// AnonymousRequest returns what the wallet's account sends the broker to
// fund the anonymous book id (POST /v1/anonymous): the denomination's ID,
// the blinded message and the issuance id, the same on every call.
func (w *Wallet) AnonymousRequest(id [32]byte) (denom [32]byte, blinded []byte, issue string, err error) {
	bf, sb, err := w.readBookFile(id)
	if err != nil {
		return denom, nil, "", err
	}
	a, d, err := bf.anonymous()
	if err != nil {
		return denom, nil, "", err
	}
	_, blinded, err = a.blind(d, sb.Book.ID())
	return d.ID(), blinded, a.Issue, err
}

// SaveBlindSignature unblinds the broker's blind signature for the
// anonymous book id, checks the proof against the book and its
// denomination, and keeps it: the book is funded.
func (w *Wallet) SaveBlindSignature(id [32]byte, blindSig []byte) error {
	return w.updateBook(id, func(bf *bookFile, sb *coupons.SignedBook) error {
		a, d, err := bf.anonymous()
		if err != nil {
			return err
		}
		req, _, err := a.blind(d, sb.Book.ID())
		if err != nil {
			return err
		}
		p, err := req.Finish(blindSig)
		if err != nil {
			return err
		}
		face, _ := sb.Book.FaceValue()
		at := time.Now()
		if at.Before(d.NotBefore) {
			at = d.NotBefore
		}
		if err := p.Verify(d, sb.Book.ID(), face, sb.Book.Currency, sb.Book.NotAfter, at); err != nil {
			return err
		}
		a.Proof = string(spki.Transport(p.Sexp()))
		bf.Refused = ""
		return nil
	})
}

// AnonymousProof returns the stored book and blind funding proof of the
// anonymous book id (for a refund: POST /v1/anonymous/refund), and its
// owner key, which signs the refund.
func (w *Wallet) AnonymousProof(id [32]byte) (*coupons.SignedBook, *blindfund.Proof, ed25519.PrivateKey, error) {
	bf, sb, err := w.readBookFile(id)
	if err != nil {
		return nil, nil, nil, err
	}
	a, _, err := bf.anonymous()
	if err != nil {
		return nil, nil, nil, err
	}
	if a.Proof == "" {
		return nil, nil, nil, fmt.Errorf("%w: the book is not funded", coupons.ErrBookNotFunded)
	}
	p, err := blindfund.ParseProof([]byte(a.Proof))
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := a.key()
	return sb, p, key, err
}

// anonymousFile is what books/<id>.json keeps of an anonymous book: all
// of it secret (the owner key spends and refunds the book; the seed links
// it to its issuance).
type anonymousFile struct {
	OwnerKey     string `json:"owner_key"`    // the Ed25519 seed of the book's own key, hex
	Denomination string `json:"denomination"` // transport form
	Seed         string `json:"seed"`         // the blinding seed (blindfund.BlindSeeded), hex
	Issue        string `json:"issue"`        // the issuance id at the broker
	Proof        string `json:"proof,omitempty"`
}

func (bf *bookFile) anonymous() (*anonymousFile, *blindfund.Denomination, error) {
	if bf.Anonymous == nil {
		return nil, nil, ErrNotAnonymous
	}
	d, err := blindfund.ParseDenomination([]byte(bf.Anonymous.Denomination))
	return bf.Anonymous, d, err
}

func (a *anonymousFile) blind(d *blindfund.Denomination, book [32]byte) (*blindfund.Request, []byte, error) {
	var seed [32]byte
	if n, err := hex.Decode(seed[:], []byte(a.Seed)); err != nil || n != 32 {
		return nil, nil, fmt.Errorf("wallet: the book's blinding seed: %v", err)
	}
	return blindfund.BlindSeeded(d, book, seed)
}

func (a *anonymousFile) key() (ed25519.PrivateKey, error) {
	seed, err := hex.DecodeString(a.OwnerKey)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New("wallet: an anonymous book's owner key does not parse")
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
