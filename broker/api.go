package broker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ecoupons/ecoupons/blindfund"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// MaxBody bounds a request body of the API.
const MaxBody = 8 << 20

// API serves the broker's HTTP+JSON interface under /v1/. Every call but
// GET /v1/broker, GET /v1/revocations and GET /v1/vendor is signed by the
// caller's key for this broker (SignRequest); a key the broker does not
// know (Broker.KnownKey) may only register (POST /v1/users, POST
// /v1/vendors). Admins (/v1/admin/…) may top up accounts, set credit
// limits, approve accounts, register vendors for their keys, list
// accounts, vendors and thefts, and read any account's statement.
type API struct {
	Broker *Broker
	// Admins are the keys allowed to call /v1/admin/…
	Admins []spki.KeyHash
	// UserCertValidity is how long user certificates are valid. Default 1 year.
	UserCertValidity time.Duration
}

type apiError struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// fail maps an error to its status and reason code.
func fail(w http.ResponseWriter, err error) {
	type m struct {
		err    error
		status int
		code   string
	}
	for _, x := range []m{
		{ErrUnsigned, 401, coupons.CodeUnsigned}, {ErrBadAuth, 401, coupons.CodeBadSignature}, {ErrReplayed, 401, coupons.CodeReplayed},
		{ErrWrongBroker, 401, coupons.CodeWrongBroker}, {ErrUnknownKey, 401, coupons.CodeUnknownKey}, {ErrRevocationRate, 429, coupons.CodeRevocationRate},
		{ErrInsufficientFunds, 402, coupons.CodeInsufficientFunds}, {ErrNotApproved, 403, coupons.CodeNotApproved}, {ErrVendorTaken, 409, coupons.CodeVendorTaken},
		{ErrNoDenomination, 404, coupons.CodeUnknownDenomination}, {ErrIssueReplay, 409, coupons.CodeIssueIdReused},
		{blindfund.ErrUnknownDenomination, 404, coupons.CodeUnknownDenomination}, {blindfund.ErrWrongDenomination, 402, coupons.CodeWrongDenomination},
		{blindfund.ErrKeyExpired, 402, coupons.CodeDenominationExpired}, {ErrBlindFunding, 402, coupons.CodeBadBlindSignature},
		{ErrRefunded, 409, coupons.CodeAlreadyRefunded}, {ErrNotExpired, 403, coupons.CodeNotExpired},
		{ErrUnknownUser, 404, coupons.CodeUnknownUser}, {ErrUnknownVendor, 404, coupons.CodeUnknownVendor}, {ErrUnknownBook, 404, coupons.CodeUnknownBook},
		{ErrNoAccount, 404, coupons.CodeUnknownAccount}, {ErrCurrency, 400, coupons.CodeCurrencyMismatch}, {ErrAmount, 400, coupons.CodeBadAmount},
		{coupons.ErrBadAmount, 400, coupons.CodeBadAmount}, {ErrBookRefused, 400, coupons.CodeBookRefused}, {ErrRedemption, 400, coupons.CodeRedemptionRefused},
		{ErrRevocation, 403, coupons.CodeRevocationRefused}, {errForbidden, 403, coupons.CodeForbidden}, {errBadRequest, 400, coupons.CodeBadRequest},
		{spki.ErrSyntax, 400, coupons.CodeBadSexp}, {spki.ErrTruncated, 400, coupons.CodeBadSexp}, {spki.ErrTooLarge, 400, coupons.CodeBadSexp},
		{spki.ErrTrailing, 400, coupons.CodeBadSexp}, {spki.ErrTooDeep, 400, coupons.CodeBadSexp}, {spki.ErrAtomTooLarge, 400, coupons.CodeBadSexp},
		{spki.ErrBadKey, 400, coupons.CodeBadKey}, {spki.ErrUnsupportedKey, 400, coupons.CodeBadKey}, {spki.ErrBadHash, 400, coupons.CodeBadKey},
		{spki.ErrUnsupported, 400, coupons.CodeUnsupported},
		{coupons.ErrBadBook, 400, coupons.CodeBadBook}, {spki.ErrBadCert, 400, coupons.CodeBadCertificate},
		{ErrGrantRefused, 400, coupons.CodeGrantRefused}, {ErrLaneReserved, 409, coupons.CodeLaneReserved}, {ErrBookExpired, 403, coupons.CodeBookExpired}, {ErrRevokedAtBroker, 403, coupons.CodeRevoked},
		{ErrBookClosed, 403, coupons.CodeBookClosed}, {ErrNotYourBook, 403, coupons.CodeNotYourBook}, {coupons.ErrLaneOutOfRange, 400, coupons.CodeLaneOutOfRange},
	} {
		if errors.Is(err, x.err) {
			writeJSON(w, x.status, apiError{x.code, err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusInternalServerError, apiError{coupons.CodeInternal, "the broker could not complete the request; nothing was changed"})
}

var (
	errForbidden  = errors.New("broker: forbidden")
	errBadRequest = errors.New("broker: bad request")
)

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errBadRequest}, args...)...)
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if strings.HasPrefix(r.URL.Path, OfficePath) {
		a.serveOffice(w, r)
		return
	}
	route := r.Method + " " + r.URL.Path
	switch route {
	case "GET /v1/broker":
		w.Header().Set("Content-Type", "application/x-spki-sexp")
		w.Write(spki.Advanced(a.Broker.PublicKey().Sexp()))
		return
	case "GET /v1/vendor":
		// Public: the broker's certificate for a vendor's key.
		name := r.URL.Query().Get("name")
		if name == "" || len(name) > 253 {
			fail(w, badRequest("vendor name"))
			return
		}
		cert, err := a.Broker.VendorCertificate(ctx, name)
		if err != nil {
			fail(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/x-spki-sexp")
		w.Write(spki.Transport(cert.Sexp()))
		return
	case "GET /v1/denominations":
		// Public: the denominations of anonymous books, each with the
		// broker's certificate on its ID.
		ds, err := a.Broker.Denominations(ctx, a.Broker.Now())
		if err != nil {
			fail(w, err)
			return
		}
		out := []blindfund.Published{}
		for _, d := range ds {
			id := d.ID()
			out = append(out, blindfund.Published{ID: base64.RawURLEncoding.EncodeToString(id[:]), Face: coupons.FormatAmount(d.Face),
				Currency: d.Currency, Denomination: string(spki.Transport(d.Sexp())), Certificate: string(spki.Transport(d.Cert.Sexp()))})
		}
		writeJSON(w, http.StatusOK, map[string]any{"denominations": out})
		return
	case "GET /v1/revocations":
		doc, err := a.Broker.RevocationList(ctx)
		if err != nil {
			fail(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/x-spki-sexp")
		w.Write(doc)
		return
	}
	handlers := map[string]func(context.Context, *spki.PublicKey, []byte) (int, any, error){
		"POST /v1/users":               a.postUser,
		"POST /v1/vendors":             a.postVendor,
		"POST /v1/books":               a.postBook,
		"POST /v1/anonymous":           a.postAnonymous,
		"POST /v1/anonymous/books":     a.postAnonymousBook,
		"POST /v1/anonymous/refund":    a.postAnonymousRefund,
		"POST /v1/anonymous/revoke":    a.postAnonymousRevoke,
		"POST /v1/anonymous/thefts":    a.postAnonymousThefts,
		"POST /v1/admin/denominations": a.postDenomination,
		"POST /v1/redeem":              a.postRedeem,
		"POST /v1/lanes":               a.postLanes,
		"POST /v1/grants":              a.postGrant,
		"GET /v1/thefts":               a.getThefts,
		"GET /v1/balance":              a.getBalance,
		"GET /v1/statements":           nil, // handled below: it needs the query
		"POST /v1/revoke":              a.postRevoke,
		"POST /v1/admin/topup":         a.postTopUp,
		"POST /v1/admin/credit":        a.postCredit,
		"POST /v1/admin/approve":       a.postApprove,
		"GET /v1/admin/accounts": func(ctx context.Context, caller *spki.PublicKey, _ []byte) (int, any, error) {
			return a.getAdminAccounts(ctx, caller, r.URL.Query())
		},
		"GET /v1/admin/vendors":  a.getAdminVendors,
		"POST /v1/admin/vendors": a.postAdminVendor,
		"GET /v1/admin/thefts":   a.getAdminThefts,
	}
	h, ok := handlers[route]
	if route == "GET /v1/statements" {
		h = func(ctx context.Context, caller *spki.PublicKey, _ []byte) (int, any, error) {
			return a.getStatement(ctx, w, r, caller)
		}
	}
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{coupons.CodeNotFound, "no such endpoint: " + route})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{coupons.CodeTooLarge, fmt.Sprintf("body over %d bytes", MaxBody)})
		return
	}
	call, err := a.Broker.checkSignature(r.Header.Get(HeaderSignature), r.Method, r.URL.RequestURI(), body)
	if err != nil {
		fail(w, err)
		return
	}
	caller := call.key
	known := a.isAdmin(caller)
	if !known {
		if known, err = a.Broker.KnownKey(ctx, caller.Hash()); err != nil {
			fail(w, err)
			return
		}
	}
	// An anonymous book's owner key is known to no one: it refunds its
	// book, and revokes its grants, as it would register (each call
	// proves the key owns a funded book).
	registering := route == "POST /v1/users" || route == "POST /v1/vendors" || route == "POST /v1/anonymous/refund" || route == "POST /v1/anonymous/revoke" ||
		route == "POST /v1/anonymous/thefts"
	switch {
	case known:
		err = a.Broker.useNonce(ctx, call)
	case !registering:
		err = fmt.Errorf("%w: %s (register first: POST /v1/users or POST /v1/vendors)", ErrUnknownKey, caller.Hash())
	}
	if err != nil {
		fail(w, err)
		return
	}
	status, out, err := h(ctx, caller, body)
	if err == nil && !known {
		// A key registering itself: its nonce is recorded once it is
		// known, so that a refused registration from a fresh key leaves
		// nothing behind (replaying it before would register the same
		// key the same way: registrations are idempotent).
		if err = a.Broker.useNonce(ctx, call); errors.Is(err, ErrReplayed) {
			err = nil // the same request, at once: it was answered the same
		}
	}
	if err != nil {
		fail(w, err)
		return
	}
	if status == 0 {
		return // the handler wrote its own answer (CSV)
	}
	writeJSON(w, status, out)
}

func decode(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("JSON: %v", err)
	}
	return nil
}

func (a *API) isAdmin(k *spki.PublicKey) bool {
	for _, h := range a.Admins {
		if h == k.Hash() {
			return true
		}
	}
	return false
}

func (a *API) postUser(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	var in struct {
		Currency string `json:"currency"`
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	validity := a.UserCertValidity
	if validity == 0 {
		validity = 365 * 24 * time.Hour
	}
	acct, cert, err := a.Broker.RegisterUser(ctx, caller, in.Currency, 0, a.Broker.Now().Add(validity))
	if err != nil {
		return 0, nil, err
	}
	approved, err := a.Broker.Approved(ctx, acct)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"account": acct, "certificate": string(spki.Transport(cert.Sexp())), "approved": approved}, nil
}

func (a *API) postVendor(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	var in struct {
		Name     string `json:"name"`
		Currency string `json:"currency"`
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	if in.Name == "" || len(in.Name) > 253 {
		return 0, nil, badRequest("vendor name")
	}
	cert, err := a.Broker.RegisterVendor(ctx, in.Name, caller, in.Currency)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]string{"account": "vendor:" + in.Name + ":" + in.Currency, "certificate": string(spki.Transport(cert.Sexp()))}, nil
}

func (a *API) postBook(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	x, err := spki.Parse(body)
	if err != nil {
		return 0, nil, err
	}
	sb, err := coupons.ParseSignedBook(x)
	if err != nil {
		return 0, nil, err
	}
	cert, err := a.Broker.RegisterBook(ctx, caller.Hash(), sb)
	if err != nil {
		return 0, nil, err
	}
	id := sb.Book.ID()
	fv, _ := sb.Book.FaceValue()
	return http.StatusCreated, map[string]string{"book": base64.RawURLEncoding.EncodeToString(id[:]), "held": coupons.FormatAmount(fv), "currency": sb.Book.Currency,
		"certificate": string(spki.Transport(cert.Sexp()))}, nil
}

func b64(dst []byte, s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != len(dst) {
		return false
	}
	copy(dst, b)
	return true
}

func (a *API) postRedeem(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	var in struct {
		Items []RedeemItem `json:"items"`
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	batch := make([]Redemption, len(in.Items))
	for k, it := range in.Items {
		id, err := coupons.ParseLaneID(it.Lane)
		if err != nil {
			return 0, nil, badRequest("item %d: %v", k, err)
		}
		batch[k] = Redemption{Lane: id, Index: it.Index}
		if !b64(batch[k].Value[:], it.Value) {
			return 0, nil, badRequest("item %d: w is not 32 bytes of base64url", k)
		}
		if it.Anchor != "" {
			var v coupons.Value
			if !b64(v[:], it.Anchor) {
				return 0, nil, badRequest("item %d: anchor is not 32 bytes of base64url", k)
			}
			batch[k].Anchor = &v
		}
		if len(it.Proof) > 24 {
			return 0, nil, badRequest("item %d: proof too long", k)
		}
		for _, p := range it.Proof {
			var h [32]byte
			if !b64(h[:], p) {
				return 0, nil, badRequest("item %d: proof hashes are 32 bytes of base64url", k)
			}
			batch[k].Proof = append(batch[k].Proof, h)
		}
		if th := it.Theft; th != nil {
			e := &coupons.Theft{Index: th.Index}
			if !b64(e.Digest[:], th.Digest) || !b64(e.MAC[:], th.MAC) || !b64(e.Next[:], th.Next) {
				return 0, nil, badRequest("item %d: theft evidence: digest and next are 32 bytes, mac 16 bytes, of base64url", k)
			}
			batch[k].Theft = e
		}
	}
	res, err := a.Broker.Redeem(ctx, caller.Hash(), batch)
	if err != nil {
		return 0, nil, err
	}
	out := make([]RedeemOutcome, len(res))
	for k, r := range res {
		out[k] = RedeemOutcome{Lane: r.Lane.String(), Coupons: r.Coupons, Amount: coupons.FormatAmount(r.Amount), Fee: coupons.FormatAmount(r.Fee)}
		if r.Err != nil {
			out[k].Error, out[k].Code = r.Err.Error(), r.Code
		}
		out[k].Theft = r.Theft
	}
	return http.StatusOK, map[string]any{"results": out}, nil
}

func (a *API) getBalance(ctx context.Context, caller *spki.PublicKey, _ []byte) (int, any, error) {
	rows, err := a.Broker.DB.db.QueryContext(ctx, `SELECT a.id, a.currency, a.balance, a.floor FROM accounts a
		WHERE a.id IN (SELECT account FROM users WHERE key_hash = $1 UNION SELECT account FROM vendors WHERE key_hash = $1)`, hexKey(caller.Hash()))
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	type bal struct {
		Account   string `json:"account"`
		Currency  string `json:"currency"`
		Balance   string `json:"balance"`
		Available string `json:"available"`
	}
	var out []bal
	for rows.Next() {
		var id, cur string
		var b, floor int64
		if err := rows.Scan(&id, &cur, &b, &floor); err != nil {
			return 0, nil, err
		}
		out = append(out, bal{id, cur, coupons.FormatAmount(b), coupons.FormatAmount(b - floor)})
	}
	if len(out) == 0 {
		return 0, nil, fmt.Errorf("%w: no account for this key", ErrUnknownUser)
	}
	return http.StatusOK, map[string]any{"accounts": out}, rows.Err()
}

// parseSignedCert parses a signed certificate in any S-expression form.
func parseSignedCert(doc string) (*spki.SignedCert, error) {
	x, err := spki.Parse([]byte(doc))
	if err != nil {
		return nil, err
	}
	return spki.ParseSignedCert(x)
}

func (a *API) postRevoke(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	var in struct {
		Certificate string `json:"certificate"` // the signed certificate, any S-expression form
		Key         bool   `json:"key"`         // a lost device: see Broker.Revoke
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	sc, err := parseSignedCert(in.Certificate)
	if err != nil {
		return 0, nil, err
	}
	if err := a.Broker.Revoke(ctx, caller.Hash(), sc, in.Key); err != nil {
		return 0, nil, err
	}
	h := sc.Cert.Hash()
	return http.StatusOK, map[string]any{"revoked": base64.RawURLEncoding.EncodeToString(h[:]), "key": in.Key}, nil
}

func (a *API) postTopUp(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	if err := a.adminOnly(caller); err != nil {
		return 0, nil, err
	}
	var in struct {
		Account string `json:"account"`
		Amount  string `json:"amount"`
		ID      string `json:"id"` // idempotency key of the payment that funds it
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	amt, err := coupons.ParseAmount(in.Amount)
	if err != nil {
		return 0, nil, err
	}
	if in.ID == "" {
		return 0, nil, badRequest("id (idempotency key) is required")
	}
	if err := a.Broker.TopUp(ctx, in.Account, amt, in.ID); err != nil {
		return 0, nil, err
	}
	acct, err := a.Broker.DB.Account(ctx, in.Account)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]string{"account": in.Account, "balance": coupons.FormatAmount(acct.Balance), "currency": acct.Currency}, nil
}

func (a *API) postCredit(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	if err := a.adminOnly(caller); err != nil {
		return 0, nil, err
	}
	var in struct {
		Account string `json:"account"`
		Limit   string `json:"limit"`
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	limit, err := coupons.ParseAmount(in.Limit)
	if err != nil {
		return 0, nil, err
	}
	if err := a.Broker.SetCreditLimit(ctx, in.Account, limit); err != nil {
		return 0, nil, err
	}
	acct, err := a.Broker.DB.Account(ctx, in.Account)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]string{"account": in.Account, "limit": coupons.FormatAmount(limit), "currency": acct.Currency,
		"balance": coupons.FormatAmount(acct.Balance)}, nil
}

// getStatement answers GET /v1/statements?account=A&from=YYYY-MM-DD&to=YYYY-MM-DD[&format=csv]
// for an account of the caller (any account for an admin).
func (a *API) getStatement(ctx context.Context, w http.ResponseWriter, r *http.Request, caller *spki.PublicKey) (int, any, error) {
	return a.statement(ctx, w, r.URL.Query(), caller.Hash(), a.isAdmin(caller), false)
}

// statement answers a statement query q (account, from, to, format json
// or csv) for the key key (admin: any account). With attach, the answer
// is a file to save (Content-Disposition), for the back office's
// downloads.
func (a *API) statement(ctx context.Context, w http.ResponseWriter, q url.Values, key spki.KeyHash, admin, attach bool) (int, any, error) {
	account := q.Get("account")
	var n int
	if err := a.Broker.DB.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT account FROM users WHERE key_hash = $1 AND account = $2
		UNION SELECT account FROM vendors WHERE key_hash = $1 AND account = $2) AS t`, hexKey(key), account).Scan(&n); err != nil {
		return 0, nil, err
	}
	if n == 0 && !admin {
		return 0, nil, fmt.Errorf("%w: %s is not an account of this key", errForbidden, account)
	}
	from, err1 := time.Parse("2006-01-02", q.Get("from"))
	to, err2 := time.Parse("2006-01-02", q.Get("to"))
	if err1 != nil || err2 != nil {
		return 0, nil, badRequest("from and to are dates, YYYY-MM-DD (to exclusive)")
	}
	if !to.After(from) || to.Sub(from) > 3660*24*time.Hour {
		return 0, nil, badRequest("to must be after from, at most ten years later")
	}
	st, err := a.Broker.Statement(ctx, account, from, to)
	if err != nil {
		return 0, nil, err
	}
	format := q.Get("format")
	if attach {
		ext := format
		if ext == "" {
			ext = "json"
		}
		name := strings.NewReplacer(":", "-", "/", "-").Replace(fmt.Sprintf("statement-%s-%s-%s.%s", account, st.From.Format("2006-01-02"), st.To.Format("2006-01-02"), ext))
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	}
	switch format {
	case "csv":
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		cw := csv.NewWriter(w)
		cw.Write([]string{"day", "kind", "transactions", "amount", "currency"})
		cw.Write([]string{st.From.Format("2006-01-02"), "opening", "", coupons.FormatAmount(st.Opening), st.Currency})
		for _, row := range st.Rows {
			cw.Write([]string{row.Day.Format("2006-01-02"), row.Kind, strconv.FormatInt(row.Transactions, 10), coupons.FormatAmount(row.Amount), st.Currency})
		}
		cw.Write([]string{st.To.Format("2006-01-02"), "closing", "", coupons.FormatAmount(st.Closing), st.Currency})
		cw.Flush()
		return 0, nil, cw.Error()
	case "", "json":
	default:
		return 0, nil, badRequest("format is json or csv")
	}
	type row struct {
		Day          string `json:"day"`
		Kind         string `json:"kind"`
		Transactions int64  `json:"transactions"`
		Amount       string `json:"amount"`
	}
	rows := []row{}
	for _, r := range st.Rows {
		rows = append(rows, row{r.Day.Format("2006-01-02"), r.Kind, r.Transactions, coupons.FormatAmount(r.Amount)})
	}
	return http.StatusOK, map[string]any{"account": st.Account, "currency": st.Currency, "from": st.From.Format("2006-01-02"),
		"to": st.To.Format("2006-01-02"), "opening": coupons.FormatAmount(st.Opening), "closing": coupons.FormatAmount(st.Closing), "rows": rows}, nil
}

// getThefts lists the thefts recorded on the caller's books.
func (a *API) getThefts(ctx context.Context, caller *spki.PublicKey, _ []byte) (int, any, error) {
	ts, err := a.Broker.Thefts(ctx, caller.Hash())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, theftsJSON(ts), nil
}

// theftsJSON is the answer of GET /v1/thefts: {"thefts": [{"lane", "i",
// "digest", "vendor", "reported"}]}.
func theftsJSON(ts []Theft) map[string]any {
	type theft struct {
		Lane     string `json:"lane"`
		Index    uint32 `json:"i"`
		Digest   string `json:"digest"`
		Vendor   string `json:"vendor"`
		Reported int64  `json:"reported"`
	}
	out := []theft{}
	for _, t := range ts {
		out = append(out, theft{t.Lane.String(), t.Index, base64.RawURLEncoding.EncodeToString(t.Digest[:]), t.Vendor, t.Reported})
	}
	return map[string]any{"thefts": out}
}

func (a *API) postApprove(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	if err := a.adminOnly(caller); err != nil {
		return 0, nil, err
	}
	var in struct {
		Account string `json:"account"`
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	if err := a.Broker.Approve(ctx, in.Account); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"account": in.Account, "approved": true}, nil
}
