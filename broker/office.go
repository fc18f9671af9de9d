package broker

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// The back office: web pages served by the broker under /office/ for
// users (balance, books, devices, revocation, thefts) and vendors
// (revenue, redemptions). There are no passwords: a user or vendor signs
// a login link with their key (OfficeLoginURL, `ecoupons wallet office`),
// valid for the replay window and once; opening it starts a session held
// in an HttpOnly, SameSite=Strict cookie for OfficeSession.

// OfficeSession is how long a back-office session lasts.
const OfficeSession = time.Hour

// MaxOfficeSessions is how many back-office sessions one key may hold at
// once: signing in again past it ends the oldest.
const MaxOfficeSessions = 16

const officeCookie = "ecoupons_office"

// ErrGrantRefused means a grant submitted to POST /v1/grants was refused.
var ErrGrantRefused = errors.New("broker: grant refused")

func init() {
	addMigration(7, `CREATE TABLE sessions (
		token_hash TEXT PRIMARY KEY,
		key_hash   TEXT NOT NULL,
		expires    BIGINT NOT NULL
	);
	CREATE TABLE grants (
		hash      TEXT PRIMARY KEY,
		issuer    TEXT NOT NULL,
		subject   TEXT NOT NULL,
		book      TEXT NOT NULL,
		name      TEXT NOT NULL,
		not_after BIGINT NOT NULL,
		created   BIGINT NOT NULL,
		doc       TEXT NOT NULL
	);
	CREATE INDEX grants_issuer ON grants(issuer)`)
}

//go:embed office/*.html
var officeFiles embed.FS

var officeTmpl = template.Must(template.New("").Funcs(template.FuncMap{
	"amount":   coupons.FormatAmount,
	"id":       hexToID,
	"shortid":  func(h string) string { id := hexToID(h); return id[:min(len(id), 11)] },
	"b64":      func(b [32]byte) string { return base64.RawURLEncoding.EncodeToString(b[:]) },
	"date":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04") },
	"day":      func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	"subtract": func(a, b int64) int64 { return a - b },
	"neg":      func(a int64) int64 { return -a },
	"unix":     func(s int64) string { return time.Unix(s, 0).UTC().Format("2006-01-02 15:04") },
}).ParseFS(officeFiles, "office/*.html"))

// RegisterGrant records a delegation certificate its issuer made, so that
// the issuer sees the device in the back office and can revoke it there.
// The certificate must be signed by the caller and name a book the broker
// holds; name labels it. Registering it again changes nothing.
func (b *Broker) RegisterGrant(ctx context.Context, caller spki.KeyHash, sc *spki.SignedCert, name string) error {
	if err := sc.Verify(); err != nil {
		return fmt.Errorf("%w: %w", ErrGrantRefused, err)
	}
	if sc.Cert.Issuer.Hash != caller {
		return fmt.Errorf("%w: the caller did not issue it", ErrGrantRefused)
	}
	book, ok := bookOfTag(sc.Cert.Tag)
	if !ok {
		return fmt.Errorf("%w: its tag names no book", ErrGrantRefused)
	}
	// A label for people: valid UTF-8 without control characters, at most
	// 64 bytes, cut between characters.
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(name, "\uFFFD"))
	for len(name) > 64 {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	h := sc.Cert.Hash()
	return b.tx(ctx, func(tx *sql.Tx) error {
		var bookNA int64
		err := tx.QueryRowContext(ctx, `SELECT not_after FROM books WHERE id = $1`, hex.EncodeToString(book[:])).Scan(&bookNA)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %x…", ErrUnknownBook, book[:6])
		} else if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO grants (hash, issuer, subject, book, name, not_after, created, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (hash) DO NOTHING`, hex.EncodeToString(h[:]), hexKey(caller), hexKey(sc.Cert.Subject.Hash), hex.EncodeToString(book[:]),
			name, sc.Cert.Validity.NotAfter.Unix(), b.Now().Unix(), string(spki.Transport(sc.Sexp()))); err != nil {
			return err
		}
		// A grant to a revoked key: the key stays listed while the grant
		// lasts.
		if na := sc.Cert.Validity.NotAfter; !na.IsZero() && na.Unix() < bookNA {
			bookNA = na.Unix()
		}
		return extendKeyRevocation(ctx, tx, sc.Cert.Subject.Hash, bookNA)
	})
}

func (a *API) postGrant(ctx context.Context, caller *spki.PublicKey, body []byte) (int, any, error) {
	var in struct {
		Certificate string `json:"certificate"`
		Name        string `json:"name"`
	}
	if err := decode(body, &in); err != nil {
		return 0, nil, err
	}
	sc, err := parseSignedCert(in.Certificate)
	if err != nil {
		return 0, nil, err
	}
	if err := a.Broker.RegisterGrant(ctx, caller.Hash(), sc, in.Name); err != nil {
		return 0, nil, err
	}
	h := sc.Cert.Hash()
	return http.StatusCreated, map[string]string{"grant": base64.RawURLEncoding.EncodeToString(h[:])}, nil
}

// serveOffice serves the back-office pages.
func (a *API) serveOffice(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	ctx := r.Context()
	switch r.Method + " " + r.URL.Path {
	case "GET " + OfficePath + "login":
		a.officeLogin(w, r)
	case "GET " + OfficePath:
		key, sess, ok := a.session(ctx, r)
		if !ok {
			a.officePage(w, http.StatusUnauthorized, "login", nil)
			return
		}
		page, err := a.officeData(ctx, key, sess)
		if err != nil {
			a.officeError(w, err)
			return
		}
		page.Notice = officeNotices[r.URL.Query().Get("done")]
		a.officePage(w, http.StatusOK, "home", page)
	case "POST " + OfficePath + "revoke":
		a.officeRevoke(w, r)
	case "GET " + OfficePath + "statement":
		key, _, ok := a.session(ctx, r)
		if !ok {
			a.officePage(w, http.StatusUnauthorized, "login", nil)
			return
		}
		// The session's key, its own accounts only (as GET /v1/statements
		// signed by it): a file to save, CSV or JSON.
		status, body, err := a.statement(ctx, w, r.URL.Query(), key, false, true)
		switch {
		case err != nil:
			w.Header().Del("Content-Disposition")
			a.officeError(w, err)
		case body != nil:
			writeJSON(w, status, body)
		}
	case "POST " + OfficePath + "logout":
		if _, sess, ok := a.session(ctx, r); ok && r.PostFormValue("csrf") == csrfToken(sess) {
			a.Broker.DB.db.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = $1`, tokenHash(sess))
		}
		http.SetCookie(w, &http.Cookie{Name: officeCookie, Value: "", Path: OfficePath, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, OfficePath, http.StatusSeeOther)
	default:
		a.officePage(w, http.StatusNotFound, "error", map[string]string{"Title": "Not found", "Reason": "No such page: " + r.Method + " " + r.URL.Path})
	}
}

func (a *API) officePage(w http.ResponseWriter, status int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	officeTmpl.ExecuteTemplate(w, name, data)
}

func (a *API) officeError(w http.ResponseWriter, err error) {
	rec := &statusRecorder{header: http.Header{}}
	fail(rec, err)
	title := "Refused"
	if rec.status >= 500 {
		title, err = "Error", errors.New("the broker could not complete the request; nothing was changed")
	}
	a.officePage(w, rec.status, "error", map[string]string{"Title": title, "Reason": err.Error()})
}

// statusRecorder captures the status fail would answer.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(status int)      { s.status = status }

func tokenHash(tok string) string { h := sha256.Sum256([]byte(tok)); return hex.EncodeToString(h[:]) }

// csrfToken is the form token of a session: a MAC of a fixed label under
// the session token, so that a page of another site cannot post forms.
func csrfToken(sess string) string {
	m := hmac.New(sha256.New, []byte(sess))
	m.Write([]byte("ecoupons office csrf"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (a *API) officeLogin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	key, err := a.Broker.verifySigned(ctx, r.URL.Query().Get("auth"), http.MethodGet, OfficePath+"login", nil)
	if err != nil {
		a.officeError(w, fmt.Errorf("%w (make a new link with: ecoupons wallet office)", err))
		return
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		a.officeError(w, err)
		return
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	now := a.Broker.Now()
	err = a.Broker.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expires < $1`, now.Unix()); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (token_hash, key_hash, expires) VALUES ($1, $2, $3)`,
			tokenHash(tok), hexKey(key.Hash()), now.Add(OfficeSession).Unix()); err != nil {
			return err
		}
		// A key keeps its newest MaxOfficeSessions sessions, this one
		// included.
		_, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE key_hash = $1 AND token_hash <> $2 AND token_hash NOT IN
			(SELECT token_hash FROM sessions WHERE key_hash = $1 AND token_hash <> $2 ORDER BY expires DESC, token_hash LIMIT $3)`,
			hexKey(key.Hash()), tokenHash(tok), MaxOfficeSessions-1)
		return err
	})
	if err != nil {
		a.officeError(w, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: officeCookie, Value: tok, Path: OfficePath, MaxAge: int(OfficeSession / time.Second),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, OfficePath, http.StatusSeeOther)
}

// session returns the key of a request's valid session and its token.
func (a *API) session(ctx context.Context, r *http.Request) (spki.KeyHash, string, bool) {
	var key spki.KeyHash
	c, err := r.Cookie(officeCookie)
	if err != nil || len(c.Value) != 43 {
		return key, "", false
	}
	var keyHex string
	err = a.Broker.DB.db.QueryRowContext(ctx, `SELECT key_hash FROM sessions WHERE token_hash = $1 AND expires >= $2`,
		tokenHash(c.Value), a.Broker.Now().Unix()).Scan(&keyHex)
	if err != nil {
		return key, "", false
	}
	if raw, err := hex.DecodeString(keyHex); err != nil || len(raw) != len(key) {
		return key, "", false
	} else {
		copy(key[:], raw)
	}
	return key, c.Value, true
}

// officeNotices are the messages a redirect may ask the home page to show
// (by code, so that a link cannot put its own words on the page).
var officeNotices = map[string]string{
	"revoked": "Revoked. Gates refuse new lane opens under it once they fetch the broker's next revocation list (at once in the semi and online modes).",
}

// officeHome is what the home page shows.
type officeHome struct {
	Key      string
	CSRF     string
	Notice   string
	Accounts []Account
	Books    []officeBook
	Devices  []officeDevice
	Thefts   []Theft
	Vendors  []officeVendor
}

type officeBook struct {
	ID, Vendor, Currency  string
	Lanes, Length         int64
	Unit, Face, Redeemed  int64
	Held                  int64 // escrow and reserve left
	NotAfter              time.Time
	Released, Expired     bool
	RedeemedCoupons       int64
	RedeemedLanes, Thefts int64
}

type officeDevice struct {
	Hash, Subject, Name, Book string
	NotAfter, Created         time.Time
	Revoked, KeyRevoked       bool
	Expired                   bool
}

type officeVendor struct {
	Name, Currency string
	Account        Account
	AccountID      string
	Revenue        []StatementRow // redeem rows of the last 30 days
	Chart          template.HTML  // their revenue per day, an SVG bar chart
	From, To       string         // the 30 days, for the statement downloads
	Total30        int64
	Recent         []officeRedemption
	Books, Lanes   int64
	Coupons        int64
}

type officeRedemption struct {
	At     time.Time
	Amount int64
}

func (a *API) officeData(ctx context.Context, key spki.KeyHash, sess string) (*officeHome, error) {
	b := a.Broker
	db := b.DB.db
	now := b.Now()
	p := &officeHome{Key: hexKey(key), CSRF: csrfToken(sess)}
	rows, err := db.QueryContext(ctx, `SELECT account FROM users WHERE key_hash = $1 ORDER BY account`, hexKey(key))
	if err != nil {
		return nil, err
	}
	var accts []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		accts = append(accts, id)
	}
	rows.Close()
	for _, id := range accts {
		acc, err := b.DB.Account(ctx, id)
		if err != nil {
			return nil, err
		}
		p.Accounts = append(p.Accounts, acc)
	}
	if len(accts) > 0 {
		rows, err := db.QueryContext(ctx, `SELECT k.id, k.vendor, a.currency, k.unit, k.lanes, k.length, k.not_after, k.released,
			COALESCE((SELECT SUM(l.redeemed) FROM lanes l WHERE l.book = k.id), 0),
			(SELECT COUNT(*) FROM lanes l WHERE l.book = k.id AND l.redeemed > 0),
			(SELECT COUNT(*) FROM thefts t WHERE t.book = k.id),
			COALESCE((SELECT SUM(x.balance) FROM accounts x WHERE x.id = 'escrow:' || k.id OR x.id = 'reserve:' || k.id), 0)
			FROM books k JOIN users u ON u.account = k.owner JOIN accounts a ON a.id = k.owner
			WHERE u.key_hash = $1 ORDER BY k.not_after DESC, k.id`, hexKey(key))
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var bk officeBook
			var notAfter, released int64
			if err := rows.Scan(&bk.ID, &bk.Vendor, &bk.Currency, &bk.Unit, &bk.Lanes, &bk.Length, &notAfter, &released,
				&bk.RedeemedCoupons, &bk.RedeemedLanes, &bk.Thefts, &bk.Held); err != nil {
				rows.Close()
				return nil, err
			}
			bk.NotAfter, bk.Released, bk.Expired = time.Unix(notAfter, 0), released != 0, now.Unix() > notAfter
			bk.Face, _ = coupons.MulAmount(uint64(bk.Lanes*bk.Length), bk.Unit)
			bk.Redeemed, _ = coupons.MulAmount(uint64(bk.RedeemedCoupons), bk.Unit)
			p.Books = append(p.Books, bk)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	rows, err = db.QueryContext(ctx, `SELECT g.hash, g.subject, g.name, g.book, g.not_after, g.created,
		EXISTS (SELECT 1 FROM revoked r WHERE r.kind = 'cert' AND r.hash = g.hash),
		EXISTS (SELECT 1 FROM revoked r WHERE r.kind = 'key' AND r.hash = g.subject)
		FROM grants g WHERE g.issuer = $1 ORDER BY g.created DESC, g.hash`, hexKey(key))
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var d officeDevice
		var notAfter, created int64
		if err := rows.Scan(&d.Hash, &d.Subject, &d.Name, &d.Book, &notAfter, &created, &d.Revoked, &d.KeyRevoked); err != nil {
			rows.Close()
			return nil, err
		}
		d.NotAfter, d.Created, d.Expired = time.Unix(notAfter, 0), time.Unix(created, 0), now.Unix() > notAfter
		p.Devices = append(p.Devices, d)
	}
	rows.Close()
	if p.Thefts, err = b.Thefts(ctx, key); err != nil {
		return nil, err
	}
	rows, err = db.QueryContext(ctx, `SELECT name, account, currency FROM vendors WHERE key_hash = $1 ORDER BY name`, hexKey(key))
	if err != nil {
		return nil, err
	}
	var vendors []officeVendor
	var vaccts []string
	for rows.Next() {
		var v officeVendor
		var acct string
		if err := rows.Scan(&v.Name, &acct, &v.Currency); err != nil {
			rows.Close()
			return nil, err
		}
		vendors = append(vendors, v)
		vaccts = append(vaccts, acct)
	}
	rows.Close()
	for i := range vendors {
		v := &vendors[i]
		if v.Account, err = b.DB.Account(ctx, vaccts[i]); err != nil {
			return nil, err
		}
		day := now.UTC().Truncate(24 * time.Hour)
		st, err := b.Statement(ctx, vaccts[i], day.Add(-29*24*time.Hour), day.Add(24*time.Hour))
		if err != nil {
			return nil, err
		}
		for _, r := range st.Rows {
			if r.Kind == "redeem" {
				v.Revenue = append(v.Revenue, r)
				v.Total30 += r.Amount
			}
		}
		v.AccountID = vaccts[i]
		v.From, v.To = day.Add(-29*24*time.Hour).Format("2006-01-02"), day.Add(24*time.Hour).Format("2006-01-02")
		v.Chart = revenueChart(day.Add(-29*24*time.Hour), 30, v.Revenue, v.Currency)
		rr, err := db.QueryContext(ctx, `SELECT t.created, e.amount FROM entries e JOIN transactions t ON t.id = e.tx
			WHERE e.account = $1 AND t.kind = 'redeem' ORDER BY t.id DESC LIMIT 20`, vaccts[i])
		if err != nil {
			return nil, err
		}
		for rr.Next() {
			var at int64
			var r officeRedemption
			if err := rr.Scan(&at, &r.Amount); err != nil {
				rr.Close()
				return nil, err
			}
			r.At = time.Unix(at, 0)
			v.Recent = append(v.Recent, r)
		}
		rr.Close()
		if err := db.QueryRowContext(ctx, `SELECT COUNT(DISTINCT k.id), COUNT(l.lane), COALESCE(SUM(l.redeemed), 0)
			FROM books k JOIN lanes l ON l.book = k.id WHERE k.vendor = $1 AND l.redeemed > 0`, v.Name).Scan(&v.Books, &v.Lanes, &v.Coupons); err != nil {
			return nil, err
		}
	}
	p.Vendors = vendors
	return p, nil
}

// hexToID spells an ID the ledger keeps in hex (a book, a key hash, a
// grant) as everything else spells it: base64url without padding, the
// form of the protocol's lane IDs, of the API and of the CLI.
func hexToID(h string) string {
	raw, err := hex.DecodeString(h)
	if err != nil {
		return h
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// revenueChart draws rows (redeem rows, one per day) over the days days
// from first as an SVG bar chart: one bar per day, its height the day's
// revenue, a title on each bar for its exact amount, the largest day
// labelled. It is markup of the page (the back office runs no script).
func revenueChart(first time.Time, days int, rows []StatementRow, currency string) template.HTML {
	const w, h, top, bottom, left = 600, 160, 14, 18, 4
	per := make([]int64, days)
	var peak int64
	for _, r := range rows {
		d := int(r.Day.Sub(first) / (24 * time.Hour))
		if d >= 0 && d < days {
			per[d] += r.Amount
			peak = max(peak, per[d])
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" role="img" viewBox="0 0 %d %d" width="100%%" height="%d" xmlns="http://www.w3.org/2000/svg"><title>Revenue per day, %s to %s, in %s</title>`,
		w, h, h, first.Format("2006-01-02"), first.Add(time.Duration(days-1)*24*time.Hour).Format("2006-01-02"), template.HTMLEscapeString(currency))
	fmt.Fprintf(&b, `<line x1="0" y1="%d" x2="%d" y2="%d" stroke="#999"/>`, h-bottom, w, h-bottom)
	slot := float64(w-left) / float64(days)
	for d, v := range per {
		day := first.Add(time.Duration(d) * 24 * time.Hour).Format("2006-01-02")
		bh := 0.0
		if peak > 0 {
			bh = float64(v) / float64(peak) * float64(h-top-bottom)
		}
		if v > 0 && bh < 1 {
			bh = 1
		}
		fmt.Fprintf(&b, `<rect class="bar" data-day="%s" data-amount="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#3a6ea5"><title>%s: %s %s</title></rect>`,
			day, coupons.FormatAmount(v), float64(left)+float64(d)*slot+1, float64(h-bottom)-bh, slot-2, bh, day, coupons.FormatAmount(v), template.HTMLEscapeString(currency))
		if d == 0 || d == days-1 {
			anchor := "start"
			if d == days-1 {
				anchor = "end"
			}
			x := float64(left) + float64(d)*slot
			if d == days-1 {
				x += slot
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="11" text-anchor="%s" fill="#555">%s</text>`, x, h-4, anchor, day)
		}
	}
	if peak > 0 {
		fmt.Fprintf(&b, `<text x="%d" y="11" font-size="11" fill="#555">peak %s %s</text>`, left, coupons.FormatAmount(peak), template.HTMLEscapeString(currency))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// officeRevoke revokes a device's grant (and with key=on, its key) from
// the back office: the session's key must have issued it.
func (a *API) officeRevoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	key, sess, ok := a.session(ctx, r)
	if !ok {
		a.officePage(w, http.StatusUnauthorized, "login", nil)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if r.PostFormValue("csrf") != csrfToken(sess) {
		a.officeError(w, fmt.Errorf("%w: the form is stale or from another site; reload the page", errForbidden))
		return
	}
	raw, err := base64.RawURLEncoding.DecodeString(r.PostFormValue("grant"))
	if err != nil || len(raw) != 32 {
		a.officeError(w, fmt.Errorf("%w: the form names no grant", errBadRequest))
		return
	}
	grant := hex.EncodeToString(raw)
	var doc string
	err = a.Broker.DB.db.QueryRowContext(ctx, `SELECT doc FROM grants WHERE hash = $1 AND issuer = $2`, grant, hexKey(key)).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		a.officeError(w, fmt.Errorf("%w: no grant %q issued by you", errForbidden, grant))
		return
	} else if err != nil {
		a.officeError(w, err)
		return
	}
	sc, err := parseSignedCert(doc)
	if err == nil {
		err = a.Broker.Revoke(ctx, key, sc, r.PostFormValue("key") == "on")
	}
	if err != nil {
		a.officeError(w, err)
		return
	}
	http.Redirect(w, r, OfficePath+"?done=revoked", http.StatusSeeOther)
}
