package wallet

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limits.json")
	now := time.Date(2030, 1, 1, 23, 59, 0, 0, time.UTC)
	open := func() *Budget {
		b, err := OpenBudget(path)
		if err != nil {
			t.Fatal(err)
		}
		b.Now = func() time.Time { return now }
		return b
	}
	b := open()
	// No limits: everything passes and nothing is written.
	if err := b.Charge("news.example", "EUR", 1e9); err != nil {
		t.Fatal(err)
	}
	day := Limit{Host: "News.Example", Currency: "EUR", Max: 10_000_000, Period: 24 * time.Hour} // 0.01 EUR a day
	all := Limit{Host: "*", Currency: "EUR", Max: 15_000_000, Period: time.Hour}
	for _, l := range []Limit{day, all} {
		if err := b.Set(l); err != nil {
			t.Fatal(err)
		}
	}
	must := func(host, cur string, amount int64) {
		t.Helper()
		if err := b.Charge(host, cur, amount); err != nil {
			t.Fatal(err)
		}
	}
	must("news.example", "EUR", 6_000_000)
	must("news.example", "USD", 1e9) // another currency: not counted
	must("blog.example", "EUR", 5_000_000)
	err := b.Charge("NEWS.example", "EUR", 5_000_000)
	if !errors.Is(err, ErrSpendLimit) || !strings.Contains(err.Error(), "0.011 of 0.01 EUR per 24h0m0s") {
		t.Fatalf("past the daily limit: %v", err)
	}
	// The refused charge counted nothing, in any limit.
	must("blog.example", "EUR", 4_000_000) // hourly total now 0.015, exactly the limit
	if err := b.Charge("blog.example", "EUR", 1); !errors.Is(err, ErrSpendLimit) {
		t.Fatalf("past the hourly total: %v", err)
	}
	// Another process sees the same counters.
	b2 := open()
	if s, _ := b2.Spent(Limit{Host: "news.example", Currency: "EUR", Period: 24 * time.Hour}); s != 6_000_000 {
		t.Fatalf("spent at news.example today: %d", s)
	}
	// Midnight UTC resets both windows.
	now = now.Add(time.Minute)
	must("news.example", "EUR", 10_000_000)
	// Replacing a limit keeps its counter; removing it drops it.
	if err := b.Set(Limit{Host: "news.example", Currency: "EUR", Max: 20_000_000, Period: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if s, _ := b.Spent(day); s != 10_000_000 {
		t.Fatalf("counter after raising the limit: %d", s)
	}
	if ok, err := b.Remove(all); !ok || err != nil {
		t.Fatalf("remove: %v %v", ok, err)
	}
	if ls, _ := b.Limits(); len(ls) != 1 || ls[0].Max != 20_000_000 {
		t.Fatalf("limits: %v", ls)
	}
	// Bad limits.
	for _, l := range []Limit{
		{Host: "", Currency: "EUR", Max: 1, Period: time.Hour},
		{Host: "a.example:443", Currency: "EUR", Max: 1, Period: time.Hour},
		{Host: "a.example", Currency: "EUR", Max: -1, Period: time.Hour},
		{Host: "a.example", Currency: "EUR", Max: 1, Period: time.Millisecond},
		{Host: "a.example", Currency: "euro", Max: 1, Period: time.Hour},
	} {
		if err := b.Set(l); err == nil {
			t.Errorf("limit %+v accepted", l)
		}
	}
}

// BenchmarkBudgetCharge: the cost a spending limit adds to a payment (one
// locked read-modify-write with fsync of the limits file).
func BenchmarkBudgetCharge(b *testing.B) {
	budget, err := OpenBudget(filepath.Join(b.TempDir(), "limits.json"))
	if err != nil {
		b.Fatal(err)
	}
	if err := budget.Set(Limit{Host: "*", Currency: "EUR", Max: 1 << 62, Period: 24 * time.Hour}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := budget.Charge("news.example", "EUR", 1000); err != nil {
			b.Fatal(err)
		}
	}
}
