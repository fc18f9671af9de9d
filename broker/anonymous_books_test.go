package broker

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/blindfund"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testutil"
	"github.com/ecoupons/ecoupons/spki"
)

// anonFace is the face value of the anonymous test books: 3 lanes of 64
// coupons of 0.001 EUR.
const anonFace = 192_000_000

// anonBook is a reader's anonymous book: its fresh owner key, secrets and
// anchors, and the proof the broker blind-signed for it.
type anonBook struct {
	key     ed25519.PrivateKey
	sb      *coupons.SignedBook
	sec     *coupons.Secrets
	anchors []coupons.Value
	proof   *blindfund.Proof
}

// buyAnonymous has account (of key payer) pay for an anonymous book of
// lanes × 64 coupons of 0.001 EUR under d, the broker signing it blindly.
func buyAnonymous(t *testing.T, f *fixture, payer ed25519.PrivateKey, account string, d *Denomination, lanes uint32, issue string) *anonBook {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: f.b.PublicKey().Hash(), Owner: pub(t, key).Hash(),
		Lanes: lanes, Length: 64, Currency: "EUR", Unit: 1_000_000, NotAfter: f.now.AddDate(0, 0, 10)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := bk.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	req, blinded, err := blindfund.Blind(d.Denomination, bk.ID(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := f.b.IssueAnonymous(ctx, pub(t, payer).Hash(), account, d.ID(), blinded, issue)
	if err != nil {
		t.Fatal(err)
	}
	p, err := req.Finish(sig)
	if err != nil {
		t.Fatal(err)
	}
	return &anonBook{key: key, sb: sb, sec: sec, anchors: anchors, proof: p}
}

// coupon is the redemption of coupon i of lane s (with its anchor and
// proof when first is set).
func (a *anonBook) coupon(s, i uint32, first bool) Redemption {
	b := a.sb.Book
	tag := b.LaneTag(s)
	r := Redemption{Lane: coupons.LaneID{Book: b.ID(), Lane: s}, Index: i, Value: coupons.Walk(&tag, b.Length, a.sec.Seed(s), i)}
	if first {
		r.Anchor = &a.anchors[s]
		r.Proof, _ = coupons.MerkleProof(a.anchors, s)
	}
	return r
}

func newAnonDenomination(t *testing.T, f *fixture) *Denomination {
	d, err := f.b.NewDenomination(ctx, anonFace, "EUR", f.now.Add(-time.Hour), f.now.AddDate(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestAnonymousBookRedeemedFromPool(t *testing.T) { onBoth(t, testAnonymousBookRedeemedFromPool) }

// testAnonymousBookRedeemedFromPool: the vendor registers an anonymous
// book (the pool gives its face value to the book's escrow, once however
// often it is registered) and is paid from it; a coupon redeemed twice
// pays once, and a coupon past the lane's end is refused. Registrations
// by another vendor, of an altered book, of a book of another face value
// than its denomination's, are refused.
func testAnonymousBookRedeemedFromPool(t *testing.T) {
	f := newFixture(t)
	d := newAnonDenomination(t, f)
	a := buyAnonymous(t, f, f.alice, f.acct, d, 3, "i-1")
	vendor := pub(t, f.vendor).Hash()
	for range 2 {
		if err := f.b.RegisterAnonymous(ctx, vendor, a.sb, a.proof); err != nil {
			t.Fatal(err)
		}
	}
	id := a.sb.Book.ID()
	if pool, escrow := f.balance(t, anonAccount("EUR")), f.balance(t, escrowAccount(id)); pool != 0 || escrow != anonFace {
		t.Fatalf("pool %d, escrow %d after registering twice", pool, escrow)
	}
	res, err := f.b.Redeem(ctx, vendor, []Redemption{a.coupon(0, 5, true), a.coupon(1, 64, true)})
	if err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("redemption: %v %+v", err, res)
	}
	paid := f.balance(t, "vendor:news.example:EUR")
	if paid != 69*1_000_000 {
		t.Fatalf("vendor paid %d", paid)
	}
	// Double redemption, and past the face value.
	res, err = f.b.Redeem(ctx, vendor, []Redemption{a.coupon(0, 5, false), {Lane: coupons.LaneID{Book: id, Lane: 1}, Index: 65}})
	if err != nil || res[0].Coupons != 0 || res[1].Code != RedeemBadIndex {
		t.Fatalf("double or past-face redemption: %v %+v", err, res)
	}
	if got := f.balance(t, "vendor:news.example:EUR"); got != paid {
		t.Fatalf("vendor paid %d more", got-paid)
	}

	// Another vendor's key.
	mallory := testKey("mallory")
	if _, err := f.b.RegisterVendor(ctx, "other.example", pub(t, mallory), "EUR"); err != nil {
		t.Fatal(err)
	}
	b2 := buyAnonymous(t, f, f.alice, f.acct, d, 3, "i-2")
	if err := f.b.RegisterAnonymous(ctx, pub(t, mallory).Hash(), b2.sb, b2.proof); !errors.Is(err, ErrNotYourBook) {
		t.Fatalf("another vendor registers the book: %v", err)
	}
	// An altered commitment: b2's proof on another book.
	b3 := buyAnonymous(t, f, f.alice, f.acct, d, 3, "i-3")
	if err := f.b.RegisterAnonymous(ctx, vendor, b3.sb, b2.proof); !errors.Is(err, blindfund.ErrBadSignature) {
		t.Fatalf("an altered book: %v", err)
	}
	// A book of 4 lanes blind-signed under the 3-lane denomination.
	big := buyAnonymous(t, f, f.alice, f.acct, d, 4, "i-4")
	if err := f.b.RegisterAnonymous(ctx, vendor, big.sb, big.proof); !errors.Is(err, blindfund.ErrWrongDenomination) {
		t.Fatalf("a bigger book: %v", err)
	}
	if got := f.balance(t, anonAccount("EUR")); got != 3*anonFace {
		t.Fatalf("the pool holds %d for the three unregistered books", got)
	}
}

func TestAnonymousRefundOnce(t *testing.T) { onBoth(t, testAnonymousRefundOnce) }

// testAnonymousRefundOnce: the unspent value of an expired anonymous book
// goes to any account whose key the caller names, proven by the book's
// owner key, once: a second refund is refused, as is one before the
// redemption grace, one by another key, and a redemption after it. A book
// no gate ever registered is refunded from the pool. Releasing expired
// books leaves anonymous books to their owners.
func testAnonymousRefundOnce(t *testing.T) {
	f := newFixture(t)
	d := newAnonDenomination(t, f)
	a := buyAnonymous(t, f, f.alice, f.acct, d, 3, "i-1")
	unused := buyAnonymous(t, f, f.alice, f.acct, d, 3, "i-2")
	vendor := pub(t, f.vendor).Hash()
	if err := f.b.RegisterAnonymous(ctx, vendor, a.sb, a.proof); err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.Redeem(ctx, vendor, []Redemption{a.coupon(0, 10, true)}); err != nil {
		t.Fatal(err)
	}
	bob := testKey("bob")
	bobAcct, _, err := f.b.RegisterUser(ctx, pub(t, bob), "EUR", 0, f.now.AddDate(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	owner := pub(t, a.key).Hash()
	if _, err := f.b.RefundAnonymous(ctx, owner, a.sb, a.proof, bobAcct); !errors.Is(err, ErrNotExpired) {
		t.Fatalf("a refund while the book is spendable: %v", err)
	}
	f.now = a.sb.Book.NotAfter.Add(f.b.ReleaseGrace + time.Minute)
	if n, err := f.b.ReleaseExpired(ctx); err != nil || n != 0 {
		t.Fatalf("released %d books: %v", n, err)
	}
	if _, err := f.b.RefundAnonymous(ctx, pub(t, f.alice).Hash(), a.sb, a.proof, bobAcct); !errors.Is(err, errForbidden) {
		t.Fatalf("a refund by alice's key (not the book's): %v", err)
	}
	got, err := f.b.RefundAnonymous(ctx, owner, a.sb, a.proof, bobAcct)
	if err != nil || got != anonFace-10*1_000_000 || f.balance(t, bobAcct) != got {
		t.Fatalf("refund: %d %v, bob holds %d", got, err, f.balance(t, bobAcct))
	}
	if _, err := f.b.RefundAnonymous(ctx, owner, a.sb, a.proof, bobAcct); !errors.Is(err, ErrRefunded) {
		t.Fatalf("a second refund: %v", err)
	}
	if _, err := f.b.RefundAnonymous(ctx, owner, a.sb, a.proof, f.acct); !errors.Is(err, ErrRefunded) {
		t.Fatalf("a second refund to another account: %v", err)
	}
	res, err := f.b.Redeem(ctx, vendor, []Redemption{a.coupon(0, 12, false)})
	if err != nil || res[0].Code != RedeemBookClosed {
		t.Fatalf("a redemption after the refund: %v %+v", err, res)
	}
	// The unused book, never registered: its whole face value.
	if got, err := f.b.RefundAnonymous(ctx, pub(t, unused.key).Hash(), unused.sb, unused.proof, f.acct); err != nil || got != anonFace {
		t.Fatalf("refund of an unregistered book: %d %v", got, err)
	}
	if got := f.balance(t, anonAccount("EUR")); got != 0 {
		t.Fatalf("the pool holds %d", got)
	}
}

// TestAnonymousRefundOverHTTP: the owner key, unknown to the broker,
// reads its book's thefts (none) and refunds over the API; a second
// refund is 409 already_refunded.
func TestAnonymousRefundOverHTTP(t *testing.T) {
	f := newFixture(t)
	d := newAnonDenomination(t, f)
	a := buyAnonymous(t, f, f.alice, f.acct, d, 3, "i-1")
	f.now = a.sb.Book.NotAfter.Add(f.b.ReleaseGrace + time.Minute)
	body := map[string]string{"book": string(spki.Transport(a.sb.Sexp())), "funding": string(spki.Transport(a.proof.Sexp())), "account": f.acct}
	srv := httptest.NewServer(&API{Broker: f.b})
	defer srv.Close()
	owner := &apiClient{t: t, url: srv.URL, key: a.key, now: func() time.Time { return f.now }}
	if code, out := owner.json("POST", "/v1/anonymous/thefts", map[string]string{"book": body["book"], "funding": body["funding"]}); code != 200 || out["thefts"] == nil {
		t.Fatalf("the owner key's thefts: %d %v", code, out)
	}
	if code, out := owner.json("POST", "/v1/anonymous/refund", body); code != 200 || out["refunded"] != "0.192" {
		t.Fatalf("refund: %d %v", code, out)
	}
	if code, out := owner.json("POST", "/v1/anonymous/refund", body); code != 409 || out["error"] != coupons.CodeAlreadyRefunded {
		t.Fatalf("second refund: %d %v", code, out)
	}
}

// BenchmarkAnonymousIssuance is the broker's cost per anonymous book
// (POST /v1/anonymous without HTTP): check the account and the
// denomination, blind-sign (an RSA-2048 private-key operation) and debit
// the account into the pool in one SQLite transaction, as a multiple of
// one Ed25519 verification measured in the same run.
func BenchmarkAnonymousIssuance(b *testing.B) {
	f := newFixture(b)
	d, err := f.b.NewDenomination(ctx, 1_000_000, "EUR", f.now.Add(-time.Hour), f.now.AddDate(0, 1, 0))
	if err != nil {
		b.Fatal(err)
	}
	_, blinded, err := blindfund.Blind(d.Denomination, [32]byte{1}, rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	payer := pub(b, f.alice).Hash()
	base := testutil.Ed25519VerifyNs()
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		n++
		if _, err := f.b.IssueAnonymous(ctx, payer, f.acct, d.ID(), blinded, fmt.Sprintf("bench-%d", n)); err != nil {
			b.Fatal(err)
		}
	}
	testutil.ReportEd25519Multiple(b, base)
}

func TestAnonymousOwnerRevokes(t *testing.T) { onBoth(t, testAnonymousOwnerRevokes) }

// testAnonymousOwnerRevokes: an anonymous book's own key, unknown to the
// broker, revokes a grant it made on its book (over HTTP, showing the
// book and its proof), which then is on the revocation list; the key of
// another anonymous book cannot, nor can a book's key revoke a grant on
// another book; its revocations are limited per book.
func testAnonymousOwnerRevokes(t *testing.T) {
	f := newFixture(t)
	d := newAnonDenomination(t, f)
	a := buyAnonymous(t, f, f.alice, f.acct, d, 3, "i-1")
	other := buyAnonymous(t, f, f.alice, f.acct, d, 3, "i-2")
	grant := func(n int) *spki.SignedCert {
		tag, err := coupons.SpendTag(a.sb.Book.ID(), "news.example", 0, uint32(n), 0)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(pub(t, a.key)), Subject: spki.KeyPrincipal(pub(t, testKey("phone"))), Tag: tag,
			Validity: spki.Validity{NotAfter: f.now.AddDate(0, 0, 5)}}, a.key)
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}
	g1, g2 := grant(1), grant(2)
	if err := f.b.RevokeAnonymous(ctx, pub(t, other.key).Hash(), other.sb, other.proof, g1, false); !errors.Is(err, ErrRevocation) {
		t.Fatalf("another book's key revokes a grant on this book: %v", err)
	}
	if err := f.b.RevokeAnonymous(ctx, pub(t, other.key).Hash(), a.sb, a.proof, g1, false); !errors.Is(err, ErrRevocation) {
		t.Fatalf("another key shows this book: %v", err)
	}
	srv := httptest.NewServer(&API{Broker: f.b})
	defer srv.Close()
	owner := &apiClient{t: t, url: srv.URL, key: a.key, now: func() time.Time { return f.now }}
	body := map[string]any{"book": string(spki.Transport(a.sb.Sexp())), "funding": string(spki.Transport(a.proof.Sexp())),
		"certificate": string(spki.Transport(g1.Sexp()))}
	if code, out := owner.json("POST", "/v1/anonymous/revoke", body); code != 200 {
		t.Fatalf("the owner key revokes its grant: %d %v", code, out)
	}
	h := g1.Cert.Hash()
	var n int
	if err := f.b.DB.db.QueryRow(`SELECT COUNT(*) FROM revoked WHERE kind = 'cert' AND hash = $1`, hex.EncodeToString(h[:])).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the grant on the revocation list: %d %v", n, err)
	}
	f.b.RevocationsPerHour = 1
	if err := f.b.RevokeAnonymous(ctx, pub(t, a.key).Hash(), a.sb, a.proof, g2, false); !errors.Is(err, ErrRevocationRate) {
		t.Fatalf("a second revocation within the hour at a limit of 1: %v", err)
	}
}

// TestAnonymousIssuanceNeedsApproval: under the users approve policy, an
// account pending approval buys no anonymous book (not_approved), as it
// funds no other book; once approved, it does.
func TestAnonymousIssuanceNeedsApproval(t *testing.T) {
	f := newFixture(t)
	d := newAnonDenomination(t, f)
	f.b.ApproveUsers = true
	carol := testKey("carol")
	acct, _, err := f.b.RegisterUser(ctx, pub(t, carol), "EUR", 0, f.now.AddDate(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.b.TopUp(ctx, acct, coupons.NanosPerUnit, "c"); err != nil {
		t.Fatal(err)
	}
	_, blinded, err := blindfund.Blind(d.Denomination, [32]byte{3}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.IssueAnonymous(ctx, pub(t, carol).Hash(), acct, d.ID(), blinded, "c-1"); !errors.Is(err, ErrNotApproved) {
		t.Fatalf("an account pending approval: %v", err)
	}
	if err := f.b.Approve(ctx, acct); err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.IssueAnonymous(ctx, pub(t, carol).Hash(), acct, d.ID(), blinded, "c-1"); err != nil {
		t.Fatalf("once approved: %v", err)
	}
}
