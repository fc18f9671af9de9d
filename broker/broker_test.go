package broker

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/internal/testutil"

	"github.com/ecoupons/ecoupons/internal/testpg"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

func testKey(label string) ed25519.PrivateKey { return testutil.Key(label) }

func pub(t testing.TB, k ed25519.PrivateKey) *spki.PublicKey {
	p, err := spki.NewPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var ctx = context.Background()

// The PostgreSQL server of this test binary (nil when unavailable) and
// which database the fixture opens: every ledger test runs on SQLite and
// on PostgreSQL (onBoth).
var (
	pgServer *testpg.Server
	pgErr    error
	usePG    bool
	pgDBs    atomic.Int32
)

func TestMain(m *testing.M) {
	pgServer, pgErr = testpg.StartServer()
	code := m.Run()
	if pgServer != nil {
		pgServer.Stop()
	}
	os.Exit(code)
}

func openTestDB(t testing.TB) (*DB, error) {
	if !usePG {
		return OpenSQLite(ctx, filepath.Join(t.TempDir(), "broker.db"))
	}
	admin, err := sql.Open("pgx", pgServer.URL)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	name := fmt.Sprintf("broker_%d", pgDBs.Add(1))
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, err
	}
	return OpenPostgres(ctx, strings.Replace(pgServer.URL, "/postgres?", "/"+name+"?", 1))
}

// onBoth runs f on SQLite and on PostgreSQL.
func onBoth(t *testing.T, f func(t *testing.T)) {
	t.Run("sqlite", func(t *testing.T) { usePG = false; f(t) })
	t.Run("postgres", func(t *testing.T) {
		if pgErr != nil {
			testpg.Unavailable(t, pgErr)
		}
		usePG = true
		defer func() { usePG = false }()
		f(t)
	})
}

type fixture struct {
	b                     *Broker
	alice, vendor, broker ed25519.PrivateKey
	acct                  string
	now                   time.Time
}

// newFixture: a broker on a fresh SQLite file, alice with a pre-paid EUR
// account topped up with 10 EUR, and the vendor news.example. The ledger's
// invariants are checked when the test ends.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	db, err := openTestDB(t)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{alice: testKey("alice"), vendor: testKey("vendor"), broker: testKey("broker"), now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	if f.b, err = New(db, f.broker); err != nil {
		t.Fatal(err)
	}
	f.b.Now = func() time.Time { return f.now }
	t.Cleanup(func() {
		if err := db.CheckInvariants(ctx); err != nil {
			t.Errorf("ledger invariants: %v", err)
		}
		db.Close()
	})
	acct, cert, err := f.b.RegisterUser(ctx, pub(t, f.alice), "EUR", 0, f.now.Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.Verify(); err != nil || cert.Cert.Subject.Hash != pub(t, f.alice).Hash() {
		t.Fatalf("user certificate: %v", err)
	}
	f.acct = acct
	if err := f.b.TopUp(ctx, acct, 10*coupons.NanosPerUnit, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.RegisterVendor(ctx, "news.example", pub(t, f.vendor), "EUR"); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) balance(t *testing.T, id string) int64 {
	a, err := f.b.DB.Account(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Balance
}

type book struct {
	sb      *coupons.SignedBook
	sec     *coupons.Secrets
	anchors []coupons.Value
}

func (f *fixture) newBook(t testing.TB, lanes, length uint32, unit int64) *book {
	t.Helper()
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: f.b.PublicKey().Hash(), Owner: pub(t, f.alice).Hash(),
		Lanes: lanes, Length: length, Currency: "EUR", Unit: unit, NotAfter: f.now.Add(30 * 24 * time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := bk.Sign(f.alice)
	if err != nil {
		t.Fatal(err)
	}
	return &book{sb: sb, sec: sec, anchors: anchors}
}

// coupon returns the redemption of coupon i of lane s (with the anchor
// and proof when first is set).
func (bk *book) coupon(s, i uint32, first bool) Redemption {
	b := bk.sb.Book
	tag := b.LaneTag(s)
	r := Redemption{Lane: coupons.LaneID{Book: b.ID(), Lane: s}, Index: i, Value: coupons.Walk(&tag, b.Length, bk.sec.Seed(s), i)}
	if first {
		a := bk.anchors[s]
		r.Anchor = &a
		r.Proof, _ = coupons.MerkleProof(bk.anchors, s)
	}
	return r
}

const milli = coupons.NanosPerUnit / 1000

func TestBookHoldsFaceValue(t *testing.T) { onBoth(t, testBookHoldsFaceValue) }

func testBookHoldsFaceValue(t *testing.T) {
	f := newFixture(t)
	bk := f.newBook(t, 4, 16, milli) // 64 coupons of 0.001 EUR
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	if got := f.balance(t, f.acct); got != 10*coupons.NanosPerUnit-64*milli {
		t.Errorf("user balance %d", got)
	}
	if got := f.balance(t, escrowAccount(bk.sb.Book.ID())); got != 64*milli {
		t.Errorf("escrow %d", got)
	}
	// Registering again holds nothing more.
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	if got := f.balance(t, f.acct); got != 10*coupons.NanosPerUnit-64*milli {
		t.Errorf("user balance after re-registration %d", got)
	}
	// A book worth more than the balance is refused and changes nothing.
	big := f.newBook(t, 16, 1<<10, coupons.NanosPerUnit) // 16384 EUR
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), big.sb); !errors.Is(err, ErrInsufficientFunds) {
		t.Errorf("book beyond the balance: %v", err)
	}
	if got := f.balance(t, f.acct); got != 10*coupons.NanosPerUnit-64*milli {
		t.Errorf("user balance after a refused book %d", got)
	}
	// Someone else registering alice's book, a book for another broker, for
	// an unknown vendor: refused.
	if _, err := f.b.RegisterBook(ctx, pub(t, testKey("mallory")).Hash(), bk.sb); !errors.Is(err, ErrBookRefused) {
		t.Errorf("book registered by a non-owner: %v", err)
	}
}

func TestRedeem(t *testing.T) { onBoth(t, testRedeem) }

func testRedeem(t *testing.T) {
	f := newFixture(t)
	f.b.FeeBasisPoints = 250 // 2.5 %
	bk := f.newBook(t, 4, 16, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	vk := pub(t, f.vendor).Hash()
	vacct := "vendor:news.example:EUR"
	bad := bk.coupon(2, 5, true)
	bad.Value[0] ^= 1
	res, err := f.b.Redeem(ctx, vk, []Redemption{bk.coupon(0, 5, true), bk.coupon(1, 16, true), bad, bk.coupon(3, 4, false)})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Coupons != 5 || res[1].Coupons != 16 || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("results %+v", res)
	}
	if !errors.Is(res[2].Err, ErrRedemption) || !errors.Is(res[3].Err, ErrRedemption) {
		t.Errorf("a bad coupon and a first redemption without anchor must be refused: %v / %v", res[2].Err, res[3].Err)
	}
	paid := int64(21 * milli)
	fee := paid * 250 / 10000
	if got := f.balance(t, vacct); got != paid-fee {
		t.Errorf("vendor got %d, want %d", got, paid-fee)
	}
	if got := f.balance(t, feesAccount("EUR")); got != fee {
		t.Errorf("fees %d, want %d", got, fee)
	}
	// The same batch again pays nothing; a higher coupon pays the increase.
	res, _ = f.b.Redeem(ctx, vk, []Redemption{bk.coupon(0, 5, true), bk.coupon(1, 16, false)})
	if res[0].Coupons != 0 || res[1].Coupons != 0 || res[0].Err != nil {
		t.Errorf("retry paid again: %+v", res)
	}
	res, _ = f.b.Redeem(ctx, vk, []Redemption{bk.coupon(0, 9, false), bk.coupon(0, 3, false)})
	if res[0].Coupons != 4 || res[1].Coupons != 0 {
		t.Errorf("increase: %+v", res)
	}
	// Another key cannot redeem the vendor's book.
	if _, err := f.b.Redeem(ctx, pub(t, testKey("mallory")).Hash(), []Redemption{bk.coupon(2, 1, true)}); !errors.Is(err, ErrUnknownVendor) {
		t.Errorf("redemption by an unregistered key: %v", err)
	}
	if _, err := f.b.RegisterVendor(ctx, "other.example", pub(t, testKey("other")), "EUR"); err != nil {
		t.Fatal(err)
	}
	res, _ = f.b.Redeem(ctx, pub(t, testKey("other")).Hash(), []Redemption{bk.coupon(2, 1, true)})
	if !errors.Is(res[0].Err, ErrNotYourBook) {
		t.Errorf("another vendor redeeming: %v", res[0].Err)
	}
	// A forged proof on a first redemption.
	forged := bk.coupon(2, 1, true)
	forged.Proof[0][0] ^= 1
	res, _ = f.b.Redeem(ctx, vk, []Redemption{forged})
	if !errors.Is(res[0].Err, coupons.ErrBadProof) {
		t.Errorf("forged proof: %v", res[0].Err)
	}
	// A vendor name is not transferable to another key.
	if _, err := f.b.RegisterVendor(ctx, "news.example", pub(t, testKey("mallory")), "EUR"); !errors.Is(err, ErrVendorTaken) {
		t.Errorf("vendor name taken over: %v", err)
	}
}

// TestConcurrentRedemptionsPayOnce: three redeemers (the gates of a fleet)
// submit overlapping batches for the same lanes at once; the vendor is
// paid exactly for the highest coupon of each lane.
func TestConcurrentRedemptionsPayOnce(t *testing.T) { onBoth(t, testConcurrentRedemptionsPayOnce) }

func testConcurrentRedemptionsPayOnce(t *testing.T) {
	f := newFixture(t)
	bk := f.newBook(t, 8, 64, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	vk := pub(t, f.vendor).Hash()
	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for step := uint32(1); step <= 8; step++ {
				var batch []Redemption
				for s := uint32(0); s < 8; s++ {
					batch = append(batch, bk.coupon(s, step*8-uint32(g), true))
				}
				if _, err := f.b.Redeem(ctx, vk, batch); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if got, want := f.balance(t, "vendor:news.example:EUR"), int64(8*64*milli); got != want {
		t.Errorf("vendor paid %d, want exactly %d", got, want)
	}
	if got := f.balance(t, escrowAccount(bk.sb.Book.ID())); got != 0 {
		t.Errorf("escrow left %d", got)
	}
}

func TestReleaseExpired(t *testing.T) { onBoth(t, testReleaseExpired) }

func testReleaseExpired(t *testing.T) {
	f := newFixture(t)
	bk := f.newBook(t, 2, 16, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	vk := pub(t, f.vendor).Hash()
	if _, err := f.b.Redeem(ctx, vk, []Redemption{bk.coupon(0, 10, true)}); err != nil {
		t.Fatal(err)
	}
	before := f.balance(t, f.acct)
	if n, err := f.b.ReleaseExpired(ctx); err != nil || n != 0 {
		t.Fatalf("released %d before expiry: %v", n, err)
	}
	f.now = f.now.Add(40 * 24 * time.Hour) // 30 days of validity + 7 of grace are over
	if n, err := f.b.ReleaseExpired(ctx); err != nil || n != 1 {
		t.Fatalf("released %d: %v", n, err)
	}
	if got := f.balance(t, f.acct); got != before+22*milli {
		t.Errorf("owner got back %d, want %d", got-before, 22*milli)
	}
	res, _ := f.b.Redeem(ctx, vk, []Redemption{bk.coupon(0, 12, false)})
	if !errors.Is(res[0].Err, ErrBookClosed) {
		t.Errorf("redemption after release: %v", res[0].Err)
	}
	if n, _ := f.b.ReleaseExpired(ctx); n != 0 {
		t.Error("released twice")
	}
}

func TestAccountsAndTopUps(t *testing.T) { onBoth(t, testAccountsAndTopUps) }

func testAccountsAndTopUps(t *testing.T) {
	f := newFixture(t)
	// Idempotent top-ups.
	if err := f.b.TopUp(ctx, f.acct, 5, "t1"); err != nil {
		t.Fatal(err)
	}
	if got := f.balance(t, f.acct); got != 10*coupons.NanosPerUnit {
		t.Errorf("a replayed top-up credited again: %d", got)
	}
	for _, amt := range []int64{0, -5} {
		if err := f.b.TopUp(ctx, f.acct, amt, "x"); !errors.Is(err, ErrAmount) {
			t.Errorf("top-up of %d: %v", amt, err)
		}
	}
	if err := f.b.TopUp(ctx, "vendor:news.example:EUR", 5, "v"); !errors.Is(err, ErrNoAccount) {
		t.Errorf("top-up of a vendor account: %v", err)
	}
	// A post-paid user may go down to minus its credit limit.
	bob := testKey("bob")
	acct, _, err := f.b.RegisterUser(ctx, pub(t, bob), "EUR", 1*coupons.NanosPerUnit, f.now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	bk, sec, anchors, _ := coupons.Create(coupons.Params{Vendor: "news.example", Broker: f.b.PublicKey().Hash(), Owner: pub(t, bob).Hash(),
		Lanes: 1, Length: 512, Currency: "EUR", Unit: milli, NotAfter: f.now.Add(time.Hour)}, nil)
	_, _ = sec, anchors
	sb, _ := bk.Sign(bob)
	if _, err := f.b.RegisterBook(ctx, pub(t, bob).Hash(), sb); err != nil {
		t.Fatalf("post-paid book within the limit: %v", err)
	}
	if got := f.balance(t, acct); got != -512*milli {
		t.Errorf("post-paid balance %d", got)
	}
	bk2, _, _, _ := coupons.Create(coupons.Params{Vendor: "news.example", Broker: f.b.PublicKey().Hash(), Owner: pub(t, bob).Hash(),
		Lanes: 1, Length: 1024, Currency: "EUR", Unit: milli, NotAfter: f.now.Add(time.Hour)}, nil)
	sb2, _ := bk2.Sign(bob)
	if _, err := f.b.RegisterBook(ctx, pub(t, bob).Hash(), sb2); !errors.Is(err, ErrInsufficientFunds) {
		t.Errorf("post-paid book beyond the limit: %v", err)
	}
	// Wrong currency.
	if _, _, err := f.b.RegisterUser(ctx, pub(t, bob), "eur", 0, f.now); err == nil {
		t.Error("lower-case currency accepted")
	}
}

// A broker that certifies a book holds its face value: refused books get
// no certificate, and the certificate it issues is for exactly that book.
func TestBookCertificateOnlyForFundedBooks(t *testing.T) {
	f := newFixture(t)
	bk := f.newBook(t, 2, 8, milli)
	cert, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb)
	if err != nil {
		t.Fatal(err)
	}
	if err := coupons.VerifyFunding(cert, bk.sb.Book, f.now, nil); err != nil {
		t.Fatalf("book certificate: %v", err)
	}
	// Unfunded: a book beyond the account's balance gets no certificate.
	big := f.newBook(t, 64, 1<<16, milli)
	if cert, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), big.sb); !errors.Is(err, ErrInsufficientFunds) || cert != nil {
		t.Errorf("unfunded book: %v, certificate %v", err, cert != nil)
	}
	// An unregistered key's self-made book gets none either.
	mallory := testKey("mallory")
	mb, _, _, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: f.b.PublicKey().Hash(), Owner: pub(t, mallory).Hash(),
		Lanes: 1, Length: 8, Currency: "EUR", Unit: milli, NotAfter: f.now.Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	msb, _ := mb.Sign(mallory)
	if cert, err := f.b.RegisterBook(ctx, pub(t, mallory).Hash(), msb); !errors.Is(err, ErrUnknownUser) || cert != nil {
		t.Errorf("book of an unregistered key: %v, certificate %v", err, cert != nil)
	}
}

// Under the users policy "approve", a registered and topped-up account
// funds no book until an administrator approves it.
func TestUnapprovedUserGetsNoBookCertificate(t *testing.T) {
	f := newFixture(t)
	f.b.ApproveUsers = true
	carol := testKey("carol")
	acct, _, err := f.b.RegisterUser(ctx, pub(t, carol), "EUR", 0, f.now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := f.b.Approved(ctx, acct); err != nil || ok {
		t.Fatalf("new account approved %v: %v", ok, err)
	}
	if err := f.b.TopUp(ctx, acct, coupons.NanosPerUnit, "carol-1"); err != nil {
		t.Fatal(err)
	}
	bk, _, _, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: f.b.PublicKey().Hash(), Owner: pub(t, carol).Hash(),
		Lanes: 1, Length: 8, Currency: "EUR", Unit: milli, NotAfter: f.now.Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := bk.Sign(carol)
	if cert, err := f.b.RegisterBook(ctx, pub(t, carol).Hash(), sb); !errors.Is(err, ErrNotApproved) || cert != nil {
		t.Fatalf("unapproved account's book: %v", err)
	}
	if got := f.balance(t, acct); got != coupons.NanosPerUnit {
		t.Errorf("a refused book moved money: balance %d", got)
	}
	if err := f.b.Approve(ctx, acct); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Approve(ctx, "user:nobody:EUR"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("approving an unknown account: %v", err)
	}
	if _, err := f.b.RegisterBook(ctx, pub(t, carol).Hash(), sb); err != nil {
		t.Fatalf("approved account's book: %v", err)
	}
	// Accounts opened before the policy (alice's) stay approved.
	if ok, err := f.b.Approved(ctx, f.acct); err != nil || !ok {
		t.Errorf("existing account approved %v: %v", ok, err)
	}
}

// TestSQLitePragmas: a SQLite broker database runs with the durability
// PRAGMAs OpenSQLite documents (WAL, synchronous FULL, foreign keys), and
// the defaults the redemption measurements of redeem.go assume.
func TestSQLitePragmas(t *testing.T) {
	db, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "broker.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for p, want := range map[string]string{"journal_mode": "wal", "synchronous": "2", "foreign_keys": "1", "temp_store": "0", "wal_autocheckpoint": "1000"} {
		var got string
		if err := db.db.QueryRowContext(ctx, "PRAGMA "+p).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("PRAGMA %s = %s, want %s", p, got, want)
		}
	}
}
