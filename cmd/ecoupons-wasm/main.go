//go:build js && wasm

// Command ecoupons-wasm is the browser wallet: package wallet compiled to
// WebAssembly, its files in IndexedDB, driven from JavaScript through
// globalThis.ecoupons (docs/PROTOCOL.md, "The browser wallet"). The gate
// serves it at /.well-known/ecoupons/wallet.wasm; its service worker (sw.js)
// runs it to pay the site's 402 challenges, and a web app on another
// origin may load it as a library.
//
// Every method returns a Promise; failures reject with an Error whose
// code is one of: paused, limit, no_grant, busy, bad_grant, bad_request,
// failed.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall/js"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
)

// dir is the wallet's directory inside IndexedDB.
const dir = "wallet"

// Files of the browser wallet beside the CLI wallet's.
var (
	pausedFile   = path.Join(dir, "paused")
	paymentsFile = path.Join(dir, "payments.jsonl")
)

// receiptSkew is how far a vendor's clock may be ahead of the browser's
// when receipts are checked (the CLI's wallet receipts --skew).
const receiptSkew = 500 * time.Millisecond

// maxBody bounds a paid response read into the browser's memory.
const maxBody = 64 << 20

// browser is the wallet of this origin.
type browser struct {
	mu       sync.Mutex
	fs       *wallet.IndexedDB
	w        *wallet.Wallet
	choosers map[string]*wallet.Chooser // by vendor
}

// payment is one line of payments.jsonl: a request the wallet paid (or
// tried to), for the wallet page.
type payment struct {
	At      time.Time `json:"at"`
	URL     string    `json:"url"`
	Vendor  string    `json:"vendor"`
	Coupons uint32    `json:"coupons"` // what the challenge asked
	Amount  string    `json:"amount"`
	Status  int       `json:"status,omitempty"` // the paid answer's
	Error   string    `json:"error,omitempty"`
}

func main() {
	b := &browser{choosers: map[string]*wallet.Chooser{}}
	api := map[string]any{
		"fetch":       promised(b.fetch),
		"pay":         promised(b.pay),
		"pairingCode": promised(b.pairingCode),
		"importGrant": promised(b.importGrant),
		"status":      promised(b.status),
		"setPaused":   promised(b.setPaused),
		"forget":      promised(b.forget),
		"setLimit":    promised(b.setLimit),
		"removeLimit": promised(b.removeLimit),
	}
	obj := js.Global().Get("Object").New()
	for k, v := range api {
		obj.Set(k, v)
	}
	js.Global().Set("ecoupons", obj)
	if ready := js.Global().Get("ecouponsReady"); ready.Type() == js.TypeFunction {
		ready.Invoke(obj)
	}
	select {}
}

// codedError is an error with the code the JS API rejects with.
type codedError struct {
	code string
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func coded(code string, err error) error { return &codedError{code, err} }

// codeOf maps the wallet's errors to the API's codes.
func codeOf(err error) string {
	var ce *codedError
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, wallet.ErrSpendLimit):
		return "limit"
	case errors.Is(err, wallet.ErrNoBook), errors.Is(err, wallet.ErrNoLane):
		return "no_grant"
	case errors.Is(err, wallet.ErrLanesBusy), errors.Is(err, wallet.ErrLocked):
		return "busy"
	}
	return "failed"
}

// promised wraps f as a JS function returning a Promise settled with f's
// result on a goroutine of its own (f may wait for the network and
// IndexedDB; the JS thread must not).
func promised(f func(args []js.Value) (any, error)) js.Func {
	return js.FuncOf(func(_ js.Value, args []js.Value) any {
		args = slices.Clone(args)
		var exec js.Func
		exec = js.FuncOf(func(_ js.Value, pa []js.Value) any {
			resolve, reject := pa[0], pa[1]
			exec.Release()
			go func() {
				v, err := f(args)
				if err != nil {
					e := js.Global().Get("Error").New(err.Error())
					e.Set("code", codeOf(err))
					reject.Invoke(e)
					return
				}
				resolve.Invoke(v)
			}()
			return nil
		})
		return js.Global().Get("Promise").New(exec)
	})
}

// await waits for a JS promise.
func await(p js.Value) (js.Value, error) {
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	ok := js.FuncOf(func(_ js.Value, a []js.Value) any { ch <- result{v: arg(a, 0)}; return nil })
	fail := js.FuncOf(func(_ js.Value, a []js.Value) any {
		msg := "rejected"
		if e := arg(a, 0); e.Truthy() {
			msg = e.Call("toString").String()
		}
		ch <- result{err: errors.New(msg)}
		return nil
	})
	defer ok.Release()
	defer fail.Release()
	p.Call("then", ok, fail)
	r := <-ch
	return r.v, r.err
}

func arg(a []js.Value, i int) js.Value {
	if i < len(a) {
		return a[i]
	}
	return js.Undefined()
}

// toJS hands a Go value to JS as plain objects (through JSON).
func toJS(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return js.Global().Get("JSON").Call("parse", string(raw)), nil
}

// open loads the wallet from IndexedDB, making its device keys the first
// time.
func (b *browser) open() (*wallet.Wallet, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.w != nil {
		return b.w, nil
	}
	if b.fs == nil {
		fs, err := wallet.OpenIndexedDB("ecoupons")
		if err != nil {
			return nil, err
		}
		b.fs = fs
	}
	w, err := wallet.LoadIn(b.fs, dir, wallet.KeyOptions{})
	if errors.Is(err, wallet.ErrNoWallet) {
		w, err = wallet.InitIn(b.fs, dir, wallet.KeyOptions{})
	}
	if err != nil {
		return nil, err
	}
	b.w = w
	return w, nil
}

func (b *browser) paused() bool {
	_, err := b.fs.ReadFile(pausedFile)
	return err == nil
}

// chooser returns the Chooser paying vendor's challenges from the grants
// for it (most value left first), opening it on first use.
func (b *browser) chooser(vendor string) (*wallet.Chooser, error) {
	w, err := b.open()
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.choosers[vendor]; ok {
		return c, nil
	}
	entries, err := w.BooksFor(vendor)
	if err != nil {
		return nil, coded("no_grant", fmt.Errorf("no grant for %s in this browser's wallet: %w", vendor, err))
	}
	budget, err := w.Budget()
	if err != nil {
		return nil, err
	}
	receipts := w.Receipts()
	c := &wallet.Chooser{Entries: entries,
		Open: func(e *wallet.BookEntry) (*wallet.Transport, error) {
			t, err := e.OpenTransport()
			if err != nil {
				return nil, err
			}
			t.Budget, t.Receipts = budget, receipts
			return t, nil
		},
		Refresh: func() ([]*wallet.BookEntry, error) { return w.BooksFor(vendor) }}
	b.choosers[vendor] = c
	return c, nil
}

// fetch(input, init): ecoupons.fetch for a page or an app: the request is
// sent; a 402 the wallet can answer is paid and the request sent again.
// It resolves with a Response.
func (b *browser) fetch(args []js.Value) (any, error) {
	req := js.Global().Get("Request").New(arg(args, 0), arg(args, 1))
	r, err := requestFromJS(req)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusPaymentRequired {
		return responseToJS(resp)
	}
	ch, err := wallet.ChallengeFromResponse(resp.Header, wallet.SchemeAuto)
	if err != nil {
		return responseToJS(resp) // not an e-coupon challenge
	}
	resp.Body.Close()
	return b.answer(r, ch)
}

// pay(request, response): the service worker's call, with the 402
// response it got for request: the wallet pays its challenge and resolves
// with the paid Response.
func (b *browser) pay(args []js.Value) (any, error) {
	r, err := requestFromJS(arg(args, 0))
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	if err := headersFromJS(arg(args, 1).Get("headers"), h); err != nil {
		return nil, err
	}
	ch, err := wallet.ChallengeFromResponse(h, wallet.SchemeAuto)
	if err != nil {
		return nil, coded("bad_request", err)
	}
	return b.answer(r, ch)
}

// answer pays ch for r unless the wallet is paused, logs the payment and
// hands the answer to JS.
func (b *browser) answer(r *http.Request, ch *wallet.Challenge) (any, error) {
	if _, err := b.open(); err != nil {
		return nil, err
	}
	if b.paused() {
		return nil, coded("paused", errors.New("the browser wallet is paused"))
	}
	c, err := b.chooser(ch.Vendor)
	if err != nil {
		return nil, err
	}
	resp, err := c.Answer(r, ch)
	u := *r.URL
	u.RawQuery, u.Fragment, u.User = "", "", nil
	p := payment{At: time.Now().UTC(), URL: u.String(), Vendor: ch.Vendor, Coupons: ch.Price}
	if unit, perr := coupons.ParseAmount(ch.Unit); perr == nil {
		if amt, merr := coupons.MulAmount(uint64(ch.Price), unit); merr == nil {
			p.Amount = coupons.FormatAmount(amt) + " " + ch.Currency
		}
	}
	if err != nil {
		p.Error = err.Error()
	} else {
		p.Status = resp.StatusCode
	}
	if line, jerr := json.Marshal(p); jerr == nil {
		_ = b.fs.AppendFile(paymentsFile, append(line, '\n')) // the log is for the reader; the payment stands
	}
	if err != nil {
		return nil, err
	}
	return responseToJS(resp)
}

// requestFromJS makes an http.Request of a JS Request (its body read).
func requestFromJS(req js.Value) (*http.Request, error) {
	if req.Type() != js.TypeObject {
		return nil, coded("bad_request", errors.New("a Request is needed"))
	}
	method := req.Get("method").String()
	var body io.Reader
	if method != http.MethodGet && method != http.MethodHead {
		ab, err := await(req.Call("arrayBuffer"))
		if err != nil {
			return nil, err
		}
		u8 := js.Global().Get("Uint8Array").New(ab)
		data := make([]byte, u8.Get("length").Int())
		js.CopyBytesToGo(data, u8)
		if len(data) > 0 {
			body = bytes.NewReader(data)
		}
	}
	r, err := http.NewRequest(method, req.Get("url").String(), body)
	if err != nil {
		return nil, coded("bad_request", err)
	}
	if err := headersFromJS(req.Get("headers"), r.Header); err != nil {
		return nil, err
	}
	// Cookies and HTTP authentication travel as the page's own request
	// would send them (navigations: include).
	if c := req.Get("credentials"); c.Type() == js.TypeString {
		r.Header.Set("js.fetch:credentials", c.String())
	}
	return r, nil
}

// headersFromJS copies a JS Headers object into h.
func headersFromJS(hs js.Value, h http.Header) error {
	if hs.Type() != js.TypeObject {
		return coded("bad_request", errors.New("headers are needed"))
	}
	f := js.FuncOf(func(_ js.Value, a []js.Value) any {
		h.Add(arg(a, 1).String(), arg(a, 0).String())
		return nil
	})
	defer f.Release()
	hs.Call("forEach", f)
	return nil
}

// responseToJS reads resp into a JS Response (the body whole: a page, a
// media segment).
func responseToJS(resp *http.Response) (any, error) {
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxBody {
		return nil, fmt.Errorf("the answer is larger than %d bytes", maxBody)
	}
	hs := js.Global().Get("Headers").New()
	for k, vs := range resp.Header {
		// The browser decoded the body already.
		if k == "Content-Encoding" || k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			hs.Call("append", k, v)
		}
	}
	init := js.Global().Get("Object").New()
	init.Set("status", resp.StatusCode)
	init.Set("statusText", strings.TrimSpace(strings.TrimPrefix(resp.Status, fmt.Sprint(resp.StatusCode))))
	init.Set("headers", hs)
	body := js.Null()
	switch resp.StatusCode {
	case 101, 204, 205, 304:
	default:
		body = js.Global().Get("Uint8Array").New(len(data))
		js.CopyBytesToJS(body, data)
	}
	return js.Global().Get("Response").New(body, init), nil
}

// pairingCode(): the wallet's device identity in transport form, for
// ecoupons wallet delegate --to, with its fingerprint to compare.
func (b *browser) pairingCode(args []js.Value) (any, error) {
	w, err := b.open()
	if err != nil {
		return nil, err
	}
	name := "browser"
	if n := arg(args, 0); n.Type() == js.TypeString && n.String() != "" {
		name = n.String()
	}
	d, err := w.Device(name)
	if err != nil {
		return nil, err
	}
	return toJS(map[string]string{"code": string(spki.Transport(d.Sexp())), "fingerprint": d.Fingerprint().ID(), "name": name})
}

// importGrant(text): verifies and keeps a grant made for this browser.
// text is the grant as ecoupons wallet delegate writes it, or a link to
// the wallet page carrying it (…#grant=…).
func (b *browser) importGrant(args []js.Value) (any, error) {
	w, err := b.open()
	if err != nil {
		return nil, err
	}
	text := strings.TrimSpace(arg(args, 0).String())
	if _, frag, ok := strings.Cut(text, "#grant="); ok {
		text = frag
	}
	g, err := w.ImportGrant([]byte(text), time.Now())
	if err != nil {
		return nil, coded("bad_grant", err)
	}
	var n uint64
	for _, sl := range g.Lanes {
		end := sl.End
		if end == 0 {
			end = g.Book.Book.Length
		}
		n += uint64(end)
	}
	v, _ := coupons.MulAmount(n, g.Book.Book.Unit)
	return toJS(map[string]any{"vendor": g.Book.Book.Vendor, "lanes": len(g.Lanes), "coupons": n,
		"value": coupons.FormatAmount(v), "currency": g.Book.Book.Currency})
}

// status(): what the wallet page shows.
func (b *browser) status(args []js.Value) (any, error) {
	w, err := b.open()
	if err != nil {
		return nil, err
	}
	d, err := w.Device("browser")
	if err != nil {
		return nil, err
	}
	type grantView struct {
		Book     string `json:"book"`
		Vendor   string `json:"vendor"`
		State    string `json:"state"`
		Lanes    int    `json:"lanes"`
		Used     int    `json:"used"`
		Coupons  uint64 `json:"coupons"`
		Value    string `json:"value"`
		Currency string `json:"currency"`
		Expires  string `json:"expires"`
	}
	type limitView struct {
		Host     string `json:"host"`
		Per      string `json:"per"`
		Max      string `json:"max"`
		Spent    string `json:"spent"`
		Currency string `json:"currency"`
	}
	out := struct {
		Fingerprint string                  `json:"fingerprint"`
		Paused      bool                    `json:"paused"`
		Grants      []grantView             `json:"grants"`
		Problems    []string                `json:"problems"`
		Balance     map[string]string       `json:"balance"`
		Limits      []limitView             `json:"limits"`
		Payments    []json.RawMessage       `json:"payments"`
		Receipts    []wallet.CheckedReceipt `json:"receipts"`
	}{Fingerprint: d.Fingerprint().ID(), Paused: b.paused(), Balance: map[string]string{}}
	books, err := w.Books()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	totals := map[string]int64{}
	for i := range books {
		e := &books[i]
		bk := e.Holder.Book.Book
		u, err := e.Usage()
		if err != nil {
			return nil, err
		}
		st := e.State(now)
		out.Grants = append(out.Grants, grantView{Book: e.ShortID(), Vendor: bk.Vendor, State: string(st), Lanes: len(e.Lanes),
			Used: u.Used, Coupons: u.Coupons, Value: coupons.FormatAmount(u.Value), Currency: bk.Currency,
			Expires: bk.NotAfter.UTC().Format(time.RFC3339)})
		if st == wallet.BookFunded {
			totals[bk.Currency] += u.Value
		}
	}
	for c, v := range totals {
		out.Balance[c] = coupons.FormatAmount(v)
	}
	if out.Problems, err = w.GrantProblems(); err != nil {
		return nil, err
	}
	budget, err := w.Budget()
	if err != nil {
		return nil, err
	}
	limits, err := budget.Limits()
	if err != nil {
		return nil, err
	}
	for _, l := range limits {
		spent, err := budget.Spent(l)
		if err != nil {
			return nil, err
		}
		out.Limits = append(out.Limits, limitView{Host: l.Host, Per: periodName(l.Period), Max: coupons.FormatAmount(l.Max),
			Spent: coupons.FormatAmount(spent), Currency: l.Currency})
	}
	if raw, err := b.fs.ReadFile(paymentsFile); err == nil {
		for _, line := range bytes.Split(raw, []byte("\n")) {
			if json.Valid(line) {
				out.Payments = append(out.Payments, line)
			}
		}
	}
	if len(out.Payments) > 100 {
		out.Payments = out.Payments[len(out.Payments)-100:]
	}
	// Each receipt checked against the vendor's signed commitment and the
	// keys it disclosed since (fetched from the gate once per commitment).
	if out.Receipts, err = w.Receipts().Check(receiptSkew); err != nil {
		return nil, err
	}
	if len(out.Receipts) > 100 {
		out.Receipts = out.Receipts[len(out.Receipts)-100:]
	}
	return toJS(out)
}

// periodName says a limit's period as the wallet page offers it.
func periodName(d time.Duration) string {
	switch d {
	case time.Hour:
		return "hour"
	case 24 * time.Hour:
		return "day"
	case 7 * 24 * time.Hour:
		return "week"
	}
	return d.String()
}

// setPaused(bool): a paused wallet pays nothing.
func (b *browser) setPaused(args []js.Value) (any, error) {
	if _, err := b.open(); err != nil {
		return nil, err
	}
	if arg(args, 0).Truthy() {
		return nil, b.fs.WriteFile(pausedFile, []byte("paused\n"))
	}
	if err := b.fs.Remove(pausedFile); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return nil, err
	}
	return nil, nil
}

// forget(): deletes the wallet: keys, grants, lanes, limits, receipts. The
// coupons it held are lost to this browser (the reader's main wallet
// reclaims granted portions: ecoupons wallet reclaim).
func (b *browser) forget([]js.Value) (any, error) {
	if _, err := b.open(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.choosers {
		c.Close()
	}
	b.choosers = map[string]*wallet.Chooser{}
	b.w = nil
	return nil, b.fs.Clear()
}

// limitArgs reads {max, per, host, currency} (max and currency only for
// setLimit): per is a Go duration ("24h") or day, hour, week; host is a
// host name or "*" [*]; currency defaults to the grants' only currency.
func (b *browser) limitArgs(o js.Value, withMax bool) (wallet.Limit, error) {
	var l wallet.Limit
	if o.Type() != js.TypeObject {
		return l, coded("bad_request", errors.New("a limit {max, per, host} is needed"))
	}
	str := func(k string) string {
		if v := o.Get(k); v.Type() == js.TypeString || v.Type() == js.TypeNumber {
			return strings.TrimSpace(fmt.Sprint(v))
		}
		return ""
	}
	per := str("per")
	switch per {
	case "day", "":
		per = "24h"
	case "hour":
		per = "1h"
	case "week":
		per = "168h"
	}
	d, err := time.ParseDuration(per)
	if err != nil {
		return l, coded("bad_request", fmt.Errorf("per %q: %w", per, err))
	}
	l.Period, l.Host, l.Currency = d, strings.ToLower(str("host")), strings.ToUpper(str("currency"))
	if l.Host == "" {
		l.Host = "*"
	}
	if l.Currency == "" {
		if l.Currency, err = b.onlyCurrency(); err != nil {
			return l, err
		}
	}
	if withMax {
		if l.Max, err = coupons.ParseAmount(str("max")); err != nil {
			return l, coded("bad_request", fmt.Errorf("max: %w", err))
		}
	}
	if err := l.Check(); err != nil {
		return l, coded("bad_request", err)
	}
	return l, nil
}

// onlyCurrency is the currency of the wallet's grants, when there is one.
func (b *browser) onlyCurrency() (string, error) {
	books, err := b.w.Books()
	if err != nil {
		return "", err
	}
	var cs []string
	for _, e := range books {
		if c := e.Holder.Book.Book.Currency; !slices.Contains(cs, c) {
			cs = append(cs, c)
		}
	}
	if len(cs) != 1 {
		return "", coded("bad_request", fmt.Errorf("the grants are in %d currencies: name the limit's currency", len(cs)))
	}
	return cs[0], nil
}

// setLimit({max, per, host, currency}): payments past it are refused
// before a coupon leaves (code limit).
func (b *browser) setLimit(args []js.Value) (any, error) {
	w, err := b.open()
	if err != nil {
		return nil, err
	}
	l, err := b.limitArgs(arg(args, 0), true)
	if err != nil {
		return nil, err
	}
	budget, err := w.Budget()
	if err != nil {
		return nil, err
	}
	return nil, budget.Set(l)
}

// removeLimit({per, host, currency}).
func (b *browser) removeLimit(args []js.Value) (any, error) {
	w, err := b.open()
	if err != nil {
		return nil, err
	}
	l, err := b.limitArgs(arg(args, 0), false)
	if err != nil {
		return nil, err
	}
	budget, err := w.Budget()
	if err != nil {
		return nil, err
	}
	found, err := budget.Remove(l)
	return found, err
}
