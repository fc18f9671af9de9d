package wallet

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
)

// BookState is where a book stands in its life cycle. The facts it is
// derived from are kept in the book's file (books/<id>.json), written
// durably: the broker's book certificate (funded) or its refusal
// (refused); the book's expiry is in the book itself.
type BookState string

// The states of a book.
const (
	// BookPending: stored, the broker has not certified it yet (the call
	// failed or has not been made): never spent; 'book fund' retries.
	BookPending BookState = "pending"
	// BookFunded: the broker holds its value and certified it: spendable.
	BookFunded BookState = "funded"
	// BookRefused: the broker refused it for good (insufficient funds,
	// over the credit limit, wrong currency, unknown user…): never spent.
	BookRefused BookState = "refused"
	// BookExpired: past its NotAfter: no gate accepts it.
	BookExpired BookState = "expired"
)

// State returns the entry's state at now. A refusal stays a refusal after
// the book's expiry; a pending or funded book becomes expired.
func (e *BookEntry) State(now time.Time) BookState {
	switch {
	case e.Refused != "":
		return BookRefused
	case !now.Before(e.Holder.Book.Book.NotAfter):
		return BookExpired
	case e.Funded():
		return BookFunded
	}
	return BookPending
}

// Owned reports whether the wallet's key owns the book (rather than
// holding lanes of it through a grant).
func (e *BookEntry) Owned() bool { return e.owned }

// BookID spells a book's id as everything user-facing does (the CLI, the
// broker's API and back office): base64url without padding, the form the
// protocol's lane IDs begin with.
func BookID(id [32]byte) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// ShortID is the book's id as book list shows it: the first 12
// characters of BookID, which book rm, book fund and get --book take (any
// prefix that names one book).
func (e *BookEntry) ShortID() string { return BookID(e.Holder.Book.Book.ID())[:12] }

// NamedBy reports whether prefix (case matters) begins the book's id; an
// empty prefix names every book.
func (e *BookEntry) NamedBy(prefix string) bool {
	return strings.HasPrefix(BookID(e.Holder.Book.Book.ID()), prefix)
}

// BookUsage is what is left of the lanes a wallet spends of a book.
type BookUsage struct {
	// Used counts the lanes with a coupon revealed (or retired); Free the
	// lanes not touched yet.
	Used, Free int
	// Coupons is how many coupons are left on the lanes not retired.
	Coupons uint64
	// Value is Coupons × the book's unit, in billionths of its currency
	// (coupons.FormatAmount writes it).
	Value int64
}

// Usage reads the entry's lane state (without locking it: a transport may
// be paying from it) and counts what is left.
func (e *BookEntry) Usage() (BookUsage, error) {
	var u BookUsage
	saved, err := loadState(e.fs, e.StatePath)
	if err != nil {
		return u, err
	}
	b := e.Holder.Book.Book
	for _, s := range e.Lanes {
		end, _, ok := e.Holder.Portion(s)
		if !ok {
			continue
		}
		l, ok := saved[coupons.LaneID{Book: b.ID(), Lane: s}]
		switch {
		case !ok:
			u.Free++
			u.Coupons += uint64(end)
		case l.retired:
			u.Used++
		default:
			if l.cursor.Position() > 0 || l.nonce != "" {
				u.Used++
			} else {
				u.Free++
			}
			u.Coupons += uint64(l.cursor.Remaining())
		}
	}
	v, err := coupons.MulAmount(u.Coupons, b.Unit)
	if err != nil {
		return u, err
	}
	u.Value = v
	return u, nil
}

// ErrBookHasValue means a funded book with coupons left, or a pending one
// (the broker may hold its value), was to be removed without force: its
// value would be lost.
var ErrBookHasValue = errors.New("wallet: the book is funded and has value left")

// RemoveBook deletes a book (or grant) and its lane state from the wallet.
// A funded, unexpired book with coupons left is removed only with force:
// its coupons are money; so is a pending one, which the broker may have
// funded without the wallet hearing of it. The lane state's lock is held
// meanwhile, so a process paying from the book makes it fail with
// ErrLocked.
func (w *Wallet) RemoveBook(e *BookEntry, force bool) error {
	st, err := openStore(e.fs, e.StatePath)
	if err != nil {
		return err
	}
	defer st.close()
	if e.State(time.Now()) == BookPending && !force {
		return fmt.Errorf("%w: the book is pending, and the broker may hold its value without the wallet knowing "+
			"(fund it first: ecoupons wallet book fund %s; or remove it anyway with --force)", ErrBookHasValue, e.ShortID())
	}
	if e.State(time.Now()) == BookFunded && !force {
		u, err := e.Usage()
		if err != nil {
			return err
		}
		if u.Coupons > 0 {
			return fmt.Errorf("%w: %s %s in %d coupon(s) (remove it anyway with --force)", ErrBookHasValue,
				coupons.FormatAmount(u.Value), e.Holder.Book.Book.Currency, u.Coupons)
		}
	}
	// The book first: a crash after it leaves a lane state nothing reads.
	files := []string{e.file}
	if !e.owned {
		files = append(files, strings.TrimSuffix(e.file, ".grant")+".delegated")
	}
	files = append(files, e.StatePath)
	for _, f := range files {
		if err := storageOr(e.fs).Remove(f); err != nil && !isNotExist(err) {
			return err
		}
	}
	return nil
}

// BooksFor returns the books and grants for vendor the wallet may spend:
// funded and unexpired, with lanes of its own, those with the most value
// left first (the oldest first among equals). With none it fails with
// ErrNoBook, saying why (a pending book, none at all).
func (w *Wallet) BooksFor(vendor string) ([]*BookEntry, error) {
	books, err := w.Books()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	type cand struct {
		e     *BookEntry
		value int64
	}
	var cs []cand
	pending, refused, expired := "", 0, 0
	for i := range books {
		e := &books[i]
		if e.Holder.Book.Book.Vendor != vendor || len(e.Lanes) == 0 {
			continue
		}
		switch e.State(now) {
		case BookFunded:
			u, err := e.Usage()
			if err != nil {
				// Last: its transport says what is wrong if it is needed.
				u.Value = -1
			}
			cs = append(cs, cand{e, u.Value})
		case BookPending:
			if pending == "" {
				pending = e.ShortID()
			}
		case BookRefused:
			refused++
		case BookExpired:
			expired++
		}
	}
	if len(cs) == 0 {
		switch {
		case pending != "":
			return nil, fmt.Errorf("%w: %s has only book %s, which the broker has not funded yet (ecoupons wallet book fund %s)", ErrNoBook, vendor, pending, pending)
		case refused+expired > 0:
			return nil, fmt.Errorf("%w: %s has no funded book left (%d refused by the broker, %d expired; create one: ecoupons wallet book new --vendor %s)",
				ErrNoBook, vendor, refused, expired, vendor)
		}
		return nil, fmt.Errorf("%w: %s (create one: ecoupons wallet book new --vendor %s)", ErrNoBook, vendor, vendor)
	}
	slices.SortStableFunc(cs, func(a, b cand) int {
		if c := cmp.Compare(b.value, a.value); c != 0 {
			return c
		}
		return a.e.Created.Compare(b.e.Created)
	})
	out := make([]*BookEntry, len(cs))
	for i, c := range cs {
		out[i] = c.e
	}
	return out, nil
}

// BookFor returns the book BooksFor chooses first for vendor: funded,
// unexpired, most value left (an unfunded or refused book is never
// spent: no gate accepts it, and a coupon revealed for it would be lost).
func (w *Wallet) BookFor(vendor string) (*BookEntry, error) {
	es, err := w.BooksFor(vendor)
	if err != nil {
		return nil, err
	}
	return es[0], nil
}

// fileTime is a file's modification time (zero when it cannot be read).
func fileTime(fs Storage, path string) time.Time {
	t, err := storageOr(fs).ModTime(path)
	if err != nil {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Second)
}

// OpenTransport opens the transport that pays from e's lanes, its state
// kept where e is (OpenTransportIn).
func (e *BookEntry) OpenTransport() (*Transport, error) {
	return OpenTransportIn(storageOr(e.fs), e.Holder, e.StatePath, e.Lanes...)
}

// bookRefusals are the gate's answers that refuse a book as a whole: the
// wallet pays with its next book instead.
var bookRefusals = []string{
	coupons.CodeUnknownBook,       // the broker does not hold it (semi, online)
	coupons.CodeBookNotFunded,     // no valid book certificate
	coupons.CodeBookExpired,       // past its expiry
	coupons.CodeBookClosed,        // released by the broker
	coupons.CodeBookRefused,       // the broker will not hold it
	coupons.CodeRevoked,           // the book's key or grant is revoked
	coupons.CodeOwnerNotCertified, // the owner's user certificate is not valid
	// An anonymous book's blind funding the gate does not take.
	coupons.CodeUnknownDenomination, coupons.CodeWrongDenomination, coupons.CodeDenominationExpired, coupons.CodeBadBlindSignature,
}

// Chooser pays one vendor's challenges from several books in order
// (BooksFor's: most value left first): a book with no lane left, or one a
// gate refuses as a whole (unknown, unfunded, expired, revoked), is
// skipped for the next, for the same request. Transports are opened as
// they are first needed.
type Chooser struct {
	// Entries are the books, in the order they are tried.
	Entries []*BookEntry
	// Open opens the transport of an entry (with its budget, receipts…).
	Open func(*BookEntry) (*Transport, error)
	// Base sends requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// Refresh, when set, lists the books again (BooksFor) when none of
	// Entries could pay: a long-running proxy then pays from books made
	// after it started.
	Refresh func() ([]*BookEntry, error)
	// Scheme is the scheme RoundTrip answers 402s in, as Transport.Scheme.
	Scheme string

	mu      sync.Mutex
	open    map[string]*Transport // by StatePath: one transport per book or grant
	refused map[string]string     // books a gate refused in this process, and why
}

// transport returns e's transport, opening it on first use.
func (c *Chooser) transport(e *BookEntry) (*Transport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.open[e.StatePath]; ok {
		return t, nil
	}
	t, err := c.Open(e)
	if err != nil {
		return nil, err
	}
	if t.Base == nil {
		t.Base = c.Base
	}
	if c.open == nil {
		c.open = map[string]*Transport{}
	}
	c.open[e.StatePath] = t
	return t, nil
}

// RoundTrip implements http.RoundTripper: it sends req (with
// Accept-Payment unless Scheme is SchemeECoupon); on a 402 whose challenge
// it can answer in its Scheme it pays from the books in turn.
func (c *Chooser) RoundTrip(req *http.Request) (*http.Response, error) {
	base := c.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if req.Body != nil && req.GetBody == nil {
		return nil, errors.New("wallet: a request with a body needs GetBody to be retried after a 402")
	}
	if err := checkScheme(c.Scheme); err != nil {
		return nil, err
	}
	req = offerPayment(req, c.Scheme)
	resp, err := base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusPaymentRequired {
		return resp, err
	}
	ch, err := ChallengeFromResponse(resp.Header, c.Scheme)
	if err != nil {
		return resp, nil // not ours to answer
	}
	resp.Body.Close()
	return c.Answer(req, ch)
}

// Answer pays ch for req from the first book that can: first without
// waiting for a lane, then, when every book's lanes are in use, waiting
// for one of the first busy book's (its LaneWait, req's context).
func (c *Chooser) Answer(req *http.Request, ch *Challenge) (*http.Response, error) {
	c.mu.Lock()
	entries := c.Entries
	c.mu.Unlock()
	resp, ch, busy, err := c.try(req, ch, entries)
	exhausted := err == nil || errors.Is(err, ErrNoLane) || errors.Is(err, ErrNoBook)
	if resp != nil || busy != nil || c.Refresh == nil || !exhausted {
		return c.finish(req, ch, resp, busy, err)
	}
	// None could pay: books made since may.
	fresh, rerr := c.Refresh()
	if rerr != nil {
		return c.finish(req, ch, resp, busy, err)
	}
	var added []*BookEntry
	c.mu.Lock()
	for _, e := range fresh {
		if !slices.ContainsFunc(c.Entries, func(o *BookEntry) bool { return o.StatePath == e.StatePath }) {
			added = append(added, e)
			c.Entries = append(c.Entries, e)
		}
	}
	c.mu.Unlock()
	if len(added) == 0 {
		return c.finish(req, ch, resp, busy, err)
	}
	r2, ch2, busy2, err2 := c.try(req, ch, added)
	return c.finish(req, ch2, r2, busy2, cmp.Or(err, err2))
}

// finish returns a response, or waits for a lane of the busy book, or
// fails with err.
func (c *Chooser) finish(req *http.Request, ch *Challenge, resp *http.Response, busy *Transport, err error) (*http.Response, error) {
	switch {
	case resp != nil:
		return resp, nil
	case busy != nil:
		return busy.Answer(req, ch)
	case err == nil:
		err = fmt.Errorf("%w: %s", ErrNoBook, ch.Vendor)
	}
	return nil, err
}

// try pays ch from the first of entries that can without waiting for a
// lane. It returns the response, or the first book whose lanes were all
// in use, or why none could pay; and the challenge to answer next.
func (c *Chooser) try(req *http.Request, ch *Challenge, entries []*BookEntry) (*http.Response, *Challenge, *Transport, error) {
	var firstErr error
	var busy *Transport
	for _, e := range entries {
		c.mu.Lock()
		why, skip := c.refused[e.StatePath]
		c.mu.Unlock()
		if skip {
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: %s: the gate refused book %s (%s)", ErrNoBook, ch.Vendor, e.ShortID(), why)
			}
			continue
		}
		t, err := c.transport(e)
		if errors.Is(err, ErrLocked) {
			return nil, ch, nil, err // the user must know another process holds it
		}
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		resp, err := t.answer(req, ch, -1)
		switch {
		case errors.Is(err, ErrLanesBusy):
			if busy == nil {
				busy = t
			}
			continue
		case errors.Is(err, ErrNoLane):
			firstErr = cmp.Or(firstErr, err)
			continue
		case err != nil:
			return nil, ch, nil, err
		}
		code := ""
		if resp.StatusCode == http.StatusPaymentRequired {
			code = refusalCode(resp)
		}
		if !slices.Contains(bookRefusals, code) {
			return resp, ch, nil, nil
		}
		// The gate refuses the book as a whole: pay with the next, on the
		// challenge of this answer (a fresh nonce) when it has one.
		c.mu.Lock()
		if c.refused == nil {
			c.refused = map[string]string{}
		}
		c.refused[e.StatePath] = code
		c.mu.Unlock()
		firstErr = cmp.Or(firstErr, fmt.Errorf("%w: %s: the gate refused book %s (%s)", ErrNoBook, ch.Vendor, e.ShortID(), code))
		if nch, perr := nextChallenge(resp.Header, ch); perr == nil {
			ch = nch
		}
		resp.Body.Close()
	}
	return nil, ch, busy, firstErr
}

// Spent returns the coupons revealed by every transport opened.
func (c *Chooser) Spent() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n uint64
	for _, t := range c.open {
		n += t.Spent()
	}
	return n
}

// Close closes the transports opened, releasing their state's locks.
func (c *Chooser) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, t := range c.open {
		errs = append(errs, t.Close())
	}
	c.open = nil
	return errors.Join(errs...)
}
