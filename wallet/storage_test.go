package wallet

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
)

// memStorage is a Storage in memory (what the browser's IndexedDB is to
// the wallet: no files, no processes).
type memStorage struct {
	mu    sync.Mutex
	files map[string][]byte
	locks map[string]bool
}

func newMemStorage() *memStorage {
	return &memStorage{files: map[string][]byte{}, locks: map[string]bool{}}
}

func (m *memStorage) ReadFile(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return append([]byte(nil), b...), nil
}

func (m *memStorage) WriteFile(name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[name] = append([]byte(nil), data...)
	return nil
}

func (m *memStorage) AppendFile(name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[name] = append(m.files[name], data...)
	return nil
}

func (m *memStorage) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.files[name]; !ok {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	delete(m.files, name)
	return nil
}

func (m *memStorage) Glob(pattern string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range m.files {
		if ok, _ := filepath.Match(pattern, n); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (m *memStorage) ModTime(name string) (time.Time, error) {
	if _, err := m.ReadFile(name); err != nil {
		return time.Time{}, err
	}
	return time.Unix(1, 0), nil
}

func (m *memStorage) Lock(name string, wait time.Duration) (func() error, error) {
	deadline := time.Now().Add(wait)
	for {
		m.mu.Lock()
		if !m.locks[name] {
			m.locks[name] = true
			m.mu.Unlock()
			return func() error { m.mu.Lock(); delete(m.locks, name); m.mu.Unlock(); return nil }, nil
		}
		m.mu.Unlock()
		if wait >= 0 && time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, name)
		}
		time.Sleep(time.Millisecond)
	}
}

// storageGate is a gate that, when a coupon arrives, reads the paying
// wallet's lane state from its Storage: the coupon must be in it already.
type storageGate struct {
	t       testing.TB
	fs      Storage
	path    string
	indexes []uint32
}

func (g *storageGate) RoundTrip(r *http.Request) (*http.Response, error) {
	resp := &http.Response{Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok")), Request: r, StatusCode: 200}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		resp.StatusCode = 402
		resp.Header.Set("WWW-Authenticate", `ECoupon realm="news.example", vendor="news.example", price=1, unit="0.001", currency="EUR", nonce="AAAAAAAAAAAAAAAAAAAAAA"`)
		return resp, nil
	}
	var p coupons.Payment
	if err := coupons.ParsePayment(auth, &p); err != nil {
		return nil, err
	}
	saved, err := loadState(g.fs, g.path)
	if err != nil {
		return nil, err
	}
	l, ok := saved[p.Lane]
	if !ok || l.cursor.Position() < p.Index {
		g.t.Errorf("coupon %d of %s left before the state held it (saved: %v)", p.Index, p.Lane, ok)
	}
	g.indexes = append(g.indexes, p.Index)
	return resp, nil
}

// TestLaneStateInStorageBeforeCouponLeaves: with the lane state in a
// Storage other than files (the browser's), every coupon is in the stored
// state before it is sent, the state is locked while a transport pays from
// it, and a transport opened again continues the lanes where they were.
func TestLaneStateInStorageBeforeCouponLeaves(t *testing.T) {
	h := newTestTransport(t).holder
	st := newMemStorage()
	path := "wallet/grants/g.lanes"
	gate := &storageGate{t: t, fs: st, path: path}
	tr, err := OpenTransportIn(st, h, path, 0)
	if err != nil {
		t.Fatal(err)
	}
	tr.Base = gate
	for range 3 {
		if resp, err := get(t, tr); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
	}
	defer SetLockWait(lockWait)
	SetLockWait(10 * time.Millisecond)
	if _, err := OpenTransportIn(st, h, path, 0); !errors.Is(err, ErrLocked) {
		t.Fatalf("a second transport on the same state: %v", err)
	}
	tr.Close()
	tr2, err := OpenTransportIn(st, h, path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	tr2.Base = gate
	if _, err := get(t, tr2); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(gate.indexes) != "[1 2 3 4]" {
		t.Fatalf("coupons paid %v, want [1 2 3 4]", gate.indexes)
	}
}

// TestWalletInStorage: a wallet made in a Storage keeps its keys, grants,
// limits and receipts there: loaded again it has the same keys, the grant
// it imported pays, and its limits hold.
func TestWalletInStorage(t *testing.T) {
	st := newMemStorage()
	w, err := InitIn(st, "wallet", KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitIn(st, "wallet", KeyOptions{}); err == nil {
		t.Fatal("a second wallet over the first")
	}
	w2, err := LoadIn(st, "wallet", KeyOptions{})
	if err != nil || !w2.PublicKey().Equal(w.PublicKey()) || !w2.Enc.Equal(w.Enc) {
		t.Fatalf("loaded again: %v", err)
	}
	owner := newTestTransport(t).holder
	dev, err := w2.Device("browser")
	if err != nil {
		t.Fatal(err)
	}
	g, err := owner.Issue(dev, 0, 1, delegation.GrantOptions{Cap: 3_000_000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w2.ImportGrant(spki.Transport(g.Sexp()), time.Now()); err != nil {
		t.Fatal(err)
	}
	books, err := w2.BooksFor("news.example")
	if err != nil || len(books) != 1 {
		t.Fatalf("grants: %d %v", len(books), err)
	}
	budget, err := w2.Budget()
	if err != nil {
		t.Fatal(err)
	}
	if err := budget.Set(Limit{Host: "*", Currency: "EUR", Max: 2_000_000, Period: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	tr, err := books[0].OpenTransport()
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.Budget, tr.Receipts = budget, w2.Receipts()
	tr.Base = &storageGate{t: t, fs: st, path: books[0].StatePath}
	for i := range 3 {
		_, err := get(t, tr)
		if (i < 2) != (err == nil) || (i == 2 && !errors.Is(err, ErrSpendLimit)) {
			t.Fatalf("payment %d with a limit of 2 coupons: %v", i+1, err)
		}
	}
	names, _ := st.Glob("wallet/*")
	more, _ := st.Glob("wallet/*/*")
	got := strings.Join(append(names, more...), " ")
	for _, want := range []string{"wallet/key.pem", "wallet/enc.key", "wallet/config.json", "wallet/limits.json", ".grant", ".lanes"} {
		if !strings.Contains(got, want) {
			t.Errorf("the storage lacks %s: %s", want, got)
		}
	}
	if u, err := books[0].Usage(); err != nil || u.Coupons != 1 {
		t.Fatalf("usage from the storage: %+v %v", u, err)
	}
}

// FuzzLaneStateFile: a lane state read from a Storage (in a browser, any
// script of the site's origin can write IndexedDB) never panics its
// reader, and what it reads saves to a state that reads the same.
func FuzzLaneStateFile(f *testing.F) {
	h := newTestTransport(f).holder
	st := newMemStorage()
	tr, err := OpenTransportIn(st, h, "s.lanes", 0)
	if err != nil {
		f.Fatal(err)
	}
	tr.Base = &storageGate{t: f, fs: st, path: "s.lanes"}
	if _, err := (&http.Client{Transport: tr}).Get("http://news.example/x"); err != nil {
		f.Fatal(err)
	}
	tr.Close()
	seed, _ := st.ReadFile("s.lanes")
	f.Add(seed)
	f.Add([]byte(`{"version":1,"lanes":[{"lane":"x","cursor":"AAAA"}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := newMemStorage()
		m.WriteFile("s.lanes", data)
		saved, err := loadState(m, "s.lanes")
		if err != nil {
			return
		}
		var all []*lane
		for _, l := range saved {
			all = append(all, l)
		}
		s := &store{fs: m, path: "s.lanes", unlock: func() error { return nil }}
		if err := s.save(all); err != nil {
			return // a cursor that does not marshal again is refused, not saved
		}
		again, err := loadState(m, "s.lanes")
		if err != nil || len(again) != len(saved) {
			t.Fatalf("the state changed on a round trip: %d → %d lanes, %v", len(saved), len(again), err)
		}
		for id, l := range saved {
			if a := again[id]; a == nil || a.cursor.Position() != l.cursor.Position() || a.nonce != l.nonce || a.retired != l.retired {
				t.Fatalf("lane %s changed on a round trip", id)
			}
		}
	})
}
