package broker

import (
	"context"
	"crypto"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// Errors of the broker's operations.
var (
	ErrUnknownUser   = errors.New("broker: unknown user key")
	ErrUnknownVendor = errors.New("broker: unknown vendor")
	ErrVendorTaken   = errors.New("broker: vendor name registered to another key")
	ErrBookRefused   = errors.New("broker: book refused")
	// ErrNotApproved means the broker runs with users "approve" and an
	// administrator has not approved the caller's account yet.
	ErrNotApproved = errors.New("broker: account not approved yet")
	ErrUnknownBook = errors.New("broker: unknown book")
	ErrNotYourBook = errors.New("broker: book belongs to another vendor")
	ErrBookClosed  = errors.New("broker: book released after expiry")
	ErrRedemption  = errors.New("broker: redemption refused")
)

func init() {
	addMigration(3, `CREATE TABLE users (
		key_hash TEXT PRIMARY KEY,
		account  TEXT NOT NULL REFERENCES accounts(id),
		currency TEXT NOT NULL,
		created  BIGINT NOT NULL
	);
	CREATE TABLE vendors (
		name     TEXT PRIMARY KEY,
		key_hash TEXT NOT NULL,
		account  TEXT NOT NULL REFERENCES accounts(id),
		currency TEXT NOT NULL
	);
	CREATE TABLE books (
		id        TEXT PRIMARY KEY,
		owner     TEXT NOT NULL REFERENCES accounts(id),
		vendor    TEXT NOT NULL REFERENCES vendors(name),
		unit      BIGINT NOT NULL,
		lanes     BIGINT NOT NULL,
		length    BIGINT NOT NULL,
		salt      TEXT NOT NULL,
		root      TEXT NOT NULL,
		not_after BIGINT NOT NULL,
		released  BIGINT NOT NULL DEFAULT 0
	);
	CREATE TABLE lanes (
		book     TEXT NOT NULL REFERENCES books(id),
		lane     BIGINT NOT NULL,
		redeemed BIGINT NOT NULL,
		value    TEXT NOT NULL,
		PRIMARY KEY (book, lane)
	)`)
	// Users registered before the approval policy existed stay approved.
	addMigration(9, `ALTER TABLE users ADD COLUMN approved BIGINT NOT NULL DEFAULT 1`)
}

// Broker runs the broker's operations on its database with its key.
type Broker struct {
	DB     *DB
	Signer crypto.Signer
	// FeeBasisPoints is the broker's fee on redemptions, in 1/10000 of the
	// amount, rounded down. Default 0.
	FeeBasisPoints int64
	// MaxRedeemSteps bounds the hashing one redemption item may cost (the
	// increase in coupons since the lane's last redemption). Default 2^22.
	MaxRedeemSteps uint32
	// ReleaseGrace is how long after a book's expiry redemptions are still
	// accepted before its remaining escrow returns to the owner. Default 7 days.
	ReleaseGrace time.Duration
	// ApproveUsers is the users policy "approve": a new user account is
	// opened pending, and the broker funds no book from it (ErrNotApproved)
	// until an administrator approves it (Approve). Default false, the
	// policy "open": every registered account may fund books from what it
	// holds.
	ApproveUsers bool
	// RevocationsPerHour is how many revocations (POST /v1/revoke, the
	// back office's Revoke) one account may make in an hour; a device's
	// count against the owner of its grant's book. Default (0)
	// DefaultRevocationsPerHour.
	RevocationsPerHour int
	Now                func() time.Time

	pub *spki.PublicKey
}

// New returns a broker over db signing with signer.
func New(db *DB, signer crypto.Signer) (*Broker, error) {
	pub, err := spki.NewPublicKey(signer.Public())
	if err != nil {
		return nil, err
	}
	return &Broker{DB: db, Signer: signer, MaxRedeemSteps: 1 << 22, ReleaseGrace: 7 * 24 * time.Hour, Now: time.Now, pub: pub}, nil
}

// PublicKey is the broker's key, which gates trust.
func (b *Broker) PublicKey() *spki.PublicKey { return b.pub }

func hexKey(h spki.KeyHash) string { return hex.EncodeToString(h[:]) }

// UserAccount is the account id of a user key in a currency.
func UserAccount(key spki.KeyHash, currency string) string {
	return "user:" + hexKey(key)[:32] + ":" + currency
}

func worldAccount(currency string) string { return "world:" + currency }
func feesAccount(currency string) string  { return "fees:" + currency }
func escrowAccount(book [32]byte) string  { return "escrow:" + hex.EncodeToString(book[:]) }

// tx runs fn in one database transaction; on PostgreSQL it is
// SERIALIZABLE and retried (fn runs again) after serialization failures.
func (b *Broker) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	var opts *sql.TxOptions
	if b.DB.dialect == "pgx" {
		opts = &sql.TxOptions{Isolation: sql.LevelSerializable}
	}
	for attempt := 0; ; attempt++ {
		err := b.tryTx(ctx, opts, fn)
		if err == nil || !retryable(err) || attempt >= 20 {
			return err
		}
		time.Sleep(time.Duration(attempt+1) * time.Millisecond)
	}
}

func (b *Broker) tryTx(ctx context.Context, opts *sql.TxOptions, fn func(*sql.Tx) error) error {
	tx, err := b.DB.db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// RegisterUser opens (or finds) the account of a user key in a currency,
// pre-paid when creditLimit is 0, post-paid with that limit otherwise, and
// issues the user certificate vendors check off-line, valid until notAfter.
func (b *Broker) RegisterUser(ctx context.Context, key *spki.PublicKey, currency string, creditLimit int64, notAfter time.Time) (string, *spki.SignedCert, error) {
	if err := coupons.CheckCurrency(currency); err != nil {
		return "", nil, err
	}
	if creditLimit < 0 {
		return "", nil, fmt.Errorf("%w: negative credit limit", ErrAmount)
	}
	acct := UserAccount(key.Hash(), currency)
	err := b.tx(ctx, func(tx *sql.Tx) error {
		for _, a := range []struct {
			id, kind string
			floor    int64
		}{{acct, KindUser, -creditLimit}, {worldAccount(currency), KindWorld, noFloor}, {feesAccount(currency), KindFees, 0}} {
			if err := createAccount(ctx, tx, a.id, a.kind, currency, a.floor); err != nil {
				return err
			}
		}
		// A limit given here applies to an account registered before;
		// registering again without one (POST /v1/users) keeps the limit
		// an administrator set.
		if creditLimit > 0 {
			if _, err := tx.ExecContext(ctx, `UPDATE accounts SET floor = $1 WHERE id = $2 AND balance >= $1`, -creditLimit, acct); err != nil {
				return err
			}
		}
		approved := 1
		if b.ApproveUsers {
			approved = 0
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO users (key_hash, account, currency, created, approved) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account) DO NOTHING`,
			hexKey(key.Hash()), acct, currency, b.Now().Unix(), approved)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	cert, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(b.pub), Subject: spki.KeyPrincipal(key),
		Tag: coupons.UserTag(acct, currency), Validity: spki.Validity{NotBefore: b.Now().UTC().Truncate(time.Second), NotAfter: notAfter.UTC().Truncate(time.Second)}}, b.Signer)
	return acct, cert, err
}

// userAccount returns account, which must be a user's.
func (b *Broker) userAccount(ctx context.Context, account string) (Account, error) {
	a, err := b.DB.Account(ctx, account)
	if err == nil && a.Kind != KindUser {
		err = fmt.Errorf("%w: %s is not a user account", ErrNoAccount, account)
	}
	return a, err
}

// TopUp moves amount into a user's account from outside the system.
// idem makes retries safe: the same key never credits twice.
func (b *Broker) TopUp(ctx context.Context, account string, amount int64, idem string) error {
	if amount <= 0 {
		return fmt.Errorf("%w: top-up of %s", ErrAmount, coupons.FormatAmount(amount))
	}
	a, err := b.userAccount(ctx, account)
	if err != nil {
		return err
	}
	return b.tx(ctx, func(tx *sql.Tx) error {
		_, err := post(ctx, b.DB, tx, b.Now(), "topup", "topup:"+idem, "", entry{worldAccount(a.Currency), -amount}, entry{account, amount})
		return err
	})
}

// RegisterVendor registers a vendor name for a key, opening its account,
// and issues its vendor certificate: (ecoupons-vendor (name v) (currency C)).
func (b *Broker) RegisterVendor(ctx context.Context, name string, key *spki.PublicKey, currency string) (*spki.SignedCert, error) {
	if err := coupons.CheckCurrency(currency); err != nil {
		return nil, err
	}
	acct := "vendor:" + name + ":" + currency
	err := b.tx(ctx, func(tx *sql.Tx) error {
		var have, haveCur string
		err := tx.QueryRowContext(ctx, `SELECT key_hash, currency FROM vendors WHERE name = $1`, name).Scan(&have, &haveCur)
		switch {
		case err == nil && have != hexKey(key.Hash()):
			return fmt.Errorf("%w: %s", ErrVendorTaken, name)
		case err == nil && haveCur != currency:
			return fmt.Errorf("%w: vendor %s is registered in %s; a vendor's currency is fixed at registration", ErrCurrency, name, haveCur)
		case err == nil:
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		for _, a := range []struct {
			id, kind string
			floor    int64
		}{{acct, KindVendor, 0}, {worldAccount(currency), KindWorld, noFloor}, {feesAccount(currency), KindFees, 0}} {
			if err := createAccount(ctx, tx, a.id, a.kind, currency, a.floor); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO vendors (name, key_hash, account, currency) VALUES ($1, $2, $3, $4)`, name, hexKey(key.Hash()), acct, currency)
		return err
	})
	if err != nil {
		return nil, err
	}
	tag, err := spki.ParseTag(spki.L("ecoupons-vendor", spki.L("name", name), spki.L("currency", currency)))
	if err != nil {
		return nil, err
	}
	return spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(b.pub), Subject: spki.KeyPrincipal(key), Tag: tag}, b.Signer)
}

// VendorCertificate returns a certificate, signed now by the broker, for
// the key registered under the vendor name: issuer the broker's key,
// subject the vendor key's hash, tag (ecoupons-vendor (name n) (currency
// c)). Anyone may ask for it: a client checks with it that what a gate
// signs (its receipt commitments) comes from the vendor the broker knows.
// An unknown name is ErrUnknownVendor.
func (b *Broker) VendorCertificate(ctx context.Context, name string) (*spki.SignedCert, error) {
	var keyHex, currency string
	err := b.tx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT key_hash, currency FROM vendors WHERE name = $1`, name).Scan(&keyHex, &currency)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrUnknownVendor, name)
	}
	if err != nil {
		return nil, err
	}
	var h spki.KeyHash
	raw, err := hex.DecodeString(keyHex)
	if err != nil || len(raw) != len(h) {
		return nil, fmt.Errorf("broker: vendor %s has a corrupt key hash", name)
	}
	copy(h[:], raw)
	tag, err := spki.ParseTag(spki.L("ecoupons-vendor", spki.L("name", name), spki.L("currency", currency)))
	if err != nil {
		return nil, err
	}
	return spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(b.pub), Subject: spki.HashPrincipal(h), Tag: tag}, b.Signer)
}

// RegisterBook accepts a signed book from its owner and holds its face
// value: it moves k × L × unit from the owner's account into the book's
// escrow, within the owner's floor (0 pre-paid; minus the credit limit
// post-paid, where the broker takes the credit risk), and returns the book
// certificate (coupons.FundingCert) every gate requires: what a gate
// accepts under it, the broker pays. Registering the same book again holds
// nothing more and returns the certificate again.
func (b *Broker) RegisterBook(ctx context.Context, owner spki.KeyHash, sb *coupons.SignedBook) (*spki.SignedCert, error) {
	if err := b.registerBook(ctx, owner, sb); err != nil {
		return nil, err
	}
	return coupons.SignFunding(sb.Book, b.Signer, time.Time{})
}

func (b *Broker) registerBook(ctx context.Context, owner spki.KeyHash, sb *coupons.SignedBook) error {
	bk := sb.Book
	if err := sb.Verify(); err != nil {
		return fmt.Errorf("%w: %w", ErrBookRefused, err)
	}
	switch {
	case bk.Owner != owner:
		return fmt.Errorf("%w: the book's owner is not the caller", ErrBookRefused)
	case bk.Broker != b.pub.Hash():
		return fmt.Errorf("%w: the book names another broker", ErrBookRefused)
	case !bk.NotAfter.After(b.Now()):
		return fmt.Errorf("%w: the book has already expired", ErrBookRefused)
	}
	face, err := bk.FaceValue()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBookRefused, err)
	}
	id := bk.ID()
	acct := UserAccount(owner, bk.Currency)
	return b.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE account = $1`, acct).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%w: no %s account for this key", ErrUnknownUser, bk.Currency)
		}
		var approved int64
		if err := tx.QueryRowContext(ctx, `SELECT approved FROM users WHERE account = $1`, acct).Scan(&approved); err != nil {
			return err
		}
		if approved == 0 {
			return fmt.Errorf("%w: the broker's administrator must approve the %s account before it funds books", ErrNotApproved, bk.Currency)
		}
		if err := checkVendorOf(ctx, tx, bk); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM books WHERE id = $1`, hex.EncodeToString(id[:])).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		if err := createAccount(ctx, tx, escrowAccount(id), KindEscrow, bk.Currency, 0); err != nil {
			return err
		}
		if _, err := post(ctx, b.DB, tx, b.Now(), "book", "book:"+hex.EncodeToString(id[:]), "hold face value", entry{acct, -face}, entry{escrowAccount(id), face}); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO books (id, owner, vendor, unit, lanes, length, salt, root, not_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			hex.EncodeToString(id[:]), acct, bk.Vendor, bk.Unit, bk.Lanes, bk.Length, hex.EncodeToString(bk.Salt[:]), hex.EncodeToString(bk.Root[:]), bk.NotAfter.Unix()); err != nil {
			return err
		}
		// An owner whose key is revoked: the book's lanes must still
		// refuse it while the book lasts.
		return extendKeyRevocation(ctx, tx, owner, bk.NotAfter.Unix())
	})
}

// checkVendorOf checks that a book's vendor is registered here and paid
// in the book's currency.
func checkVendorOf(ctx context.Context, tx *sql.Tx, bk *coupons.Book) error {
	var vcur string
	if err := tx.QueryRowContext(ctx, `SELECT currency FROM vendors WHERE name = $1`, bk.Vendor).Scan(&vcur); errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrUnknownVendor, bk.Vendor)
	} else if err != nil {
		return err
	}
	if vcur != bk.Currency {
		return fmt.Errorf("%w: vendor %s is paid in %s, the book is in %s", ErrCurrency, bk.Vendor, vcur, bk.Currency)
	}
	return nil
}

// Approve approves a user account under the users policy "approve", so
// that the broker funds its books. Approving twice is a no-op.
func (b *Broker) Approve(ctx context.Context, account string) error {
	return b.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET approved = 1 WHERE account = $1`, account)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: %s", ErrUnknownUser, account)
		}
		return nil
	})
}

// Approved reports whether a user account may fund books.
func (b *Broker) Approved(ctx context.Context, account string) (bool, error) {
	var approved int64
	err := b.DB.db.QueryRowContext(ctx, `SELECT approved FROM users WHERE account = $1`, account).Scan(&approved)
	if errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("%w: %s", ErrUnknownUser, account)
	}
	return approved != 0, err
}

// SetCreditLimit makes a user account post-paid with the given limit (0:
// pre-paid). A limit below the account's current debt is refused.
func (b *Broker) SetCreditLimit(ctx context.Context, account string, limit int64) error {
	if limit < 0 {
		return fmt.Errorf("%w: negative credit limit", ErrAmount)
	}
	a, err := b.userAccount(ctx, account)
	if err != nil {
		return err
	}
	return b.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE accounts SET floor = $1 WHERE id = $2 AND balance >= $1`, -limit, account)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var bal int64
			if err := tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = $1`, account).Scan(&bal); err != nil {
				return err
			}
			return fmt.Errorf("%w: the account owes %s, more than the new limit of %s", ErrInsufficientFunds, money(-bal, a.Currency), money(limit, a.Currency))
		}
		return nil
	})
}
