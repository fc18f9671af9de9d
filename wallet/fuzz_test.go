package wallet

import (
	"encoding/base64"
	"errors"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// FuzzParseDisclosed: any header parses or fails cleanly, and what parses
// renders to a header that parses to the same value.
func FuzzParseDisclosed(f *testing.F) {
	f.Add("d=5, k=Pre6X3QGvn2JgKb5GXV1E9rMGmYdUhokJyM-zEzP1kE")
	f.Add("d=0, k=")
	f.Add("k=x, d=1")
	f.Fuzz(func(t *testing.T, h string) {
		j, k, err := parseDisclosed(h)
		if err != nil {
			return
		}
		again := "d=" + strconv.FormatUint(j, 10) + ", k=" + base64.RawURLEncoding.EncodeToString(k[:])
		if j2, k2, err := parseDisclosed(again); err != nil || j2 != j || k2 != k {
			t.Fatalf("%q parsed as %q, which does not parse back: %v", h, again, err)
		}
	})
}

// FuzzParseChallenge: any WWW-Authenticate value parses or fails cleanly.
func FuzzParseChallenge(f *testing.F) {
	f.Add(`ECoupon realm="news", vendor="news.example", price=2, unit="0.001", currency=EUR, nonce=abc`)
	f.Add(`ECoupon price=0`)
	f.Fuzz(func(t *testing.T, h string) {
		c, err := ParseChallenge(h)
		if err == nil && (c.Vendor == "" || c.Nonce == "" || c.Price == 0) {
			t.Fatalf("%q accepted without vendor, nonce or price", h)
		}
	})
}

// FuzzBudgetFile: a damaged limits file is refused with an error, never a
// panic, and a Charge against what loads stays within every limit.
func FuzzBudgetFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"limits":[{"host":"*","currency":"EUR","max":5,"period":3600000000000}]}`))
	f.Add([]byte(`{"version":1,"limits":[{"host":"a","currency":"EUR","max":-1,"period":1}],"windows":{"x":{"start":1,"spent":9}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "limits.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := OpenBudget(path)
		if err != nil {
			return
		}
		b.Now = func() time.Time { return time.Unix(1e9, 0) }
		ls, _ := b.Limits()
		if err := b.Charge("a", "EUR", 1); err != nil {
			return
		}
		for _, l := range ls {
			if s, err := b.Spent(l); err == nil && (l.Host == "*" || l.Host == "a") && l.Currency == "EUR" && s > l.Max {
				t.Fatalf("limit %v overspent: %d", l, s)
			}
		}
	})
}

type noNetwork struct{}

func (noNetwork) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no network in fuzzing")
}

// FuzzReceiptLog: a damaged receipt log is checked without a panic: every
// record gets a status, and nothing unverifiable is called authenticated.
func FuzzReceiptLog(f *testing.F) {
	f.Add([]byte(`{"at":"2030-01-01T00:00:00Z","vendor":"v","origin":"http://x","header":"c=duxfqji0LwpBCJcg, t=3, m=UJoceNf5O3MOD46Bhdl2VA, d=1, k=Pre6X3QGvn2JgKb5GXV1E9rMGmYdUhokJyM-zEzP1kE","lane":"AAAA.1","i":1,"paid":1,"span":70,"digest":"AA"}` + "\n{"))
	f.Add([]byte("not json\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "receipts.jsonl"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		log := OpenReceiptLog(dir)
		log.Client = &http.Client{Transport: noNetwork{}}
		checked, err := log.Check(0)
		if err != nil {
			return
		}
		for _, c := range checked {
			if c.Status == ReceiptAuthenticated {
				t.Fatalf("authenticated without any commitment: %+v", c)
			}
		}
	})
}

// FuzzDelegationsFile: a grant's record of what was sub-granted
// (grants/<h>.delegated) never panics its reader, and what it reads
// writes back to a record that reads the same.
func FuzzDelegationsFile(f *testing.F) {
	f.Add([]byte(`{"delegated":[2,3],"ends":{"2":5,"3":64}}`))
	f.Add([]byte(`{"ends":{"x":1}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "g.delegated"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		w := &Wallet{Dir: dir}
		e := &BookEntry{file: filepath.Join(dir, "g.grant")}
		d, err := w.readDelegations(e)
		if err != nil {
			return
		}
		if err := w.writeDelegations(e, d); err != nil {
			t.Fatal(err)
		}
		again, err := w.readDelegations(e)
		if err != nil || !slices.Equal(again.Delegated, d.Delegated) || !maps.Equal(again.Ends, d.Ends) {
			t.Fatalf("the record changed on a round trip: %v", err)
		}
	})
}
