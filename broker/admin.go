package broker

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// UserAccountInfo is a user account as the broker's administrator sees it.
type UserAccountInfo struct {
	Account  string // user:<key>:<currency>
	Key      string // the owner's key hash, hex
	Currency string
	Balance  int64 // nanos; negative on credit
	Limit    int64 // credit limit in nanos (0: pre-paid)
	Approved bool
	Created  int64 // Unix seconds
}

// AccountFilter selects user accounts (Broker.Accounts); zero fields
// select all.
type AccountFilter struct {
	Key      spki.KeyHash // the owner's key
	Account  string       // one account
	Currency string
	Limit    int // the most accounts listed; 0: all
}

// Accounts lists the user accounts f selects, by key then currency.
func (b *Broker) Accounts(ctx context.Context, f AccountFilter) ([]UserAccountInfo, error) {
	q := `SELECT u.account, u.key_hash, u.currency, a.balance, a.floor, u.approved, u.created FROM users u JOIN accounts a ON a.id = u.account WHERE 1 = 1`
	var args []any
	add := func(cond, v string) {
		args = append(args, v)
		q += fmt.Sprintf(" AND %s = $%d", cond, len(args))
	}
	if f.Key != (spki.KeyHash{}) {
		add("u.key_hash", hexKey(f.Key))
	}
	if f.Account != "" {
		add("u.account", f.Account)
	}
	if f.Currency != "" {
		add("u.currency", f.Currency)
	}
	q += " ORDER BY u.key_hash, u.currency"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := b.DB.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []UserAccountInfo
	for rows.Next() {
		var u UserAccountInfo
		var floor, approved int64
		if err := rows.Scan(&u.Account, &u.Key, &u.Currency, &u.Balance, &floor, &approved, &u.Created); err != nil {
			return nil, err
		}
		u.Limit, u.Approved = -floor, approved != 0
		out = append(out, u)
	}
	return out, rows.Err()
}

// VendorInfo is a registered vendor.
type VendorInfo struct {
	Name     string
	Key      string // the vendor key's hash, hex
	Account  string // vendor:<name>:<currency>
	Currency string // fixed at registration
	Balance  int64  // nanos earned and not paid out
}

// Vendors lists the registered vendors by name.
func (b *Broker) Vendors(ctx context.Context) ([]VendorInfo, error) {
	rows, err := b.DB.db.QueryContext(ctx, `SELECT v.name, v.key_hash, v.account, v.currency, a.balance FROM vendors v JOIN accounts a ON a.id = v.account ORDER BY v.name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []VendorInfo
	for rows.Next() {
		var v VendorInfo
		if err := rows.Scan(&v.Name, &v.Key, &v.Account, &v.Currency, &v.Balance); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// RecordedTheft is a theft with the account of the book's owner.
type RecordedTheft struct {
	Theft
	Account string // the owner's account
}

// AllThefts lists the thefts recorded on every book, newest first, at most
// limit of them.
func (b *Broker) AllThefts(ctx context.Context, limit int) ([]RecordedTheft, error) {
	rows, err := b.DB.db.QueryContext(ctx, `SELECT t.book, t.lane, t.idx, t.digest, t.vendor, t.reported, k.owner FROM thefts t
		JOIN books k ON k.id = t.book ORDER BY t.reported DESC, t.book, t.lane, t.idx LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RecordedTheft
	for rows.Next() {
		var th RecordedTheft
		var bookHex, digestHex string
		var lane, idx int64
		if err := rows.Scan(&bookHex, &lane, &idx, &digestHex, &th.Vendor, &th.Reported, &th.Account); err != nil {
			return nil, err
		}
		hex.Decode(th.Lane.Book[:], []byte(bookHex))
		hex.Decode(th.Digest[:], []byte(digestHex))
		th.Lane.Lane, th.Index = uint32(lane), uint32(idx)
		out = append(out, th)
	}
	return out, rows.Err()
}

// adminOnly refuses a caller that is not an administrator.
func (a *API) adminOnly(caller *spki.PublicKey) error {
	if !a.isAdmin(caller) {
		return fmt.Errorf("%w: admin only (sign with an admin key: the broker's admin_key)", errForbidden)
	}
	return nil
}

// AdminAccount is one account in the answer of GET /v1/admin/accounts.
type AdminAccount struct {
	Account   string `json:"account"`
	Key       string `json:"key"` // hex key hash
	Currency  string `json:"currency"`
	Balance   string `json:"balance"`
	Available string `json:"available"` // balance plus credit limit
	Limit     string `json:"limit"`     // credit limit; "0": pre-paid
	Approved  bool   `json:"approved"`
	Created   int64  `json:"created"`
}

// Bounds of GET /v1/admin/accounts?limit=N.
const (
	defaultAccountsListed = 10000
	maxAccountsListed     = 100000
)

// getAdminAccounts answers GET
// /v1/admin/accounts[?key=HEX][&account=A][&currency=C][&limit=N]: at
// most limit accounts (default 10,000, at most 100,000), and "more": true
// when there are others.
func (a *API) getAdminAccounts(ctx context.Context, caller *spki.PublicKey, q url.Values) (int, any, error) {
	if err := a.adminOnly(caller); err != nil {
		return 0, nil, err
	}
	limit := defaultAccountsListed
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxAccountsListed {
			return 0, nil, badRequest("limit is 1 to %d", maxAccountsListed)
		}
		limit = n
	}
	f := AccountFilter{Account: q.Get("account"), Currency: q.Get("currency"), Limit: limit + 1}
	if k := q.Get("key"); k != "" {
		raw, err := hex.DecodeString(k)
		if err != nil || len(raw) != len(f.Key) {
			return 0, nil, badRequest("key is a key hash: 64 hex digits")
		}
		copy(f.Key[:], raw)
	}
	us, err := a.Broker.Accounts(ctx, f)
	if err != nil {
		return 0, nil, err
	}
	more := len(us) > limit
	if more {
		us = us[:limit]
	}
	out := []AdminAccount{}
	for _, u := range us {
		out = append(out, AdminAccount{u.Account, u.Key, u.Currency, coupons.FormatAmount(u.Balance), coupons.FormatAmount(u.Balance + u.Limit),
			coupons.FormatAmount(u.Limit), u.Approved, u.Created})
	}
	if f.Account != "" && len(out) == 0 {
		return 0, nil, fmt.Errorf("%w: %s", ErrNoAccount, f.Account)
	}
	return http.StatusOK, map[string]any{"accounts": out, "more": more}, nil
}

// AdminVendor is one vendor in the answer of GET /v1/admin/vendors.
type AdminVendor struct {
	Name     string `json:"name"`
	Key      string `json:"key"` // hex key hash
	Account  string `json:"account"`
	Currency string `json:"currency"`
	Balance  string `json:"balance"`
}

func (a *API) getAdminVendors(ctx context.Context, caller *spki.PublicKey, _ []byte) (int, any, error) {
	if err := a.adminOnly(caller); err != nil {
		return 0, nil, err
	}
	vs, err := a.Broker.Vendors(ctx)
	if err != nil {
		return 0, nil, err
	}
	out := []AdminVendor{}
	for _, v := range vs {
		out = append(out, AdminVendor{v.Name, v.Key, v.Account, v.Currency, coupons.FormatAmount(v.Balance)})
	}
	return http.StatusOK, map[string]any{"vendors": out}, nil
}

// postAdminVendor answers POST /v1/admin/vendors {"name", "key", "currency"}:
// the administrator registers a vendor for its public key (any
// S-expression form), as the vendor would with POST /v1/vendors.
func (a *API) postAdminVendor(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	if err := a.adminOnly(caller); err != nil {
		return 0, nil, err
	}
	var in struct {
		Name     string `json:"name"`
		Key      string `json:"key"`
		Currency string `json:"currency"`
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	if in.Name == "" || len(in.Name) > 253 || strings.ContainsAny(in.Name, " \t\r\n/") {
		return 0, nil, badRequest("vendor name: a host name, 1 to 253 characters")
	}
	x, err := spki.Parse([]byte(in.Key))
	if err != nil {
		return 0, nil, err
	}
	k, err := spki.ParsePublicKey(x)
	if err != nil {
		return 0, nil, err
	}
	cert, err := a.Broker.RegisterVendor(ctx, in.Name, k, in.Currency)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]string{"name": in.Name, "account": "vendor:" + in.Name + ":" + in.Currency, "currency": in.Currency,
		"key": hexKey(k.Hash()), "certificate": string(spki.Transport(cert.Sexp()))}, nil
}

// AdminTheft is one theft in the answer of GET /v1/admin/thefts.
type AdminTheft struct {
	Lane     string `json:"lane"`
	Index    uint32 `json:"i"`
	Digest   string `json:"digest"`
	Vendor   string `json:"vendor"`
	Account  string `json:"account"` // the book owner's
	Reported int64  `json:"reported"`
}

func (a *API) getAdminThefts(ctx context.Context, caller *spki.PublicKey, _ []byte) (int, any, error) {
	if err := a.adminOnly(caller); err != nil {
		return 0, nil, err
	}
	ts, err := a.Broker.AllThefts(ctx, 10000)
	if err != nil {
		return 0, nil, err
	}
	out := []AdminTheft{}
	for _, t := range ts {
		out = append(out, AdminTheft{t.Lane.String(), t.Index, base64.RawURLEncoding.EncodeToString(t.Digest[:]), t.Vendor, t.Account, t.Reported})
	}
	return http.StatusOK, map[string]any{"thefts": out}, nil
}
