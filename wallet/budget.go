package wallet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
)

// ErrSpendLimit means a payment would take a host past one of the wallet's
// spending limits; nothing was spent.
var ErrSpendLimit = errors.New("wallet: spending limit reached")

// Limit caps what a wallet spends within a period, at one host or at all
// hosts together.
type Limit struct {
	// Host is the host name the limit applies to (no port, lower case);
	// "*" applies it to all hosts together.
	Host string `json:"host"`
	// Currency is the currency of Max; payments in other currencies are
	// not counted against this limit.
	Currency string `json:"currency"`
	// Max is the most that may be spent in one period, in 10^-9 units of
	// Currency (see coupons.ParseAmount).
	Max int64 `json:"max"`
	// Period is the length of the windows the limit counts in. Windows are
	// fixed, multiples of Period since 0001-01-01 UTC (time.Truncate): a
	// limit per 24h resets at midnight UTC, per 1h on the hour, per 168h on
	// Mondays at midnight UTC.
	Period time.Duration `json:"period"`
}

// key names the limit's counter: one per host, currency and period.
func (l Limit) key() string {
	return l.Host + " " + l.Currency + " " + l.Period.String()
}

// String renders the limit as the CLI shows it.
func (l Limit) String() string {
	return fmt.Sprintf("%s %s per %s at %s", coupons.FormatAmount(l.Max), l.Currency, l.Period, l.Host)
}

// Check reports why a limit is unusable.
func (l Limit) Check() error {
	switch {
	case l.Host == "" || strings.ContainsAny(l.Host, ": /") && l.Host != "*":
		return fmt.Errorf("wallet: limit host %q must be a host name without port, or *", l.Host)
	case l.Max < 0:
		return fmt.Errorf("wallet: limit %s is negative", coupons.FormatAmount(l.Max))
	case l.Period < time.Second:
		return fmt.Errorf("wallet: limit period %s is shorter than a second", l.Period)
	}
	return coupons.CheckCurrency(l.Currency)
}

// window is what was spent against one limit in its current window.
type window struct {
	Start int64 `json:"start"` // Unix seconds of the window's start
	Spent int64 `json:"spent"` // nanos
}

type budgetFile struct {
	Version int               `json:"version"`
	Limits  []Limit           `json:"limits"`
	Windows map[string]window `json:"windows,omitempty"`
}

// Budget enforces spending limits shared by every transport and process
// of a wallet. It lives in one file: each Charge locks it, checks every
// limit that applies, adds the amount and writes the file durably before
// the payment goes out, so a crash can count a coupon that never left
// against a limit, never the reverse. The zero of a Budget is not usable;
// use OpenBudget.
type Budget struct {
	fs   Storage
	path string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	mu  sync.Mutex
}

// OpenBudget uses the budget file at path (created on the first change).
func OpenBudget(path string) (*Budget, error) { return OpenBudgetIn(Files{}, path) }

// OpenBudgetIn is OpenBudget with the file kept in fs.
func OpenBudgetIn(fs Storage, path string) (*Budget, error) {
	b := &Budget{fs: storageOr(fs), path: path}
	_, err := b.read()
	return b, err
}

func (b *Budget) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// locked runs f with the file locked against other processes; f's result
// is written back when write is true and f succeeds.
func (b *Budget) locked(write bool, f func(*budgetFile) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Held for one read-modify-write: waiting without a timeout is fine.
	unlock, err := b.fs.Lock(b.path+".lock", -1)
	if err != nil {
		return err
	}
	defer unlock()
	bf, err := b.read()
	if err != nil {
		return err
	}
	if err := f(bf); err != nil || !write {
		return err
	}
	raw, err := json.MarshalIndent(bf, "", "  ")
	if err != nil {
		return err
	}
	return b.fs.WriteFile(b.path, raw)
}

func (b *Budget) read() (*budgetFile, error) {
	raw, err := b.fs.ReadFile(b.path)
	if isNotExist(err) {
		return &budgetFile{Version: 1}, nil
	}
	if err != nil {
		return nil, err
	}
	var bf budgetFile
	if err := json.Unmarshal(raw, &bf); err != nil || bf.Version != 1 {
		return nil, fmt.Errorf("wallet: limits file %s is corrupt or of another version: %v", b.path, err)
	}
	for _, l := range bf.Limits {
		if err := l.Check(); err != nil {
			return nil, fmt.Errorf("wallet: limits file %s: %w", b.path, err)
		}
	}
	return &bf, nil
}

// Limits returns the limits in force.
func (b *Budget) Limits() ([]Limit, error) {
	var out []Limit
	err := b.locked(false, func(bf *budgetFile) error { out = bf.Limits; return nil })
	return out, err
}

// Set adds l, or replaces the limit with the same host, currency and
// period; what was already spent in the current window still counts.
func (b *Budget) Set(l Limit) error {
	l.Host = strings.ToLower(l.Host)
	if err := l.Check(); err != nil {
		return err
	}
	return b.locked(true, func(bf *budgetFile) error {
		bf.Limits = slices.DeleteFunc(bf.Limits, func(o Limit) bool { return o.key() == l.key() })
		bf.Limits = append(bf.Limits, l)
		return nil
	})
}

// Remove deletes the limit with l's host, currency and period; it reports
// whether there was one.
func (b *Budget) Remove(l Limit) (bool, error) {
	l.Host = strings.ToLower(l.Host)
	found := false
	err := b.locked(true, func(bf *budgetFile) error {
		n := len(bf.Limits)
		bf.Limits = slices.DeleteFunc(bf.Limits, func(o Limit) bool { return o.key() == l.key() })
		found = len(bf.Limits) < n
		delete(bf.Windows, l.key())
		return nil
	})
	return found, err
}

// Spent returns what was spent against l in its current window.
func (b *Budget) Spent(l Limit) (int64, error) {
	var spent int64
	l.Host = strings.ToLower(l.Host)
	now := b.now()
	err := b.locked(false, func(bf *budgetFile) error {
		if w, ok := bf.Windows[l.key()]; ok && w.Start == windowStart(now, l.Period) {
			spent = w.Spent
		}
		return nil
	})
	return spent, err
}

func windowStart(now time.Time, p time.Duration) int64 {
	return now.Truncate(p).Unix()
}

// Charge counts amount (nanos of currency) spent at host against every
// limit that applies, or refuses with ErrSpendLimit, counting nothing,
// when one of them would be exceeded.
func (b *Budget) Charge(host, currency string, amount int64) error {
	// No limits file, no limits: no lock and no read on the payment path.
	// (A limit set while this payment is under way applies from the next.)
	if _, err := b.fs.ModTime(b.path); isNotExist(err) {
		return nil
	}
	host = strings.ToLower(host)
	now := b.now()
	err := b.locked(true, func(bf *budgetFile) error {
		if len(bf.Limits) == 0 {
			return errNoChange
		}
		if bf.Windows == nil {
			bf.Windows = map[string]window{}
		}
		next := map[string]window{}
		for _, l := range bf.Limits {
			if l.Currency != currency || (l.Host != "*" && l.Host != host) {
				continue
			}
			start := windowStart(now, l.Period)
			w := bf.Windows[l.key()]
			if w.Start != start {
				w = window{Start: start}
			}
			if amount > l.Max-w.Spent {
				reset := time.Unix(start, 0).Add(l.Period).UTC()
				return fmt.Errorf("%w: %s %s at %s would make %s of %s %s per %s (resets %s)", ErrSpendLimit,
					coupons.FormatAmount(amount), currency, host, coupons.FormatAmount(w.Spent+amount),
					coupons.FormatAmount(l.Max), l.Currency, l.Period, reset.Format(time.RFC3339))
			}
			w.Spent += amount
			next[l.key()] = w
		}
		if len(next) == 0 {
			return errNoChange
		}
		for k, w := range next {
			bf.Windows[k] = w
		}
		return nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	return err
}

// errNoChange skips the write of a Charge no limit applies to.
var errNoChange = errors.New("no change")

// writeDurably replaces path with b: a temporary file, fsync, rename,
// fsync of the directory; a crash leaves the old or the new file, whole.
func writeDurably(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
