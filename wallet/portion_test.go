package wallet

import (
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/internal/testutil"
	"github.com/ecoupons/ecoupons/spki"
)

// portionGate is a vendor gate in miniature: it keeps each lane's state
// from its open and verifies payments with VerifyPayment. It takes a
// coupon without m as the last of a portion (what docs/PROTOCOL.md §10
// asks gates to do), and a new open of a known lane as a take-over that
// keeps the lane's position (the owner's reclaim).
type portionGate struct {
	book     *coupons.Book
	lanes    map[coupons.LaneID]*gateLane
	paid     uint32 // coupons accepted
	payments []coupons.Payment
	opens    []string // spender key hashes
}

type gateLane struct {
	st    coupons.LaneState
	nonce string
}

const gateNonce = "AAAAAAAAAAAAAAAAAAAAAA"

func newPortionGate(b *coupons.Book) *portionGate {
	return &portionGate{book: b, lanes: map[coupons.LaneID]*gateLane{}}
}

func (g *portionGate) RoundTrip(r *http.Request) (*http.Response, error) {
	resp := &http.Response{StatusCode: 402, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}")), Request: r}
	resp.Header.Set("WWW-Authenticate", `ECoupon realm="news.example", vendor="news.example", price=1, unit="0.001", currency="EUR", nonce="`+gateNonce+`"`)
	refuse := func(code string) (*http.Response, error) {
		resp.Body = io.NopCloser(strings.NewReader(`{"error":"` + code + `"}`))
		return resp, nil
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return resp, nil
	}
	var p coupons.Payment
	if err := coupons.ParsePayment(auth, &p); err != nil {
		return refuse("bad_header")
	}
	g.payments = append(g.payments, p)
	gl := g.lanes[p.Lane]
	if doc := r.Header.Get("ECoupon-Open"); doc != "" {
		x, err := spki.Parse([]byte(doc))
		if err != nil {
			return refuse("bad_open")
		}
		o, err := coupons.ParseOpen(x)
		if err != nil || o.Nonce != gateNonce {
			return refuse("bad_open")
		}
		g.opens = append(g.opens, o.Spender.Hash().String())
		if gl == nil {
			gl = &gateLane{st: coupons.LaneState{LastValue: o.Anchor}}
			g.lanes[p.Lane] = gl
		}
		gl.nonce = o.Nonce
	}
	if gl == nil {
		return refuse("lane_not_open")
	}
	tag := g.book.LaneTag(p.Lane.Lane)
	d := (&coupons.Request{Method: r.Method, Host: strings.ToLower(r.URL.Host), Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
		Lane: p.Lane, Index: p.Index, Nonce: gl.nonce}).Digest()
	var paid uint32
	var err error
	if p.HasMAC {
		paid, _, err = coupons.VerifyPayment(&tag, g.book.Length, &gl.st, &p, &d, g.book.Length)
	} else if err = coupons.VerifyNext(&tag, g.book.Length, gl.st.Last, &gl.st.LastValue, p.Index, &p.Value, g.book.Length); err == nil {
		paid = p.Index - gl.st.Last
		gl.st = coupons.LaneState{Last: p.Index, LastValue: p.Value}
	}
	if err != nil {
		return refuse("bad_coupon")
	}
	g.paid += paid
	resp.StatusCode = 200
	return resp, nil
}

// ownerAndPhone makes an owner wallet with a book for news.example (2
// lanes of 16 coupons of 0.001 EUR) and a phone wallet.
func ownerAndPhone(t *testing.T) (owner, phone *Wallet, book *BookEntry) {
	t.Helper()
	dir := t.TempDir()
	owner, err := Init(filepath.Join(dir, "owner"))
	if err != nil {
		t.Fatal(err)
	}
	if phone, err = Init(filepath.Join(dir, "phone")); err != nil {
		t.Fatal(err)
	}
	broker := testutil.Key("broker")
	bp, _ := spki.NewPublicKey(broker.Public())
	user, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(bp), Subject: spki.HashPrincipal(owner.PublicKey().Hash()),
		Tag: coupons.UserTag("acct", "EUR")}, broker)
	if err != nil {
		t.Fatal(err)
	}
	owner.Config.UserCert = string(spki.Transport(user.Sexp()))
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: bp.Hash(), Owner: owner.PublicKey().Hash(),
		Lanes: 2, Length: 16, Currency: "EUR", Unit: 1_000_000, NotAfter: time.Now().Add(24 * time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := bk.Sign(owner.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.SaveBook(sb, sec, anchors); err != nil {
		t.Fatal(err)
	}
	owner.Config.BrokerKey = string(spki.Advanced(bp.Sexp()))
	funding, err := coupons.SignFunding(sb.Book, broker, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.SaveFunding(sb.Book.ID(), funding); err != nil {
		t.Fatal(err)
	}
	if book, err = owner.BookFor("news.example"); err != nil {
		t.Fatal(err)
	}
	return owner, phone, book
}

// grantTo issues lanes lo…hi of e to w's device, records the grant in the
// issuer's wallet and imports it into w.
func grantTo(t *testing.T, issuer *Wallet, e *BookEntry, to *Wallet, lo, hi uint32, opt delegation.GrantOptions) *delegation.Grant {
	t.Helper()
	dev, err := to.Device("dev")
	if err != nil {
		t.Fatal(err)
	}
	if opt.NotAfter.IsZero() {
		opt.NotAfter = time.Now().Add(time.Hour)
	}
	g, err := e.Holder.Issue(dev, lo, hi, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := issuer.MarkGranted(e, g); err != nil {
		t.Fatal(err)
	}
	if _, err := to.ImportGrant(spki.Transport(g.Sexp()), time.Now()); err != nil {
		t.Fatal(err)
	}
	return g
}

func pay(t *testing.T, tr *Transport) error {
	t.Helper()
	resp, err := (&http.Client{Transport: tr}).Get("http://news.example/x")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return errors.New(resp.Status)
	}
	return nil
}

// TestDelegateTransportStopsAtPortionEnd: a phone capped at 5 coupons
// holds coupons 1…5 of lane 0 (lane 1 is not granted); its transport pays
// 5 requests, the last coupon without m, and then fails with
// ErrPortionUsedUp, revealing nothing more.
func TestDelegateTransportStopsAtPortionEnd(t *testing.T) {
	owner, phone, book := ownerAndPhone(t)
	g := grantTo(t, owner, book, phone, 0, 1, delegation.GrantOptions{Cap: 5 * 1_000_000})
	if len(g.Lanes) != 1 || g.Lanes[0].End != 5 {
		t.Fatalf("granted %+v", g.Lanes)
	}
	// The owner no longer spends lane 0, and still spends lane 1.
	if e, _ := owner.BookFor("news.example"); len(e.Lanes) != 1 || e.Lanes[0] != 1 {
		t.Fatalf("owner's lanes %v", e.Lanes)
	}
	pe, err := phone.BookFor("news.example")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := OpenTransport(pe.Holder, pe.StatePath, pe.Lanes...)
	if err != nil {
		t.Fatal(err)
	}
	gate := newPortionGate(pe.Holder.Book.Book)
	tr.Base = gate
	for k := 1; k <= 5; k++ {
		if err := pay(t, tr); err != nil {
			t.Fatalf("payment %d: %v", k, err)
		}
	}
	last := gate.payments[len(gate.payments)-1]
	if last.Index != 5 || last.HasMAC {
		t.Fatalf("the last coupon: i=%d, m %v", last.Index, last.HasMAC)
	}
	if err := pay(t, tr); !errors.Is(err, ErrPortionUsedUp) || !strings.Contains(err.Error(), "portion used up") {
		t.Fatalf("a 6th payment: %v", err)
	}
	if len(gate.payments) != 5 || gate.paid != 5 {
		t.Fatalf("%d payments, %d coupons reached the gate", len(gate.payments), gate.paid)
	}
	tr.Close()
	// A restarted transport resumes from the saved state, still used up.
	tr, err = OpenTransport(pe.Holder, pe.StatePath, pe.Lanes...)
	if err != nil {
		t.Fatal(err)
	}
	tr.Base = gate
	if err := pay(t, tr); !errors.Is(err, ErrPortionUsedUp) {
		t.Fatalf("after a restart: %v", err)
	}
	tr.Close()
}

// TestOwnerWalletReclaimsPortion: the phone spends 2 of its 5 coupons;
// the owner reclaims lane 0: its next payment opens the lane anew and pays
// coupon 6, which the gate verifies from the phone's coupon 2 and counts as
// 4 coupons; the phone's next coupon is then refused.
func TestOwnerWalletReclaimsPortion(t *testing.T) {
	owner, phone, book := ownerAndPhone(t)
	grantTo(t, owner, book, phone, 0, 1, delegation.GrantOptions{Cap: 5 * 1_000_000})
	pe, _ := phone.BookFor("news.example")
	ptr, err := OpenTransport(pe.Holder, pe.StatePath, pe.Lanes...)
	if err != nil {
		t.Fatal(err)
	}
	defer ptr.Close()
	gate := newPortionGate(pe.Holder.Book.Book)
	ptr.Base = gate
	for range 2 {
		if err := pay(t, ptr); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := owner.Reclaim(book, []uint32{1}); !errors.Is(err, ErrNotReclaimable) {
		t.Fatalf("reclaiming a lane never granted: %v", err)
	}
	ends, err := owner.Reclaim(book, []uint32{0})
	if err != nil || ends[0] != 5 {
		t.Fatalf("reclaim: %v %v", ends, err)
	}
	oe, _ := owner.BookFor("news.example")
	if len(oe.Lanes) != 2 {
		t.Fatalf("owner's lanes after the reclaim: %v", oe.Lanes)
	}
	otr, err := OpenTransport(oe.Holder, oe.StatePath, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer otr.Close()
	otr.Base = gate
	before := gate.paid
	if err := pay(t, otr); err != nil {
		t.Fatal(err)
	}
	p := gate.payments[len(gate.payments)-1]
	if p.Index != 6 || !p.HasMAC || gate.paid-before != 4 || len(gate.opens) != 2 || gate.opens[1] != owner.PublicKey().Hash().String() {
		t.Fatalf("owner's payment: i=%d, %d coupons, opens %v", p.Index, gate.paid-before, gate.opens)
	}
	if err := pay(t, ptr); err == nil {
		t.Fatal("the phone paid after the reclaim")
	}
	// Reclaimed lanes cannot be reclaimed again, nor granted again once
	// the owner's cursor moved.
	if _, err := owner.Reclaim(oe, []uint32{0}); !errors.Is(err, ErrNotReclaimable) {
		t.Fatalf("second reclaim: %v", err)
	}
	dev, _ := phone.Device("dev")
	g, err := oe.Holder.Issue(dev, 0, 0, delegation.GrantOptions{Cap: 3 * 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.MarkGranted(oe, g); err == nil {
		t.Fatal("a reclaimed lane granted again")
	}
}

// TestWholeLaneNotReclaimable: an uncapped grant hands lanes whole: there
// is nothing past their end to pay, so reclaim refuses (revoke instead).
func TestWholeLaneNotReclaimable(t *testing.T) {
	owner, phone, book := ownerAndPhone(t)
	grantTo(t, owner, book, phone, 1, 1, delegation.GrantOptions{})
	if _, err := owner.Reclaim(book, []uint32{1}); !errors.Is(err, ErrNotReclaimable) {
		t.Fatalf("reclaiming a whole lane: %v", err)
	}
}

// TestDelegateSubGrantsAndReclaims: a phone with propagate sub-grants 3
// of its 5 coupons to a watch: the phone stops spending the lane, the
// watch spends 3, and the phone takes the lane back at coupon 3 (paying
// its coupons 4 and 5 itself).
func TestDelegateSubGrantsAndReclaims(t *testing.T) {
	owner, phone, book := ownerAndPhone(t)
	grantTo(t, owner, book, phone, 0, 1, delegation.GrantOptions{Cap: 5 * 1_000_000, Propagate: true})
	watch, err := Init(filepath.Join(t.TempDir(), "watch"))
	if err != nil {
		t.Fatal(err)
	}
	pe, _ := phone.BookFor("news.example")
	g := grantTo(t, phone, pe, watch, 0, 0, delegation.GrantOptions{Cap: 3 * 1_000_000})
	if g.Lanes[0].End != 3 {
		t.Fatalf("sub-grant end %d", g.Lanes[0].End)
	}
	if _, err := phone.BookFor("news.example"); !errors.Is(err, ErrNoBook) {
		t.Fatalf("the phone still spends the lane it granted: %v", err)
	}
	we, _ := watch.BookFor("news.example")
	wtr, err := OpenTransport(we.Holder, we.StatePath, we.Lanes...)
	if err != nil {
		t.Fatal(err)
	}
	defer wtr.Close()
	gate := newPortionGate(we.Holder.Book.Book)
	wtr.Base = gate
	for range 3 {
		if err := pay(t, wtr); err != nil {
			t.Fatal(err)
		}
	}
	if err := pay(t, wtr); !errors.Is(err, ErrPortionUsedUp) {
		t.Fatalf("the watch past 3: %v", err)
	}
	books, err := phone.Books()
	if err != nil || len(books) != 1 {
		t.Fatal(err)
	}
	if _, err := phone.Reclaim(&books[0], []uint32{0}); err != nil {
		t.Fatal(err)
	}
	pe2, err := phone.BookFor("news.example")
	if err != nil {
		t.Fatal(err)
	}
	ptr, err := OpenTransport(pe2.Holder, pe2.StatePath, pe2.Lanes...)
	if err != nil {
		t.Fatal(err)
	}
	defer ptr.Close()
	ptr.Base = gate
	for k := uint32(4); k <= 5; k++ {
		if err := pay(t, ptr); err != nil {
			t.Fatal(err)
		}
		if p := gate.payments[len(gate.payments)-1]; p.Index != k {
			t.Fatalf("the phone paid coupon %d, want %d", p.Index, k)
		}
	}
	if err := pay(t, ptr); !errors.Is(err, ErrPortionUsedUp) {
		t.Fatalf("the phone past its portion: %v", err)
	}
}

// TestExpiredGrantDoesNotBreakWallet: a grant that no longer verifies (it
// expired) is left out of the wallet's books and named by GrantProblems;
// the wallet's other grants and books stay usable.
func TestExpiredGrantDoesNotBreakWallet(t *testing.T) {
	owner, phone, book := ownerAndPhone(t)
	grantTo(t, owner, book, phone, 0, 0, delegation.GrantOptions{NotAfter: time.Now().Add(time.Second)})
	grantTo(t, owner, book, phone, 1, 1, delegation.GrantOptions{})
	time.Sleep(2100 * time.Millisecond)
	books, err := phone.Books()
	if err != nil {
		t.Fatalf("one expired grant breaks the wallet: %v", err)
	}
	if len(books) != 1 || len(books[0].Lanes) != 1 || books[0].Lanes[0] != 1 {
		t.Fatalf("usable books: %d", len(books))
	}
	problems, err := phone.GrantProblems()
	if err != nil || len(problems) != 1 || !strings.Contains(problems[0], "expired") {
		t.Fatalf("grant problems: %v %v", problems, err)
	}
}
