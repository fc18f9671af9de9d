package main

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/wallet"
	"github.com/spf13/cobra"
)

// checkURL checks a base URL given to flag: absolute, http or https. A
// bare host:port gets the hint of the URL meant.
func checkURL(flag, s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" || strings.Contains(s, " ") {
		hint := ""
		if s != "" && !strings.Contains(s, "://") && !strings.Contains(s, " ") {
			hint = fmt.Sprintf(": did you mean http://%s?", s)
		}
		return "", walletErr{exitUsage, fmt.Errorf("%s %q must be an absolute URL (http:// or https://)%s", flag, s, hint)}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", walletErr{exitUsage, fmt.Errorf("%s %q: the scheme must be http or https, not %s", flag, s, u.Scheme)}
	}
	return strings.TrimRight(s, "/"), nil
}

// nextPow2 returns the smallest power of two ≥ n (n ≥ 1), and false when
// it does not fit in 32 bits.
func nextPow2(n uint32) (uint32, bool) {
	if n <= 1 {
		return 1, true
	}
	if n > 1<<31 {
		return 0, false
	}
	return 1 << bits.Len32(n-1), true
}

// warnKeyFile warns on stderr when the wallet's key files (the signing
// key, the key grants are sealed to) can be read by group or others.
func warnKeyFile(dir string) {
	if runtime.GOOS == "windows" {
		return
	}
	for _, f := range []string{"key.pem", "enc.key"} {
		p := filepath.Join(dir, f)
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(os.Stderr, "warning: %s can be read by others (mode %04o): anyone who can read it can spend your books; fix it with: chmod 600 %s\n",
				p, fi.Mode().Perm(), p)
		}
	}
}

// checkWalletDir says when the wallet directory does not exist.
func checkWalletDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no wallet here: the wallet directory %s does not exist (create a wallet there: ecoupons wallet init --dir %s)", dir, dir)
	}
	if err == nil && !fi.IsDir() {
		return fmt.Errorf("the wallet directory %s is not a directory", dir)
	}
	return nil
}

// findBook returns the one book (or grant) whose id starts with prefix.
func findBook(books []wallet.BookEntry, prefix string) (*wallet.BookEntry, error) {
	prefix = strings.TrimSpace(prefix)
	if prefix == "" {
		return nil, walletErr{exitUsage, errors.New("name a book by (a prefix of) its id, as 'ecoupons wallet book list' shows it")}
	}
	var found *wallet.BookEntry
	for i := range books {
		if books[i].NamedBy(prefix) {
			if found != nil {
				return nil, walletErr{exitUsage, fmt.Errorf("%q names more than one book: give more of its id", prefix)}
			}
			found = &books[i]
		}
	}
	if found == nil {
		return nil, walletErr{exitUsage, fmt.Errorf("no book of this wallet starts with %q (see: ecoupons wallet book list)", prefix)}
	}
	return found, nil
}

// bookJSON is a book in 'book list --json'.
type bookJSON struct {
	Book      string   `json:"book"`
	Kind      string   `json:"kind"`
	Vendor    string   `json:"vendor"`
	Created   string   `json:"created"`
	State     string   `json:"state"`  // pending, funded, refused or expired
	Status    string   `json:"status"` // the same as state (older scripts)
	Lanes     uint32   `json:"lanes"`
	Length    uint32   `json:"length"`
	Unit      string   `json:"unit"`
	Currency  string   `json:"currency"`
	NotAfter  string   `json:"not_after"`
	Spending  []uint32 `json:"spending_lanes"`
	LanesUsed int      `json:"lanes_used"`
	LanesFree int      `json:"lanes_free"`
	Coupons   uint64   `json:"coupons_left"`
	Remaining string   `json:"remaining"` // value left, in currency units
	Refused   string   `json:"refused,omitempty"`
}

// listBooks prints the wallet's books, oldest first.
func listBooks(cmd *cobra.Command, w *wallet.Wallet) error {
	books, err := w.Books()
	if err != nil {
		return err
	}
	slices.SortStableFunc(books, func(a, b wallet.BookEntry) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ShortID(), b.ShortID())
	})
	now := time.Now()
	list := []bookJSON{}
	if !jsonOutput(cmd) && len(books) > 0 {
		fmt.Printf("%-12s  %-10s  %-8s %-7s %-20s %-32s %-9s  %-16s %-10s  %s\n",
			"BOOK", "CREATED", "STATE", "KIND", "VENDOR", "COUPONS", "USED/FREE", "LEFT", "EXPIRES", "LANES")
	}
	for _, e := range books {
		b := e.Holder.Book.Book
		id := b.ID()
		kind := "own"
		if !e.Owned() {
			kind = "granted"
		}
		if e.Anonymous() {
			kind = "anon" // its own key, funded blindly: no account named
			if !e.Owned() {
				kind = "anon-gr"
			}
		}
		st := e.State(now)
		u, err := e.Usage()
		left := coupons.FormatAmount(u.Value) + " " + b.Currency
		if err != nil {
			// One unreadable lane state must not hide the other books.
			fmt.Fprintf(os.Stderr, "book %s: %v\n", e.ShortID(), err)
			left = "?"
		}
		if jsonOutput(cmd) {
			list = append(list, bookJSON{Book: hex.EncodeToString(id[:]), Kind: kind, Vendor: b.Vendor, Created: e.Created.UTC().Format(time.RFC3339),
				State: string(st), Status: string(st), Lanes: b.Lanes, Length: b.Length, Unit: coupons.FormatAmount(b.Unit), Currency: b.Currency,
				NotAfter: b.NotAfter.UTC().Format(time.RFC3339), Spending: append([]uint32{}, e.Lanes...), LanesUsed: u.Used, LanesFree: u.Free,
				Coupons: u.Coupons, Remaining: coupons.FormatAmount(u.Value), Refused: e.Refused})
			continue
		}
		note := ""
		switch st {
		case wallet.BookRefused:
			note = "  REFUSED by the broker (" + e.Refused + "): never spent (remove it: ecoupons wallet book rm " + e.ShortID() + ")"
		case wallet.BookPending:
			note = "  PENDING: not spent until 'ecoupons wallet book fund " + e.ShortID() + "' succeeds"
		case wallet.BookExpired:
			note = "  EXPIRED: no gate takes it"
		}
		fmt.Printf("%-12s  %-10s  %-8s %-7s %-20s %4d lanes × %-6d %-12s %4d/%-4d  %-16s %-10s  spending lanes %s%s\n",
			e.ShortID(), e.Created.Local().Format("2006-01-02"), st, kind, b.Vendor, b.Lanes, b.Length,
			coupons.FormatAmount(b.Unit)+" "+b.Currency, u.Used, u.Free, left, b.NotAfter.Local().Format("2006-01-02"), laneRanges(e.Lanes), note)
	}
	problems, err := w.GrantProblems()
	if err != nil {
		return err
	}
	if jsonOutput(cmd) {
		return printJSON(list)
	}
	if len(books) == 0 {
		fmt.Println("no books (create one: ecoupons wallet book new --vendor VENDOR)")
	}
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "grant not usable: %s\n", p)
	}
	return nil
}

func walletBookRmCmd() *cobra.Command {
	c := &cobra.Command{Use: "rm BOOK [--force]", Short: "Remove a book (or grant) and its lane state from the wallet", Args: cobra.ExactArgs(1),
		Long: `Removes a book (or an imported grant) and its lane state. BOOK is a prefix of its
id in hex, as 'book list' shows it. A refused or expired book, or one used up,
goes at once. A funded book with value left is money: it is removed only with
--force (the broker keeps holding its value until the book expires); so is a
pending one, which the broker may have funded without the wallet hearing of it
(try 'book fund' first).`,
		Run: run(func(cmd *cobra.Command, args []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			force, _ := cmd.Flags().GetBool("force")
			books, err := w.Books()
			if err != nil {
				return err
			}
			e, err := findBook(books, args[0])
			if err != nil {
				return err
			}
			st := e.State(time.Now())
			if err := w.RemoveBook(e, force); err != nil {
				return err
			}
			return report(cmd, map[string]any{"removed": e.ShortID(), "state": string(st)},
				fmt.Sprintf("book %s (%s, %s) removed", e.ShortID(), st, e.Holder.Book.Book.Vendor))
		})}
	c.Flags().Bool("force", false, "remove a funded book with value left, or a pending one")
	return c
}

// bookChooser returns a chooser over the books to pay vendor from: the
// one named by --book (a prefix of its ID), or all the funded ones BooksFor
// orders.
func bookChooser(w *wallet.Wallet, vendor, only string, open func(*wallet.BookEntry) (*wallet.Transport, error)) (*wallet.Chooser, error) {
	var entries []*wallet.BookEntry
	if only != "" {
		books, err := w.Books()
		if err != nil {
			return nil, err
		}
		e, err := findBook(books, only)
		if err != nil {
			return nil, err
		}
		switch st := e.State(time.Now()); {
		case e.Holder.Book.Book.Vendor != vendor:
			return nil, walletErr{exitUsage, fmt.Errorf("book %s is for %s, the site asks to pay %s", e.ShortID(), e.Holder.Book.Book.Vendor, vendor)}
		case st != wallet.BookFunded:
			return nil, fmt.Errorf("%w: book %s is %s, not funded: it is never spent", wallet.ErrNoBook, e.ShortID(), st)
		}
		entries = []*wallet.BookEntry{e}
	} else {
		var err error
		if entries, err = w.BooksFor(vendor); err != nil {
			return nil, err
		}
	}
	return &wallet.Chooser{Entries: entries, Open: open}, nil
}

// checkAccountListed checks that the broker's balance lists account in
// currency for the wallet's key: a broker that keeps one currency per key
// registers a second account it then knows nothing about.
func checkAccountListed(w *wallet.Wallet, account, currency string) error {
	var out struct {
		Accounts []struct{ Account, Currency string } `json:"accounts"`
	}
	if err := brokerCall(w, "GET", "/v1/balance", nil, &out); err != nil {
		return fmt.Errorf("checking the new %s account: %w", currency, err)
	}
	have := []string{}
	for _, a := range out.Accounts {
		if a.Account == account && a.Currency == currency {
			return nil
		}
		have = append(have, a.Currency)
	}
	old := cmp.Or(strings.Join(have, ", "), w.Config.Currency)
	return fmt.Errorf("the broker keeps this key's account in %s only (it lists no %s account for it): the wallet stays in %s; "+
		"to pay in %s, make another wallet (ecoupons wallet init --dir DIR) and register it with --currency %s",
		old, currency, old, currency, currency)
}

// limitToRemove finds the limit 'limit rm' names: l's host, currency and
// period; without --per (perGiven false), the one limit of that host and
// currency whatever its period. With none or several it says which there
// are.
func limitToRemove(b *wallet.Budget, l wallet.Limit, perGiven bool) (wallet.Limit, error) {
	ls, err := b.Limits()
	if err != nil {
		return l, err
	}
	var same, all []string
	var match []wallet.Limit
	for _, o := range ls {
		all = append(all, o.String())
		if strings.EqualFold(o.Host, l.Host) && o.Currency == l.Currency {
			same = append(same, o.String())
			if !perGiven || o.Period == l.Period {
				match = append(match, o)
			}
		}
	}
	switch {
	case len(match) == 1:
		return match[0], nil
	case len(match) > 1:
		return l, walletErr{exitUsage, fmt.Errorf("%d limits at %s in %s (%s): name one with --per", len(match), l.Host, l.Currency, strings.Join(same, "; "))}
	case len(all) == 0:
		return l, fmt.Errorf("no spending limits to remove")
	}
	what := fmt.Sprintf("at %s in %s", l.Host, l.Currency)
	if perGiven {
		what = fmt.Sprintf("per %s %s", l.Period, what)
	}
	return l, fmt.Errorf("no limit %s; the limits are: %s (name one with --host, --per and --currency)", what, strings.Join(all, "; "))
}
