// Package stack runs a whole ecoupons deployment in one process — a broker
// and a site behind the gate, in one Caddy — and drives the broker's API:
// the demo and the examples are built on it.
package stack

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard" // file_server and friends
	"github.com/ecoupons/ecoupons/broker"
	_ "github.com/ecoupons/ecoupons/caddymodule"              // the gate
	_ "github.com/ecoupons/ecoupons/caddymodule/brokermodule" // the broker handler
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
	"go.step.sm/crypto/pemutil"
)

// Vendor is the vendor name of the stack's site.
const Vendor = "news.example"

// Route prices a path pattern of the site (Caddy path matcher syntax).
type Route struct {
	Path  string
	Price int
	// Upstream, when set, is the host:port the route's requests are
	// proxied to (reverse_proxy, flushing at once) instead of the site's
	// files.
	Upstream string
	// Meter, when set, is the gate's meter option (JSON: by, per, window,
	// hold): the route is metered, Price per unit.
	Meter map[string]any
}

// Stack is a running broker and gated site.
type Stack struct {
	Dir, Site, Broker              string // data directory, site and broker addresses (host:port)
	BrokerKey, AdminKey, VendorKey crypto.Signer
	BrokerPub                      *spki.PublicKey
	SiteRoot                       string
}

// NewKey returns a fresh Ed25519 key.
func NewKey() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func writePEM(path string, k crypto.Signer) error {
	block, err := pemutil.Serialize(k)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(block), 0o600)
}

func writePub(path string, k crypto.Signer) (*spki.PublicKey, error) {
	p, err := spki.NewPublicKey(k.Public())
	if err != nil {
		return nil, err
	}
	return p, os.WriteFile(path, spki.Advanced(p.Sexp()), 0o644)
}

// Start creates keys in dir, writes files (name → content) under the site
// root, and loads a Caddy config serving the broker at brokerAddr and the
// site at siteAddr, gating routes (bolt store, redemption every 2 s,
// revocation lists fetched every second). Caddy's data and config
// directories are moved into dir.
func Start(dir, siteAddr, brokerAddr string, files map[string]string, routes []Route) (*Stack, error) {
	os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	s := &Stack{Dir: dir, Site: siteAddr, Broker: brokerAddr, BrokerKey: NewKey(), AdminKey: NewKey(), VendorKey: NewKey(),
		SiteRoot: filepath.Join(dir, "site")}
	// admin.pem too: the operator's commands (ecoupons broker account …)
	// sign with it.
	for name, k := range map[string]crypto.Signer{"broker": s.BrokerKey, "vendor": s.VendorKey, "admin": s.AdminKey} {
		if err := writePEM(filepath.Join(dir, name+".pem"), k); err != nil {
			return nil, err
		}
	}
	var err error
	if s.BrokerPub, err = writePub(filepath.Join(dir, "broker.pub"), s.BrokerKey); err != nil {
		return nil, err
	}
	if _, err := writePub(filepath.Join(dir, "admin.pub"), s.AdminKey); err != nil {
		return nil, err
	}
	for name, body := range files {
		p := filepath.Join(s.SiteRoot, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	gate := func(r Route) map[string]any {
		g := map[string]any{"handler": "ecoupon", "vendor": Vendor, "broker": "http://" + brokerAddr,
			"broker_keys": []string{filepath.Join(dir, "broker.pub")},
			"vendor_key":  filepath.Join(dir, "vendor.pem"), "redeem_every": "2s",
			"revocations": []string{"http://" + brokerAddr + "/v1/revocations"}, "revocations_every": "1s",
			"secret_file": filepath.Join(dir, "gate.secret"),
			"store":       map[string]any{"backend": "bolt", "path": filepath.Join(dir, "spent.db")}}
		g["price"] = r.Price
		if r.Meter != nil {
			g["meter"] = r.Meter
		}
		return g
	}
	fileServer := map[string]any{"handler": "file_server", "root": s.SiteRoot}
	var siteRoutes []any
	for k, r := range routes {
		match := []any{map[string]any{"path": []string{r.Path}}}
		if k == 0 { // the gate's own endpoints (receipt commitments, lane opens)
			match = append(match, map[string]any{"path": []string{"/.well-known/ecoupons/*"}})
		}
		next := fileServer
		if r.Upstream != "" {
			next = map[string]any{"handler": "reverse_proxy", "flush_interval": -1, "upstreams": []any{map[string]any{"dial": r.Upstream}}}
		}
		siteRoutes = append(siteRoutes, map[string]any{"match": match,
			"handle": []any{gate(r), next}, "terminal": true})
	}
	siteRoutes = append(siteRoutes, map[string]any{"handle": []any{fileServer}})
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{
			"broker": map[string]any{"listen": []string{brokerAddr}, "automatic_https": map[string]any{"disable": true},
				"routes": []any{map[string]any{"handle": []any{map[string]any{"handler": "ecoupon_broker",
					"key_file": filepath.Join(dir, "broker.pem"), "database": filepath.Join(dir, "broker.db"),
					"admin_keys": []string{filepath.Join(dir, "admin.pub")}}}}}},
			"site": map[string]any{"listen": []string{siteAddr}, "automatic_https": map[string]any{"disable": true}, "routes": siteRoutes},
		}}},
	}
	raw, _ := json.Marshal(cfg)
	if err := caddy.Load(raw, true); err != nil {
		return nil, fmt.Errorf("starting Caddy: %w", err)
	}
	return s, nil
}

// Stop stops Caddy.
func (s *Stack) Stop() { caddy.Stop() }

// Call sends a request signed by key to the broker's API and decodes a
// JSON answer into out (when not nil).
func (s *Stack) Call(key crypto.Signer, method, path string, body []byte, out any) error {
	req, err := http.NewRequest(method, "http://"+s.Broker+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if err := broker.SignRequest(req, body, key, s.BrokerPub.Hash(), time.Now()); err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// CallJSON is Call with a JSON body.
func (s *Stack) CallJSON(key crypto.Signer, method, path string, in, out any) error {
	b, _ := json.Marshal(in)
	return s.Call(key, method, path, b, out)
}

// NewUser registers key as a user and funds its account with amount EUR
// (a decimal). It returns the account and the user certificate.
func (s *Stack) NewUser(key crypto.Signer, amount string) (string, *spki.SignedCert, error) {
	var user struct{ Account, Certificate string }
	if err := s.CallJSON(key, "POST", "/v1/users", map[string]string{"currency": "EUR"}, &user); err != nil {
		return "", nil, err
	}
	if err := s.CallJSON(s.AdminKey, "POST", "/v1/admin/topup", map[string]string{"account": user.Account, "amount": amount, "id": "topup-" + user.Account}, nil); err != nil {
		return "", nil, err
	}
	x, err := spki.Parse([]byte(user.Certificate))
	if err != nil {
		return "", nil, err
	}
	cert, err := spki.ParseSignedCert(x)
	return user.Account, cert, err
}

// RegisterVendor registers the site's vendor name for the vendor key.
func (s *Stack) RegisterVendor() error {
	return s.CallJSON(s.VendorKey, "POST", "/v1/vendors", map[string]string{"name": Vendor, "currency": "EUR"}, nil)
}

// Book is a book made by NewBook, with what its owner keeps.
type Book struct {
	Signed  *coupons.SignedBook
	Secrets *coupons.Secrets
	Anchors []coupons.Value
	Held    string           // the face value the broker holds
	Funding *spki.SignedCert // the broker's book certificate
}

// MakeBook creates a book of lanes × length coupons of 0.001 EUR at the
// site's vendor, signed by owner, and has the broker hold its face value.
func (s *Stack) MakeBook(owner crypto.Signer, lanes, length uint32) (*Book, error) {
	op, err := spki.NewPublicKey(owner.Public())
	if err != nil {
		return nil, err
	}
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: Vendor, Broker: s.BrokerPub.Hash(), Owner: op.Hash(),
		Lanes: lanes, Length: length, Currency: "EUR", Unit: coupons.NanosPerUnit / 1000, NotAfter: time.Now().Add(30 * 24 * time.Hour)}, nil)
	if err != nil {
		return nil, err
	}
	sb, err := bk.Sign(owner)
	if err != nil {
		return nil, err
	}
	var held struct{ Held, Certificate string }
	if err := s.Call(owner, "POST", "/v1/books", spki.Transport(sb.Sexp()), &held); err != nil {
		return nil, err
	}
	x, err := spki.Parse([]byte(held.Certificate))
	if err != nil {
		return nil, fmt.Errorf("book certificate: %w", err)
	}
	fc, err := spki.ParseSignedCert(x)
	if err != nil {
		return nil, fmt.Errorf("book certificate: %w", err)
	}
	return &Book{Signed: sb, Secrets: sec, Anchors: anchors, Held: held.Held, Funding: fc}, nil
}

// NewBook is MakeBook returning the owner's holder of the book.
func (s *Stack) NewBook(owner crypto.Signer, user *spki.SignedCert, lanes, length uint32) (*delegation.Holder, string, error) {
	b, err := s.MakeBook(owner, lanes, length)
	if err != nil {
		return nil, "", err
	}
	h, err := delegation.NewOwner(b.Signed, user, b.Secrets, b.Anchors, owner)
	if err != nil {
		return nil, "", err
	}
	h.Funding = b.Funding
	return h, b.Held, nil
}

// VendorBalance returns the vendor's balance at the broker (a decimal).
func (s *Stack) VendorBalance() (string, error) {
	var bal struct {
		Accounts []struct{ Balance string } `json:"accounts"`
	}
	if err := s.Call(s.VendorKey, "GET", "/v1/balance", nil, &bal); err != nil {
		return "", err
	}
	if len(bal.Accounts) != 1 {
		return "", errors.New("the vendor has no account")
	}
	return bal.Accounts[0].Balance, nil
}

// WaitPaid waits until the vendor's balance is want (the gate redeems every
// 2 s), for at most timeout.
func (s *Stack) WaitPaid(want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got, err := s.VendorBalance()
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the broker has paid the vendor %s EUR, not %s, after %s", got, want, timeout)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Revoke has owner revoke a certificate at the broker, checks that the
// broker's signed list names it, and waits until the gate (which polls
// every second) has had time to fetch it.
func (s *Stack) Revoke(owner crypto.Signer, cert *spki.SignedCert) error {
	if err := s.CallJSON(owner, "POST", "/v1/revoke", map[string]any{"certificate": string(spki.Transport(cert.Sexp()))}, nil); err != nil {
		return err
	}
	resp, err := http.Get("http://" + s.Broker + "/v1/revocations")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	x, err := spki.Parse(b)
	if err != nil {
		return err
	}
	list, err := delegation.ParseRevocations(x, s.BrokerPub)
	if err != nil {
		return err
	}
	if !list.CertRevoked(cert.Cert.Hash()) {
		return errors.New("the broker's revocation list does not name the revoked certificate")
	}
	time.Sleep(2500 * time.Millisecond)
	return nil
}

// Get fetches path from the site with client and checks the status.
func (s *Stack) Get(c *http.Client, path string, want int) (string, error) {
	resp, err := c.Get("http://" + s.Site + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return string(b), fmt.Errorf("GET %s: %d, want %d: %s", path, resp.StatusCode, want, bytes.TrimSpace(b))
	}
	return string(b), nil
}
