package wallet

import (
	"context"
	"crypto"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/testutil"
	"github.com/ecoupons/ecoupons/spki"
)

// bookWallet is a registered wallet (its broker's key is broker) with no
// book yet.
func bookWallet(t *testing.T) (*Wallet, crypto.Signer) {
	t.Helper()
	w, err := Init(filepath.Join(t.TempDir(), "w"))
	if err != nil {
		t.Fatal(err)
	}
	broker := testutil.Key("broker")
	bp, _ := spki.NewPublicKey(broker.Public())
	user, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(bp), Subject: spki.HashPrincipal(w.PublicKey().Hash()),
		Tag: coupons.UserTag("acct", "EUR")}, broker)
	if err != nil {
		t.Fatal(err)
	}
	w.Config.UserCert = string(spki.Transport(user.Sexp()))
	w.Config.BrokerKey = string(spki.Advanced(bp.Sexp()))
	w.Config.Currency = "EUR"
	return w, broker
}

// addBook stores a book of lanes × length coupons for news.example in w:
// funded by broker when funded, else pending.
func addBook(t *testing.T, w *Wallet, broker crypto.Signer, lanes, length uint32, funded bool) *coupons.SignedBook {
	t.Helper()
	bp, _ := spki.NewPublicKey(broker.Public())
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: bp.Hash(), Owner: w.PublicKey().Hash(),
		Lanes: lanes, Length: length, Currency: "EUR", Unit: 1_000_000, NotAfter: time.Now().Add(24 * time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := bk.Sign(w.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SaveBook(sb, sec, anchors); err != nil {
		t.Fatal(err)
	}
	if funded {
		f, err := coupons.SignFunding(sb.Book, broker, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.SaveFunding(sb.Book.ID(), f); err != nil {
			t.Fatal(err)
		}
	}
	return sb
}

// entryOf finds the entry of book sb in w.
func entryOf(t *testing.T, w *Wallet, sb *coupons.SignedBook) *BookEntry {
	t.Helper()
	books, err := w.Books()
	if err != nil {
		t.Fatal(err)
	}
	for i := range books {
		if books[i].Holder.Book.Book.ID() == sb.Book.ID() {
			return &books[i]
		}
	}
	t.Fatalf("book %x not in the wallet", sb.Book.ID())
	return nil
}

// TestRefusedBookIsNeverSpent: a book the broker refused (insufficient
// funds) is kept, shows as refused, and the wallet never chooses it, even
// when it is the only one or the larger one.
func TestRefusedBookIsNeverSpent(t *testing.T) {
	w, broker := bookWallet(t)
	refused := addBook(t, w, broker, 8, 64, false)
	if err := w.MarkRefused(refused.Book.ID(), "insufficient_funds: holds 0 EUR"); err != nil {
		t.Fatal(err)
	}
	if st := entryOf(t, w, refused).State(time.Now()); st != BookRefused {
		t.Fatalf("state %s, want refused", st)
	}
	if _, err := w.BooksFor("news.example"); !errors.Is(err, ErrNoBook) || !strings.Contains(err.Error(), "1 refused") {
		t.Fatalf("with only a refused book: %v, want ErrNoBook naming it", err)
	}
	funded := addBook(t, w, broker, 1, 16, true)
	es, err := w.BooksFor("news.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Holder.Book.Book.ID() != funded.Book.ID() {
		t.Fatalf("chosen %d book(s), want only the funded one", len(es))
	}
	// A refusal of a book the broker funded is a mistake, not recorded.
	if err := w.MarkRefused(funded.Book.ID(), "x"); err == nil {
		t.Fatal("a funded book was marked refused")
	}
}

// TestPendingBookIsNeverSpent: a book stored before the broker answered
// (the crash window between "book paid" and "book saved" is closed by
// storing it first) is pending, kept and not spent; its funding later
// makes it spendable: nothing is lost.
func TestPendingBookIsNeverSpent(t *testing.T) {
	w, broker := bookWallet(t)
	sb := addBook(t, w, broker, 2, 16, false)
	e := entryOf(t, w, sb)
	if st := e.State(time.Now()); st != BookPending {
		t.Fatalf("state %s, want pending", st)
	}
	if e.Created.IsZero() || time.Since(e.Created) > time.Minute {
		t.Fatalf("created %v", e.Created)
	}
	if _, err := w.BooksFor("news.example"); !errors.Is(err, ErrNoBook) || !strings.Contains(err.Error(), "book fund") {
		t.Fatalf("with a pending book: %v", err)
	}
	f, _ := coupons.SignFunding(sb.Book, broker, time.Time{})
	if err := w.SaveFunding(sb.Book.ID(), f); err != nil {
		t.Fatal(err)
	}
	if _, err := w.BookFor("news.example"); err != nil {
		t.Fatal(err)
	}
	if st := e.State(sb.Book.NotAfter); st != BookExpired {
		t.Fatalf("at NotAfter: %s, want expired", st)
	}
}

// TestMostValueLeftFirst: among funded books the one with the most value
// left is chosen first, whatever the order of the files.
func TestMostValueLeftFirst(t *testing.T) {
	w, broker := bookWallet(t)
	small := addBook(t, w, broker, 1, 16, true)
	big := addBook(t, w, broker, 4, 16, true)
	es, err := w.BooksFor("news.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Holder.Book.Book.ID() != big.Book.ID() || es[1].Holder.Book.Book.ID() != small.Book.ID() {
		t.Fatal("the book with the most value left is not first")
	}
	u, err := es[0].Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Free != 4 || u.Used != 0 || u.Coupons != 64 || coupons.FormatAmount(u.Value) != "0.064" {
		t.Fatalf("usage %+v", u)
	}
}

// bookGate accepts payments except on the books it refuses (as code),
// counting the payments per book.
type bookGate struct {
	mu      sync.Mutex
	refuse  map[[32]byte]string
	payment map[[32]byte]int
	code    string // answered to every paid request when set (cap_exceeded…)
	hold    chan struct{}
	inPaid  atomic.Int32
}

func (g *bookGate) RoundTrip(r *http.Request) (*http.Response, error) {
	resp := &http.Response{StatusCode: 402, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}")), Request: r}
	resp.Header.Set("WWW-Authenticate", `ECoupon realm="news.example", vendor="news.example", price=1, unit="0.001", currency="EUR", nonce="`+gateNonce+`"`)
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return resp, nil
	}
	var p coupons.Payment
	if err := coupons.ParsePayment(auth, &p); err != nil {
		return nil, err
	}
	g.mu.Lock()
	if g.payment == nil {
		g.payment = map[[32]byte]int{}
	}
	g.payment[p.Lane.Book]++
	code := g.refuse[p.Lane.Book]
	if code == "" {
		code = g.code
	}
	g.mu.Unlock()
	if code != "" {
		resp.Body = io.NopCloser(strings.NewReader(`{"error":"` + code + `"}`))
		return resp, nil
	}
	if g.hold != nil {
		g.inPaid.Add(1)
		<-g.hold
	}
	resp.StatusCode = 200
	return resp, nil
}

func (g *bookGate) payments(b *coupons.SignedBook) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.payment[b.Book.ID()]
}

// chooser is a Chooser over w's books for news.example, paying through g.
func chooser(t *testing.T, w *Wallet, g http.RoundTripper) *Chooser {
	t.Helper()
	es, err := w.BooksFor("news.example")
	if err != nil {
		t.Fatal(err)
	}
	c := &Chooser{Entries: es, Base: g, Open: func(e *BookEntry) (*Transport, error) {
		return OpenTransport(e.Holder, e.StatePath, e.Lanes...)
	}}
	t.Cleanup(func() { c.Close() })
	return c
}

func fetch(c http.RoundTripper) (int, error) {
	resp, err := (&http.Client{Transport: c}).Get("http://news.example/x")
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestFallsBackToNextBookWhenGateRefuses: a gate that refuses the book
// the wallet chose first (unknown to its broker, unfunded, expired or
// revoked) is paid from the next book for the same request, and the
// refused book is not offered again.
func TestFallsBackToNextBookWhenGateRefuses(t *testing.T) {
	for _, code := range []string{coupons.CodeUnknownBook, coupons.CodeBookNotFunded, coupons.CodeBookExpired, coupons.CodeRevoked} {
		t.Run(code, func(t *testing.T) {
			w, broker := bookWallet(t)
			first := addBook(t, w, broker, 2, 16, true)
			next := addBook(t, w, broker, 1, 16, true)
			g := &bookGate{refuse: map[[32]byte]string{first.Book.ID(): code}}
			c := chooser(t, w, g)
			for range 3 {
				if st, err := fetch(c); err != nil || st != 200 {
					t.Fatalf("request: %d %v", st, err)
				}
			}
			if g.payments(first) != 1 || g.payments(next) != 3 {
				t.Fatalf("payments: refused book %d (want 1), next %d (want 3)", g.payments(first), g.payments(next))
			}
		})
	}
}

// TestAllBooksRefusedSaysSo: when the gate refuses every book the request
// fails with ErrNoBook naming the refusal, not with a bare 402.
func TestAllBooksRefusedSaysSo(t *testing.T) {
	w, broker := bookWallet(t)
	only := addBook(t, w, broker, 1, 16, true)
	c := chooser(t, w, &bookGate{refuse: map[[32]byte]string{only.Book.ID(): coupons.CodeBookNotFunded}})
	if _, err := fetch(c); !errors.Is(err, ErrNoBook) || !strings.Contains(err.Error(), coupons.CodeBookNotFunded) {
		t.Fatalf("got %v", err)
	}
}

// TestRequestsBeyondLanesWait: more parallel requests than lanes wait for
// a lane instead of failing with "no lane left".
func TestRequestsBeyondLanesWait(t *testing.T) {
	w, broker := bookWallet(t)
	addBook(t, w, broker, 2, 16, true)
	g := &bookGate{hold: make(chan struct{})}
	c := chooser(t, w, g)
	const n = 6
	errs := make(chan error, n)
	for range n {
		go func() {
			st, err := fetch(c)
			if err == nil && st != 200 {
				err = errors.New(http.StatusText(st))
			}
			errs <- err
		}()
	}
	// Both lanes in flight, the other requests waiting; then let them go.
	for g.inPaid.Load() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if got := g.inPaid.Load(); got != 2 {
		t.Fatalf("%d paid requests in flight on 2 lanes", got)
	}
	close(g.hold)
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("a request beyond the lanes failed: %v", err)
		}
	}
}

// TestLanesBusyAfterWait: a request that finds every lane in use waits
// LaneWait (or until its context ends), then fails with ErrLanesBusy
// having revealed nothing.
func TestLanesBusyAfterWait(t *testing.T) {
	tr := newTestTransport(t)
	g := &bookGate{hold: make(chan struct{})}
	defer close(g.hold)
	tr.Base, tr.LaneWait = g, 100*time.Millisecond
	for range 2 {
		go fetch(tr)
	}
	for g.inPaid.Load() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	spent := tr.Spent()
	start := time.Now()
	if _, err := fetch(tr); !errors.Is(err, ErrLanesBusy) {
		t.Fatalf("got %v, want ErrLanesBusy", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("gave up after %v, before LaneWait", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	tr.LaneWait = time.Hour
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://news.example/x", nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, ErrLanesBusy) {
		t.Fatalf("with a context ending: %v, want ErrLanesBusy", err)
	}
	if tr.Spent() != spent {
		t.Fatal("a request that got no lane revealed coupons")
	}
}

// TestCapExceededRetiresLane: a lane the gate refuses as cap_exceeded (or
// revoked) reveals no further coupon, in this process or the next.
func TestCapExceededRetiresLane(t *testing.T) {
	for _, code := range []string{coupons.CodeCapExceeded, coupons.CodeRevoked} {
		t.Run(code, func(t *testing.T) {
			w, broker := bookWallet(t)
			sb := addBook(t, w, broker, 2, 16, true)
			e := entryOf(t, w, sb)
			g := &bookGate{code: code}
			tr, err := OpenTransport(e.Holder, e.StatePath, e.Lanes...)
			if err != nil {
				t.Fatal(err)
			}
			tr.Base = g
			for range 2 {
				if st, err := fetch(tr); err != nil || st != 402 {
					t.Fatalf("refused payment: %d %v", st, err)
				}
			}
			if _, err := fetch(tr); !errors.Is(err, ErrNoLane) {
				t.Fatalf("after both lanes were refused: %v, want ErrNoLane", err)
			}
			if g.payments(sb) != 2 || tr.Spent() != 2 {
				t.Fatalf("%d payments, %d coupons revealed; want 2, 2", g.payments(sb), tr.Spent())
			}
			tr.Close()
			if _, err := OpenTransport(e.Holder, e.StatePath, e.Lanes...); !errors.Is(err, ErrNoLane) {
				t.Fatalf("reopened: %v, want ErrNoLane (lanes retired)", err)
			}
			u, err := e.Usage()
			if err != nil || u.Used != 2 || u.Coupons != 0 {
				t.Fatalf("usage %+v %v", u, err)
			}
		})
	}
}

// TestRemoveFundedBookNeedsForce: removing a funded book with value left
// is refused without force; a refused book goes at once.
func TestRemoveFundedBookNeedsForce(t *testing.T) {
	w, broker := bookWallet(t)
	funded := addBook(t, w, broker, 1, 16, true)
	refused := addBook(t, w, broker, 1, 16, false)
	if err := w.MarkRefused(refused.Book.ID(), "insufficient_funds"); err != nil {
		t.Fatal(err)
	}
	if err := w.RemoveBook(entryOf(t, w, funded), false); !errors.Is(err, ErrBookHasValue) || !strings.Contains(err.Error(), "0.016 EUR") {
		t.Fatalf("got %v, want ErrBookHasValue naming 0.016 EUR", err)
	}
	if err := w.RemoveBook(entryOf(t, w, refused), false); err != nil {
		t.Fatal(err)
	}
	if err := w.RemoveBook(entryOf(t, w, funded), true); err != nil {
		t.Fatal(err)
	}
	if books, _ := w.Books(); len(books) != 0 {
		t.Fatalf("%d books left", len(books))
	}
}

// TestLockedStateNamesItsHolder: a second opener of a lane state in use
// is told which process holds it and how to wait longer.
func TestLockedStateNamesItsHolder(t *testing.T) {
	defer SetLockWait(lockWait)
	SetLockWait(30 * time.Millisecond)
	p := filepath.Join(t.TempDir(), "x.lanes")
	st, err := openStore(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	_, err = openStore(nil, p)
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) || le.PID != os.Getpid() || !strings.Contains(err.Error(), "ECOUPONS_LOCK_WAIT") {
		t.Fatalf("got %v", err)
	}
}

// TestChooserPaysFromBooksMadeSince: a long-running chooser (the proxy's)
// whose books are used up pays from a book made after it started.
func TestChooserPaysFromBooksMadeSince(t *testing.T) {
	w, broker := bookWallet(t)
	addBook(t, w, broker, 1, 2, true)
	g := &bookGate{}
	c := chooser(t, w, g)
	c.Refresh = func() ([]*BookEntry, error) { return w.BooksFor("news.example") }
	for range 2 {
		if st, err := fetch(c); err != nil || st != 200 {
			t.Fatalf("request: %d %v", st, err)
		}
	}
	if _, err := fetch(c); !errors.Is(err, ErrNoLane) {
		t.Fatalf("book used up: %v, want ErrNoLane", err)
	}
	later := addBook(t, w, broker, 1, 16, true)
	if st, err := fetch(c); err != nil || st != 200 {
		t.Fatalf("after a new book: %d %v", st, err)
	}
	if g.payments(later) != 1 {
		t.Fatal("the new book did not pay")
	}
}

// TestRemovePendingBookNeedsForce: a pending book may have been funded by
// a broker whose answer was lost: it is removed only with force.
func TestRemovePendingBookNeedsForce(t *testing.T) {
	w, broker := bookWallet(t)
	sb := addBook(t, w, broker, 1, 16, false)
	if err := w.RemoveBook(entryOf(t, w, sb), false); !errors.Is(err, ErrBookHasValue) || !strings.Contains(err.Error(), "book fund") {
		t.Fatalf("got %v", err)
	}
	if err := w.RemoveBook(entryOf(t, w, sb), true); err != nil {
		t.Fatal(err)
	}
}

// TestExpiredBookIsNeverChosen: a funded book past its expiry is listed
// as expired and never chosen (no gate takes it: a coupon revealed for it
// would be lost).
func TestExpiredBookIsNeverChosen(t *testing.T) {
	w, broker := bookWallet(t)
	bp, _ := spki.NewPublicKey(broker.Public())
	notAfter := time.Now().Add(1200 * time.Millisecond)
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: bp.Hash(), Owner: w.PublicKey().Hash(),
		Lanes: 1, Length: 16, Currency: "EUR", Unit: 1_000_000, NotAfter: notAfter}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := bk.Sign(w.Key)
	if err := w.SaveBook(sb, sec, anchors); err != nil {
		t.Fatal(err)
	}
	f, err := coupons.SignFunding(sb.Book, broker, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SaveFunding(sb.Book.ID(), f); err != nil {
		t.Fatal(err)
	}
	if _, err := w.BookFor("news.example"); err != nil {
		t.Fatalf("before its expiry: %v", err)
	}
	time.Sleep(time.Until(sb.Book.NotAfter) + 50*time.Millisecond)
	if st := entryOf(t, w, sb).State(time.Now()); st != BookExpired {
		t.Fatalf("state %s, want expired", st)
	}
	if _, err := w.BooksFor("news.example"); !errors.Is(err, ErrNoBook) || !strings.Contains(err.Error(), "1 expired") {
		t.Fatalf("after its expiry: %v", err)
	}
}

// TestLockHolderMessageHidesPIN: the command line of the process holding
// a lane lock is shown without a smart card's PIN.
func TestLockHolderMessageHidesPIN(t *testing.T) {
	got := cmdline([]byte("ecoupons\x00wallet\x00init\x00--smart-card\x00pkcs11:token=w;pin-value=123456;id=1\x00"))
	if strings.Contains(got, "123456") || !strings.Contains(got, "pin-value=…;id=1") {
		t.Fatalf("got %q", got)
	}
}
