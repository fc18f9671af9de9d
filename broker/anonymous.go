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
// sees the book it funded. This file holds the denominations and the
// issuance; gates' acceptance and redemption from the pool come later.

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
)

// DenominationTag is the tag of the broker's certificate on a
// denomination (its subject is the denomination's ID as a hash).
func DenominationTag(d *blindfund.Denomination) (*spki.Tag, error) {
	return spki.ParseTag(spki.L("ecoupon-denomination", spki.L("face", coupons.FormatAmount(d.Face)), spki.L("currency", d.Currency)))
}

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
	var owner int
	if err := b.DB.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE key_hash = $1 AND account = $2`, hexKey(caller), account).Scan(&owner); err != nil {
		return nil, err
	}
	if owner == 0 {
		return nil, fmt.Errorf("%w: %s is not an account of this key", errForbidden, account)
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
