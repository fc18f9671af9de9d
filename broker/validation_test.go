package broker

import (
	"errors"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

func (bk *book) query(s uint32) LaneQuery {
	r := bk.coupon(s, 1, true)
	return LaneQuery{Lane: r.Lane, Anchor: *r.Anchor, Proof: r.Proof}
}

func TestCheckLane(t *testing.T) { onBoth(t, testCheckLane) }

func testCheckLane(t *testing.T) {
	f := newFixture(t)
	vk := pub(t, f.vendor).Hash()
	bk := f.newBook(t, 4, 16, milli)

	// A book the broker does not hold is refused: its value is not held.
	if _, err := f.b.CheckLane(ctx, vk, bk.query(0)); !errors.Is(err, ErrUnknownBook) {
		t.Fatalf("unregistered book: %v", err)
	}
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	st, err := f.b.CheckLane(ctx, vk, bk.query(0))
	if err != nil || st.Redeemed != 0 || st.Value != bk.anchors[0] || st.Reserved != 0 {
		t.Fatalf("fresh lane: %+v %v", st, err)
	}
	// After a redemption the answer carries the redeemed position.
	if _, err := f.b.Redeem(ctx, vk, []Redemption{bk.coupon(0, 5, true)}); err != nil {
		t.Fatal(err)
	}
	st, err = f.b.CheckLane(ctx, vk, bk.query(0))
	if err != nil || st.Redeemed != 5 || st.Value != bk.coupon(0, 5, false).Value {
		t.Fatalf("redeemed lane: %+v %v", st, err)
	}
	// A wrong anchor, another vendor, a lane out of range, a revoked key.
	q := bk.query(1)
	q.Anchor[0] ^= 1
	if _, err := f.b.CheckLane(ctx, vk, q); !errors.Is(err, errBadRequest) {
		t.Errorf("wrong anchor: %v", err)
	}
	if _, err := f.b.CheckLane(ctx, pub(t, f.alice).Hash(), bk.query(1)); !errors.Is(err, ErrUnknownVendor) {
		t.Errorf("not a vendor: %v", err)
	}
	q = bk.query(1)
	q.Lane.Lane = 9
	if _, err := f.b.CheckLane(ctx, vk, q); !errors.Is(err, coupons.ErrLaneOutOfRange) {
		t.Errorf("lane 9 of 4: %v", err)
	}
	device := pub(t, testKey("device"))
	tag, err := coupons.SpendTag(bk.sb.Book.ID(), "news.example", 0, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	grant, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(pub(t, f.alice)), Subject: spki.KeyPrincipal(device), Tag: tag}, f.alice)
	if err != nil {
		t.Fatal(err)
	}
	// The device (known to the broker by its recorded grant) declares its
	// key compromised: the key is revoked.
	if err := f.b.RegisterGrant(ctx, pub(t, f.alice).Hash(), grant, "device"); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Revoke(ctx, device.Hash(), grant, true); err != nil {
		t.Fatal(err)
	}
	q = bk.query(1)
	q.Keys = []spki.KeyHash{pub(t, f.alice).Hash(), device.Hash()}
	if _, err := f.b.CheckLane(ctx, vk, q); !errors.Is(err, ErrRevokedAtBroker) {
		t.Errorf("revoked device key: %v", err)
	}
	q.Keys = nil
	q.Certs = [][32]byte{grant.Cert.Hash()}
	if _, err := f.b.CheckLane(ctx, vk, q); !errors.Is(err, ErrRevokedAtBroker) {
		t.Errorf("revoked grant: %v", err)
	}
	// An expired book.
	f.now = f.now.Add(31 * 24 * time.Hour)
	if _, err := f.b.CheckLane(ctx, vk, bk.query(2)); !errors.Is(err, ErrBookExpired) {
		t.Errorf("expired book: %v", err)
	}
}

func TestReserveLane(t *testing.T) { onBoth(t, testReserveLane) }

func testReserveLane(t *testing.T) {
	f := newFixture(t)
	f.b.FeeBasisPoints = 100
	vk := pub(t, f.vendor).Hash()
	bk := f.newBook(t, 4, 16, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	escrow, reserve := escrowAccount(bk.sb.Book.ID()), reserveAccount(bk.sb.Book.ID())
	q := bk.query(0)
	q.Reserve, q.Holder = true, "gate-a"
	st, err := f.b.CheckLane(ctx, vk, q)
	if err != nil || st.Reserved != 16*milli || st.Holder != "gate-a" {
		t.Fatalf("reserve: %+v %v", st, err)
	}
	if got := f.balance(t, reserve); got != 16*milli {
		t.Errorf("reserve account holds %d", got)
	}
	if got := f.balance(t, escrow); got != 48*milli {
		t.Errorf("escrow holds %d after reserving one of 4 lanes", got)
	}
	// The same holder again: nothing moves. Another holder: refused.
	if st, err := f.b.CheckLane(ctx, vk, q); err != nil || st.Reserved != 16*milli {
		t.Fatalf("reserve again: %+v %v", st, err)
	}
	q.Holder = "gate-b"
	if _, err := f.b.CheckLane(ctx, vk, q); !errors.Is(err, ErrLaneReserved) {
		t.Fatalf("second holder: %v", err)
	}
	if got := f.balance(t, reserve); got != 16*milli {
		t.Errorf("reserve account holds %d after the refusal", got)
	}
	q.Holder = ""
	if _, err := f.b.CheckLane(ctx, vk, q); !errors.Is(err, errBadRequest) {
		t.Errorf("reservation without holder: %v", err)
	}

	// Redemptions of the reserved lane are paid from the reserve; of
	// another lane, from the escrow. The first carries anchor and proof
	// as the gate sends them; the reservation already recorded the anchor.
	res, err := f.b.Redeem(ctx, vk, []Redemption{bk.coupon(0, 10, true), bk.coupon(1, 2, true)})
	if err != nil || res[0].Err != nil || res[1].Err != nil || res[0].Coupons != 10 {
		t.Fatalf("redeem: %+v %v", res, err)
	}
	if got := f.balance(t, reserve); got != 6*milli {
		t.Errorf("reserve holds %d after 10 of 16 redeemed", got)
	}
	if got := f.balance(t, escrow); got != 46*milli {
		t.Errorf("escrow holds %d", got)
	}
	// A lane redeemed before its reservation reserves only what is left.
	q = bk.query(1)
	q.Reserve, q.Holder = true, "gate-b"
	if st, err := f.b.CheckLane(ctx, vk, q); err != nil || st.Reserved != 14*milli || st.Redeemed != 2 {
		t.Fatalf("reserve a redeemed lane: %+v %v", st, err)
	}
	// Release after expiry returns escrow and reserve to the owner.
	before := f.balance(t, f.acct)
	f.now = f.now.Add(40 * 24 * time.Hour)
	if n, err := f.b.ReleaseExpired(ctx); err != nil || n != 1 {
		t.Fatalf("release: %d %v", n, err)
	}
	if got := f.balance(t, f.acct) - before; got != 52*milli {
		t.Errorf("owner got back %d, want %d", got, 52*milli)
	}
	if f.balance(t, reserve) != 0 || f.balance(t, escrow) != 0 {
		t.Error("book accounts not empty after release")
	}
}

func TestRevocationListConcurrent(t *testing.T) { onBoth(t, testRevocationListConcurrent) }

// testRevocationListConcurrent: requests asking for the list at once, after
// a revocation, all get a list (one of them issues it), never an error.
func testRevocationListConcurrent(t *testing.T) {
	f := newFixture(t)
	bk := f.newBook(t, 2, 16, milli)
	if _, err := f.b.RegisterBook(ctx, pub(t, f.alice).Hash(), bk.sb); err != nil {
		t.Fatal(err)
	}
	tag, _ := coupons.SpendTag(bk.sb.Book.ID(), "news.example", 0, 0, 0)
	g, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(pub(t, f.alice)), Subject: spki.KeyPrincipal(pub(t, testKey("dev"))), Tag: tag}, f.alice)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.b.Revoke(ctx, pub(t, f.alice).Hash(), g, false); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for k := 0; k < 8; k++ {
		go func() {
			_, err := f.b.RevocationList(ctx)
			errs <- err
		}()
	}
	for k := 0; k < 8; k++ {
		if err := <-errs; err != nil {
			t.Fatalf("a concurrent list request: %v", err)
		}
	}
}
