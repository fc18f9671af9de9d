package broker

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
)

// usdBook is a book of alice's in USD for vendor.
func (f *fixture) usdBook(t *testing.T, vendor string) *book {
	t.Helper()
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: vendor, Broker: f.b.PublicKey().Hash(), Owner: pub(t, f.alice).Hash(),
		Lanes: 2, Length: 16, Currency: "USD", Unit: milli, NotAfter: f.now.Add(30 * 24 * time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := bk.Sign(f.alice)
	if err != nil {
		t.Fatal(err)
	}
	return &book{sb: sb, sec: sec, anchors: anchors}
}

// TestSecondCurrencyAccountIsSeparate: one key registers in EUR and USD;
// both accounts are its users, listed, funded and charged separately; a
// book in USD is held from the USD account only.
func TestSecondCurrencyAccountIsSeparate(t *testing.T) {
	onBoth(t, testSecondCurrencyAccountIsSeparate)
}

func testSecondCurrencyAccountIsSeparate(t *testing.T) {
	f := newFixture(t)
	usd, _, err := f.b.RegisterUser(ctx, pub(t, f.alice), "USD", 0, f.now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if usd == f.acct || !strings.HasSuffix(usd, ":USD") {
		t.Fatalf("USD account %q (EUR %q)", usd, f.acct)
	}
	accts, err := f.b.Accounts(ctx, AccountFilter{Key: pub(t, f.alice).Hash()})
	if err != nil || len(accts) != 2 {
		t.Fatalf("alice's accounts: %+v %v", accts, err)
	}
	if _, err := f.b.RegisterVendor(ctx, "us.example", pub(t, testKey("us")), "USD"); err != nil {
		t.Fatal(err)
	}
	// No USD yet: the USD book is refused though alice holds 10 EUR.
	bk := f.usdBook(t, "us.example")
	_, err = f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb)
	if !errors.Is(err, ErrInsufficientFunds) || !strings.Contains(err.Error(), "holds 0 USD, needs 0.032 USD") {
		t.Fatalf("USD book without USD: %v", err)
	}
	if err := f.b.TopUp(ctx, usd, coupons.NanosPerUnit, "usd-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	if got := f.balance(t, usd); got != coupons.NanosPerUnit-32*milli {
		t.Errorf("USD balance %d", got)
	}
	if got := f.balance(t, f.acct); got != 10*coupons.NanosPerUnit {
		t.Errorf("EUR balance %d: a USD book touched it", got)
	}
	// Registering again keeps both accounts, and the EUR one approved.
	if _, _, err := f.b.RegisterUser(ctx, pub(t, f.alice), "EUR", 0, f.now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{f.acct, usd} {
		if ok, err := f.b.Approved(ctx, a); !ok || err != nil {
			t.Errorf("%s approved %v %v", a, ok, err)
		}
	}
}

// TestBookInOtherCurrencyThanVendorRefused: a USD book for a vendor paid in
// EUR is refused with ErrCurrency (400 currency_mismatch), holding nothing.
func TestBookInOtherCurrencyThanVendorRefused(t *testing.T) {
	f := newFixture(t)
	usd, _, err := f.b.RegisterUser(ctx, pub(t, f.alice), "USD", 0, f.now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.b.TopUp(ctx, usd, coupons.NanosPerUnit, "usd-1"); err != nil {
		t.Fatal(err)
	}
	_, err = f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), f.usdBook(t, "news.example").sb)
	if !errors.Is(err, ErrCurrency) || !strings.Contains(err.Error(), "news.example is paid in EUR") {
		t.Fatalf("USD book at an EUR vendor: %v", err)
	}
	if got := f.balance(t, usd); got != coupons.NanosPerUnit {
		t.Errorf("USD balance %d after a refused book", got)
	}
}

// TestVendorCurrencyFixedAtRegistration: registering a vendor name again
// in another currency is refused; its certificate keeps its currency.
func TestVendorCurrencyFixedAtRegistration(t *testing.T) {
	f := newFixture(t)
	_, err := f.b.RegisterVendor(ctx, "news.example", pub(t, f.vendor), "USD")
	if !errors.Is(err, ErrCurrency) || !strings.Contains(err.Error(), "registered in EUR") {
		t.Fatalf("vendor re-registered in USD: %v", err)
	}
	if _, err := f.b.RegisterVendor(ctx, "news.example", pub(t, f.vendor), "EUR"); err != nil {
		t.Fatalf("the same registration again: %v", err)
	}
	vs, err := f.b.Vendors(ctx)
	if err != nil || len(vs) != 1 || vs[0].Currency != "EUR" {
		t.Fatalf("vendors %+v %v", vs, err)
	}
}

// TestRedemptionInOtherCurrencyRefused: a book whose currency is not its
// vendor's (a row from before the check, or tampering) is never paid
// across currencies: the item is refused as currency_mismatch, for good,
// and no money moves.
func TestRedemptionInOtherCurrencyRefused(t *testing.T) {
	onBoth(t, testRedemptionInOtherCurrencyRefused)
}

func testRedemptionInOtherCurrencyRefused(t *testing.T) {
	f := newFixture(t)
	bk := f.newBook(t, 2, 16, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	// The vendor's account moves to USD behind the broker's back.
	db := f.b.DB.db
	if _, err := db.Exec(`INSERT INTO accounts (id, kind, currency, floor, balance, created) VALUES ('vendor:news.example:USD', 'vendor', 'USD', 0, 0, 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE vendors SET currency = 'USD', account = 'vendor:news.example:USD' WHERE name = 'news.example'`); err != nil {
		t.Fatal(err)
	}
	escrow := f.balance(t, escrowAccount(bk.sb.Book.ID()))
	res, err := f.b.Redeem(ctx, pub(t, f.vendor).Hash(), []Redemption{bk.coupon(0, 5, true)})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Code != RedeemCurrencyMismatch || !RedeemPermanent(res[0].Code) || res[0].Amount != 0 {
		t.Fatalf("redemption across currencies: %+v", res[0])
	}
	if got := f.balance(t, escrowAccount(bk.sb.Book.ID())); got != escrow {
		t.Errorf("escrow %d, was %d", got, escrow)
	}
	if got := f.balance(t, "vendor:news.example:USD"); got != 0 {
		t.Errorf("vendor paid %d", got)
	}
}

// TestUsersMigrationAdoptsSecondCurrencyAccounts: a database of schema 11
// (users keyed by key) with a second-currency account the old table could
// not list migrates to users keyed by account, with both accounts the
// key's.
func TestUsersMigrationAdoptsSecondCurrencyAccounts(t *testing.T) {
	onBoth(t, testUsersMigrationAdoptsSecondCurrencyAccounts)
}

func testUsersMigrationAdoptsSecondCurrencyAccounts(t *testing.T) {
	f := newFixture(t)
	db := f.b.DB.db
	kh := hexKey(pub(t, f.alice).Hash())
	usd := UserAccount(pub(t, f.alice).Hash(), "USD")
	for _, stmt := range []string{
		`DROP INDEX users_key`, `DROP TABLE users`,
		`CREATE TABLE users (key_hash TEXT PRIMARY KEY, account TEXT NOT NULL REFERENCES accounts(id), currency TEXT NOT NULL, created BIGINT NOT NULL, approved BIGINT NOT NULL DEFAULT 1)`,
		`INSERT INTO users (key_hash, account, currency, created, approved) VALUES ('` + kh + `', '` + f.acct + `', 'EUR', 1, 1)`,
		`INSERT INTO accounts (id, kind, currency, floor, balance, created) VALUES ('` + usd + `', 'user', 'USD', 0, 0, 2)`,
		`INSERT INTO accounts (id, kind, currency, floor, balance, created) VALUES ('world:USD', 'world', 'USD', ` + fmtInt(noFloor) + `, 0, 2)`,
		`UPDATE schema_version SET version = 11`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if err := f.b.DB.migrate(ctx); err != nil {
		t.Fatal(err)
	}
	accts, err := f.b.Accounts(ctx, AccountFilter{Key: pub(t, f.alice).Hash()})
	if err != nil || len(accts) != 2 || accts[0].Currency != "EUR" || accts[1].Currency != "USD" || !accts[1].Approved {
		t.Fatalf("after the migration: %+v %v", accts, err)
	}
	if err := f.b.TopUp(ctx, usd, milli, "m"); err != nil {
		t.Fatal(err)
	}
}

// TestCreditLimitBelowDebtRefusedInCurrencyUnits: a limit below what the
// account owes is refused, saying both in currency units.
func TestCreditLimitBelowDebtRefusedInCurrencyUnits(t *testing.T) {
	f := newFixture(t)
	if err := f.b.SetCreditLimit(ctx, f.acct, 20*coupons.NanosPerUnit); err != nil {
		t.Fatal(err)
	}
	bk := f.newBook(t, 4, 4096, milli) // 16.384 EUR of 10 + 20
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	err := f.b.SetCreditLimit(ctx, f.acct, coupons.NanosPerUnit)
	if !errors.Is(err, ErrInsufficientFunds) || !strings.Contains(err.Error(), "owes 6.384 EUR, more than the new limit of 1 EUR") {
		t.Fatalf("limit below the debt: %v", err)
	}
}

func fmtInt(n int64) string { return strconv.FormatInt(n, 10) }

// TestVendorKeyWithTwoNamesPaidPerName: a vendor key registered under a
// name in EUR and another in USD gets each book's coupons paid into the
// account of the book's name, in its currency, in one batch; lane checks
// take both names; another vendor's book stays refused.
func TestVendorKeyWithTwoNamesPaidPerName(t *testing.T) {
	onBoth(t, testVendorKeyWithTwoNamesPaidPerName)
}

func testVendorKeyWithTwoNamesPaidPerName(t *testing.T) {
	f := newFixture(t)
	vk := pub(t, f.vendor)
	if _, err := f.b.RegisterVendor(ctx, "us.news.example", vk, "USD"); err != nil {
		t.Fatal(err)
	}
	usd, _, err := f.b.RegisterUser(ctx, pub(t, f.alice), "USD", 0, f.now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.b.TopUp(ctx, usd, coupons.NanosPerUnit, "usd-1"); err != nil {
		t.Fatal(err)
	}
	eur, us := f.newBook(t, 2, 16, milli), f.usdBook(t, "us.news.example")
	for _, bk := range []*book{eur, us} {
		if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
			t.Fatal(err)
		}
		lane := coupons.LaneID{Book: bk.sb.Book.ID(), Lane: 1}
		proof, _ := coupons.MerkleProof(bk.anchors, 1)
		if _, err := f.b.CheckLane(ctx, vk.Hash(), LaneQuery{Lane: lane, Anchor: bk.anchors[1], Proof: proof}); err != nil {
			t.Fatalf("lane check of %s: %v", bk.sb.Book.Vendor, err)
		}
	}
	res, err := f.b.Redeem(ctx, vk.Hash(), []Redemption{eur.coupon(0, 3, true), us.coupon(0, 5, true)})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("item refused: %+v", r)
		}
	}
	if got := f.balance(t, "vendor:news.example:EUR"); got != 3*milli {
		t.Errorf("EUR vendor account %d", got)
	}
	if got := f.balance(t, "vendor:us.news.example:USD"); got != 5*milli {
		t.Errorf("USD vendor account %d", got)
	}
	// A third vendor's key still gets neither.
	if _, err := f.b.RegisterVendor(ctx, "other.example", pub(t, testKey("other")), "EUR"); err != nil {
		t.Fatal(err)
	}
	res, _ = f.b.Redeem(ctx, pub(t, testKey("other")).Hash(), []Redemption{us.coupon(1, 2, true)})
	if res[0].Code != RedeemNotYourBook {
		t.Errorf("another vendor's book: %+v", res[0])
	}
}
