package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ecoupons/ecoupons/blindfund"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// Anonymous books (issue 18): the broker blind-signs a reader's book
// under a denomination key and debits the reader's account by the
// denomination's face value into the currency's anonymous pool; it never
// sees the book it funded. This file holds the denominations, the
// issuance, the registration of an anonymous book (by its vendor's gate,
// moving its face value from the pool to the book's escrow, from which
// redemption pays as for any book) and the refund of an expired book's
// unspent value to any account, proven by the book's owner key.

func init() {
	addMigration(13, `CREATE TABLE IF NOT EXISTS denominations (
		id         TEXT PRIMARY KEY,
		face       BIGINT NOT NULL,
		currency   TEXT NOT NULL,
		not_before BIGINT NOT NULL,
		not_after  BIGINT NOT NULL,
		doc        TEXT NOT NULL,
		private    TEXT NOT NULL
	);
	CREATE TABLE IF NOT EXISTS anon_issued (
		id           TEXT PRIMARY KEY,
		account      TEXT NOT NULL,
		denomination TEXT NOT NULL,
		blinded      TEXT NOT NULL,
		blind_sig    TEXT NOT NULL,
		created      BIGINT NOT NULL
	)`)
}

// KindAnon is the account kind of a currency's anonymous pool: the face
// value of every anonymous book sold and not yet redeemed or refunded.
const KindAnon = "anon"

func anonAccount(currency string) string { return "anon:" + currency }

// DenominationBits is the size of the RSA keys of new denominations.
const DenominationBits = 2048

var (
	// ErrNoDenomination means a denomination the broker does not have, or
	// one outside its period.
	ErrNoDenomination = errors.New("broker: no such denomination, or not issuing now")
	// ErrIssueReplay means an issuance id reused for another request.
	ErrIssueReplay = errors.New("broker: issuance id reused for another request")
	// ErrBlindFunding means an anonymous book whose blind funding proof
	// does not hold (altered book, another denomination, expired key).
	ErrBlindFunding = errors.New("broker: the anonymous book's funding proof does not hold")
	// ErrRefunded means a second refund of an anonymous book.
	ErrRefunded = errors.New("broker: the anonymous book was refunded already")
	// ErrNotExpired means a refund asked before the book's expiry and its
	// redemption grace (ReleaseGrace) have passed.
	ErrNotExpired = errors.New("broker: the book may still be redeemed")
)

// DenominationTag is the tag of the broker's certificate on a
// denomination (its subject is the denomination's ID as a hash).
func DenominationTag(d *blindfund.Denomination) (*spki.Tag, error) { return blindfund.Tag(d) }

// Denomination is a published denomination and the broker's certificate
// on it: gates trust the denomination's key through the broker's.
type Denomination struct {
	*blindfund.Denomination
	Cert *spki.SignedCert
}

// NewDenomination makes a blind-signing key for anonymous books of face
// value face in currency, issued from notBefore to notAfter (books it
// funds must expire by then), and certifies it.
func (b *Broker) NewDenomination(ctx context.Context, face int64, currency string, notBefore, notAfter time.Time) (*Denomination, error) {
	if err := coupons.CheckCurrency(currency); err != nil {
		return nil, err
	}
	d, sk, err := blindfund.NewDenomination(rand.Reader, face, currency, notBefore, notAfter, DenominationBits)
	if err != nil {
		return nil, err
	}
	cert, err := b.certifyDenomination(d)
	if err != nil {
		return nil, err
	}
	id := d.ID()
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sk)})
	err = b.tx(ctx, func(tx *sql.Tx) error {
		if err := createAccount(ctx, tx, anonAccount(currency), KindAnon, currency, 0); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO denominations (id, face, currency, not_before, not_after, doc, private) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			hex.EncodeToString(id[:]), face, currency, d.NotBefore.Unix(), d.NotAfter.Unix(), string(spki.Transport(d.Sexp())), string(priv))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Denomination{Denomination: d, Cert: cert}, nil
}

func (b *Broker) certifyDenomination(d *blindfund.Denomination) (*spki.SignedCert, error) {
	tag, err := DenominationTag(d)
	if err != nil {
		return nil, err
	}
	id := d.ID()
	return spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(b.pub), Subject: spki.HashPrincipal(spki.KeyHash(id)), Tag: tag,
		Validity: spki.Validity{NotBefore: d.NotBefore, NotAfter: d.NotAfter}}, b.Signer)
}

// Denominations lists the denominations valid at now (or later), with
// the broker's certificates, newest period first.
func (b *Broker) Denominations(ctx context.Context, now time.Time) ([]Denomination, error) {
	rows, err := b.DB.db.QueryContext(ctx, `SELECT doc FROM denominations WHERE not_after >= $1 ORDER BY not_before DESC, id`, now.Unix())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Denomination
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		d, err := blindfund.ParseDenomination([]byte(doc))
		if err != nil {
			return nil, err
		}
		cert, err := b.certifyDenomination(d)
		if err != nil {
			return nil, err
		}
		out = append(out, Denomination{Denomination: d, Cert: cert})
	}
	return out, rows.Err()
}

// IssueAnonymous blind-signs blinded under the denomination id for the
// account's owner, debiting the account by the denomination's face value
// into the anonymous pool in the same transaction. issue is the client's
// idempotency key: a retry with the same key and request answers the
// same signature without a second debit. The broker learns which account
// bought which denomination when, never which book.
func (b *Broker) IssueAnonymous(ctx context.Context, caller spki.KeyHash, account string, id [32]byte, blinded []byte, issue string) ([]byte, error) {
	if issue == "" || len(issue) > 128 {
		return nil, fmt.Errorf("%w: an issuance id (1 to 128 characters) is required", ErrAmount)
	}
	acct, err := b.userAccount(ctx, account)
	if err != nil {
		return nil, err
	}
	var approved int64
	err = b.DB.db.QueryRowContext(ctx, `SELECT approved FROM users WHERE key_hash = $1 AND account = $2`, hexKey(caller), account).Scan(&approved)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s is not an account of this key", errForbidden, account)
	} else if err != nil {
		return nil, err
	}
	if approved == 0 {
		return nil, fmt.Errorf("%w: the broker's administrator must approve the account before it funds books", ErrNotApproved)
	}
	var face, notBefore, notAfter int64
	var currency, privPEM string
	err = b.DB.db.QueryRowContext(ctx, `SELECT face, currency, not_before, not_after, private FROM denominations WHERE id = $1`, hex.EncodeToString(id[:])).
		Scan(&face, &currency, &notBefore, &notAfter, &privPEM)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %x", ErrNoDenomination, id[:8])
	}
	if err != nil {
		return nil, err
	}
	if now := b.Now().Unix(); now < notBefore || now >= notAfter {
		return nil, fmt.Errorf("%w: it issues from %s to %s", ErrNoDenomination, time.Unix(notBefore, 0).UTC().Format(time.RFC3339), time.Unix(notAfter, 0).UTC().Format(time.RFC3339))
	}
	if currency != acct.Currency {
		return nil, fmt.Errorf("%w: a denomination in %s from an account in %s", ErrCurrency, currency, acct.Currency)
	}
	blk, _ := pem.Decode([]byte(privPEM))
	if blk == nil {
		return nil, errors.New("broker: a denomination's key does not parse")
	}
	sk, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	if len(blinded) != sk.Size() {
		return nil, fmt.Errorf("%w: a blinded message of %d bytes for a %d-byte key", errBadRequest, len(blinded), sk.Size())
	}
	sum := sha256.Sum256(blinded)
	blindedHash := hex.EncodeToString(sum[:])
	var sig []byte
	err = b.tx(ctx, func(tx *sql.Tx) error {
		var prevAcct, prevDenom, prevBlinded, prevSig string
		err := tx.QueryRowContext(ctx, `SELECT account, denomination, blinded, blind_sig FROM anon_issued WHERE id = $1`, issue).
			Scan(&prevAcct, &prevDenom, &prevBlinded, &prevSig)
		if err == nil {
			if prevAcct != account || prevDenom != hex.EncodeToString(id[:]) || prevBlinded != blindedHash {
				return fmt.Errorf("%w: %q", ErrIssueReplay, issue)
			}
			sig, err = base64.StdEncoding.DecodeString(prevSig)
			return err
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if sig, err = blindfund.Sign(sk, blinded); err != nil {
			return err
		}
		if _, err := post(ctx, b.DB, tx, b.Now(), "anonymous", "anonymous:"+issue, "anonymous book",
			entry{account, -face}, entry{anonAccount(currency), face}); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO anon_issued (id, account, denomination, blinded, blind_sig, created) VALUES ($1, $2, $3, $4, $5, $6)`,
			issue, account, hex.EncodeToString(id[:]), blindedHash, base64.StdEncoding.EncodeToString(sig), b.Now().Unix())
		return err
	})
	if err != nil {
		return nil, err
	}
	return sig, nil
}

// postAnonymous answers POST /v1/anonymous {"account", "denomination"
// (base64url ID), "blinded" (base64url), "id"}, signed by the account's
// key: {"blind_signature"}.
func (a *API) postAnonymous(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	var in struct {
		Account      string `json:"account"`
		Denomination string `json:"denomination"`
		Blinded      string `json:"blinded"`
		ID           string `json:"id"`
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	raw, err := base64.RawURLEncoding.DecodeString(in.Denomination)
	if err != nil || len(raw) != 32 {
		return 0, nil, badRequest("denomination: a base64url ID of 32 bytes (GET /v1/denominations)")
	}
	blinded, err := base64.RawURLEncoding.DecodeString(in.Blinded)
	if err != nil || len(blinded) == 0 || len(blinded) > 1024 {
		return 0, nil, badRequest("blinded: the blinded message, base64url")
	}
	var id [32]byte
	copy(id[:], raw)
	sig, err := a.Broker.IssueAnonymous(ctx, caller.Hash(), in.Account, id, blinded, in.ID)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]string{"blind_signature": base64.RawURLEncoding.EncodeToString(sig)}, nil
}

// postDenomination answers POST /v1/admin/denominations {"face",
// "currency", "not_before", "not_after" (RFC 3339)}, signed by an admin.
func (a *API) postDenomination(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	if err := a.adminOnly(caller); err != nil {
		return 0, nil, err
	}
	var in struct {
		Face      string `json:"face"`
		Currency  string `json:"currency"`
		NotBefore string `json:"not_before"`
		NotAfter  string `json:"not_after"`
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	face, err := coupons.ParseAmount(in.Face)
	if err != nil || face <= 0 {
		return 0, nil, badRequest("face: a positive amount, e.g. 1.024")
	}
	nb, err1 := time.Parse(time.RFC3339, in.NotBefore)
	na, err2 := time.Parse(time.RFC3339, in.NotAfter)
	if err1 != nil || err2 != nil || !na.After(nb) {
		return 0, nil, badRequest("not_before and not_after: RFC 3339 times, not_after later")
	}
	d, err := a.Broker.NewDenomination(ctx, face, in.Currency, nb, na)
	if err != nil {
		return 0, nil, err
	}
	id := d.ID()
	return http.StatusCreated, map[string]string{"id": base64.RawURLEncoding.EncodeToString(id[:]), "denomination": string(spki.Transport(d.Sexp()))}, nil
}

// denomination reads a denomination this broker made, by ID.
func (b *Broker) denomination(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id [32]byte) (*blindfund.Denomination, error) {
	var doc string
	err := q.QueryRowContext(ctx, `SELECT doc FROM denominations WHERE id = $1`, hex.EncodeToString(id[:])).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %w: %x…", ErrBlindFunding, blindfund.ErrUnknownDenomination, id[:6])
	}
	if err != nil {
		return nil, err
	}
	return blindfund.ParseDenomination([]byte(doc))
}

// checkAnonymous checks an anonymous book and its proof: signed by its
// owner, naming this broker, funded by a valid blind signature under one
// of this broker's denominations. The denomination's period is checked
// at the earlier of now and the book's expiry: a book funded in time may
// be registered (and refunded) after it.
func (b *Broker) checkAnonymous(ctx context.Context, sb *coupons.SignedBook, p *blindfund.Proof) error {
	bk := sb.Book
	if err := sb.Verify(); err != nil {
		return fmt.Errorf("%w: %w", ErrBookRefused, err)
	}
	if bk.Broker != b.pub.Hash() {
		return fmt.Errorf("%w: the book names another broker", ErrBookRefused)
	}
	d, err := b.denomination(ctx, b.DB.db, p.Denomination)
	if err != nil {
		return err
	}
	face, err := bk.FaceValue()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBookRefused, err)
	}
	at := b.Now()
	if at.After(bk.NotAfter) {
		at = bk.NotAfter
	}
	if err := p.Verify(d, bk.ID(), face, bk.Currency, bk.NotAfter, at); err != nil {
		return fmt.Errorf("%w: %w", ErrBlindFunding, err)
	}
	return nil
}

// holdAnonymous records a checked anonymous book, moving its face value
// from the currency's anonymous pool to the book's escrow, unless the
// broker holds the book already. The book's owner account is the pool:
// no row names who paid for it.
func (b *Broker) holdAnonymous(ctx context.Context, tx *sql.Tx, bk *coupons.Book) error {
	id := bk.ID()
	idHex := hex.EncodeToString(id[:])
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM books WHERE id = $1`, idHex).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if err := checkVendorOf(ctx, tx, bk); err != nil {
		return err
	}
	face, err := bk.FaceValue()
	if err != nil {
		return err
	}
	if err := createAccount(ctx, tx, escrowAccount(id), KindEscrow, bk.Currency, 0); err != nil {
		return err
	}
	// The pool holds the face value of every book it funded and that is
	// not held yet: it cannot go below zero but for a forged signature.
	if _, err := post(ctx, b.DB, tx, b.Now(), "book", "book:"+idHex, "anonymous book: face value from the pool",
		entry{anonAccount(bk.Currency), -face}, entry{escrowAccount(id), face}); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO books (id, owner, vendor, unit, lanes, length, salt, root, not_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		idHex, anonAccount(bk.Currency), bk.Vendor, bk.Unit, bk.Lanes, bk.Length, hex.EncodeToString(bk.Salt[:]), hex.EncodeToString(bk.Root[:]), bk.NotAfter.Unix())
	return err
}

// RegisterAnonymous records an anonymous book for the vendor whose key
// calls (its gate does, at the book's first lane open): the book is then
// redeemed like any other, from its escrow. Registering again is a
// no-op.
func (b *Broker) RegisterAnonymous(ctx context.Context, vendorKey spki.KeyHash, sb *coupons.SignedBook, p *blindfund.Proof) error {
	var n int
	if err := b.DB.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM vendors WHERE name = $1 AND key_hash = $2`, sb.Book.Vendor, hexKey(vendorKey)).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: book of %s", ErrNotYourBook, sb.Book.Vendor)
	}
	if !sb.Book.NotAfter.After(b.Now()) {
		return fmt.Errorf("%w: on %s", ErrBookExpired, spki.FormatDate(sb.Book.NotAfter))
	}
	if err := b.checkAnonymous(ctx, sb, p); err != nil {
		return err
	}
	return b.tx(ctx, func(tx *sql.Tx) error { return b.holdAnonymous(ctx, tx, sb.Book) })
}

// RefundAnonymous pays the unspent value of an expired anonymous book
// (its escrow and reserve) to account, any user account in the book's
// currency, once: the caller proves the book's owner key by signing the
// request. It is refused before the book's expiry plus ReleaseGrace (the
// vendors' last redemptions), and a second time (ErrRefunded). A book no
// gate registered is held first. The refund links the book to account:
// the reader chooses which account, and when.
func (b *Broker) RefundAnonymous(ctx context.Context, caller spki.KeyHash, sb *coupons.SignedBook, p *blindfund.Proof, account string) (int64, error) {
	bk := sb.Book
	switch {
	case caller != bk.Owner:
		return 0, fmt.Errorf("%w: only the book's owner key can refund it", errForbidden)
	case b.Now().Before(bk.NotAfter.Add(b.ReleaseGrace)):
		return 0, fmt.Errorf("%w: refunds open on %s (the book's expiry and %s of redemptions)", ErrNotExpired,
			bk.NotAfter.Add(b.ReleaseGrace).UTC().Format(time.RFC3339), b.ReleaseGrace)
	}
	acct, err := b.userAccount(ctx, account)
	if err != nil {
		return 0, err
	}
	if acct.Currency != bk.Currency {
		return 0, fmt.Errorf("%w: a book in %s to an account in %s", ErrCurrency, bk.Currency, acct.Currency)
	}
	if err := b.checkAnonymous(ctx, sb, p); err != nil {
		return 0, err
	}
	id := bk.ID()
	idHex := hex.EncodeToString(id[:])
	var paid int64
	err = b.tx(ctx, func(tx *sql.Tx) error {
		if err := b.holdAnonymous(ctx, tx, bk); err != nil {
			return err
		}
		var owner string
		var released int64
		if err := tx.QueryRowContext(ctx, `SELECT owner, released FROM books WHERE id = $1`, idHex).Scan(&owner, &released); err != nil {
			return err
		}
		switch {
		case owner != anonAccount(bk.Currency):
			return fmt.Errorf("%w: the book is not an anonymous book", ErrBookRefused)
		case released != 0:
			return fmt.Errorf("%w: on %s", ErrRefunded, time.Unix(released, 0).UTC().Format(time.RFC3339))
		}
		var bal, res int64
		if err := tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = $1`, escrowAccount(id)).Scan(&bal); err != nil {
			return err
		}
		err := tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = $1`, reserveAccount(id)).Scan(&res)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if _, err := post(ctx, b.DB, tx, b.Now(), "refund", "refund:"+idHex, "unspent value of an anonymous book",
			entry{escrowAccount(id), -bal}, entry{reserveAccount(id), -res}, entry{account, bal + res}); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE lanes SET reserved = 0 WHERE book = $1`, idHex); err != nil {
			return err
		}
		paid = bal + res
		_, err = tx.ExecContext(ctx, `UPDATE books SET released = $1 WHERE id = $2 AND released = 0`, max(b.Now().Unix(), 1), idHex)
		return err
	})
	return paid, err
}

// anonymousBody is what every call about an anonymous book but its
// issuance carries: the signed book and its blind funding proof, both
// S-expressions in any form.
type anonymousBody struct {
	Book    string `json:"book"`
	Funding string `json:"funding"`
}

// read parses the book and the proof.
func (in *anonymousBody) read() (*coupons.SignedBook, *blindfund.Proof, error) {
	x, err := spki.Parse([]byte(in.Book))
	if err != nil {
		return nil, nil, err
	}
	sb, err := coupons.ParseSignedBook(x)
	if err != nil {
		return nil, nil, err
	}
	p, err := blindfund.ParseProof([]byte(in.Funding))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBlindFunding, err)
	}
	return sb, p, nil
}

// postAnonymousBook answers POST /v1/anonymous/books {"book", "funding"}
// (the signed book and its blind funding proof), signed by the book's
// vendor: 200 {"book": base64url ID}.
func (a *API) postAnonymousBook(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	var in anonymousBody
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	sb, p, err := in.read()
	if err != nil {
		return 0, nil, err
	}
	if err := a.Broker.RegisterAnonymous(ctx, caller.Hash(), sb, p); err != nil {
		return 0, nil, err
	}
	id := sb.Book.ID()
	return http.StatusOK, map[string]string{"book": base64.RawURLEncoding.EncodeToString(id[:])}, nil
}

// postAnonymousRefund answers POST /v1/anonymous/refund {"book",
// "funding", "account"}, signed by the book's owner key (which the broker
// does not otherwise know): 200 {"refunded": decimal amount}.
func (a *API) postAnonymousRefund(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	var in struct {
		anonymousBody
		Account string `json:"account"`
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	sb, p, err := in.read()
	if err != nil {
		return 0, nil, err
	}
	paid, err := a.Broker.RefundAnonymous(ctx, caller.Hash(), sb, p, in.Account)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]string{"refunded": coupons.FormatAmount(paid)}, nil
}

// RevokeAnonymous revokes a certificate on an anonymous book for the
// book's owner key, which the broker does not otherwise know: the caller
// shows the book it signed and its funding proof (so only a funded book's
// key may revoke, and only certificates naming that book). The book is
// held first if no gate registered it yet. Revocations count against the
// book ("anon:<book>"), RevocationsPerHour an hour, as an account's do.
func (b *Broker) RevokeAnonymous(ctx context.Context, caller spki.KeyHash, sb *coupons.SignedBook, p *blindfund.Proof, sc *spki.SignedCert, alsoKey bool) error {
	if caller != sb.Book.Owner {
		return fmt.Errorf("%w: only the book's owner key revokes for an anonymous book", ErrRevocation)
	}
	id := sb.Book.ID()
	if book, ok := bookOfTag(sc.Cert.Tag); !ok || book != id {
		return fmt.Errorf("%w: the certificate does not name this book", ErrRevocation)
	}
	if err := b.checkAnonymous(ctx, sb, p); err != nil {
		return err
	}
	if err := b.tx(ctx, func(tx *sql.Tx) error { return b.holdAnonymous(ctx, tx, sb.Book) }); err != nil {
		return err
	}
	return b.revokeAs(ctx, caller, "anon:"+hex.EncodeToString(id[:]), true, sc, alsoKey)
}

// postAnonymousRevoke answers POST /v1/anonymous/revoke {"book",
// "funding", "certificate", "key"?}, signed by the anonymous book's owner
// key: {"revoked"} (the certificate's hash), as POST /v1/revoke.
func (a *API) postAnonymousRevoke(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	var in struct {
		anonymousBody
		Certificate string `json:"certificate"`
		Key         bool   `json:"key"`
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	sb, p, err := in.read()
	if err != nil {
		return 0, nil, err
	}
	sc, err := parseSignedCert(in.Certificate)
	if err != nil {
		return 0, nil, err
	}
	if err := a.Broker.RevokeAnonymous(ctx, caller.Hash(), sb, p, sc, in.Key); err != nil {
		return 0, nil, err
	}
	h := sc.Cert.Hash()
	return http.StatusOK, map[string]any{"revoked": base64.RawURLEncoding.EncodeToString(h[:]), "key": in.Key}, nil
}

// AnonymousThefts returns the thefts recorded on an anonymous book, for
// its owner key (which shows the book and its proof), oldest first.
func (b *Broker) AnonymousThefts(ctx context.Context, caller spki.KeyHash, sb *coupons.SignedBook, p *blindfund.Proof) ([]Theft, error) {
	if caller != sb.Book.Owner {
		return nil, fmt.Errorf("%w: only the book's owner key reads an anonymous book's thefts", errForbidden)
	}
	if err := b.checkAnonymous(ctx, sb, p); err != nil {
		return nil, err
	}
	id := sb.Book.ID()
	return b.thefts(ctx, `WHERE t.book = $1`, hex.EncodeToString(id[:]))
}

// postAnonymousThefts answers POST /v1/anonymous/thefts {"book",
// "funding"}, signed by the anonymous book's owner key, as GET /v1/thefts
// answers for an account's books.
func (a *API) postAnonymousThefts(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	var in anonymousBody
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	sb, p, err := in.read()
	if err != nil {
		return 0, nil, err
	}
	ts, err := a.Broker.AnonymousThefts(ctx, caller.Hash(), sb, p)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, theftsJSON(ts), nil
}
