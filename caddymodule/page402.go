package caddymodule

import (
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"strings"

	"github.com/ecoupons/ecoupons/coupons"
)

//go:embed page402.html
var defaultPage402 string

// page402 is what the HTML 402 page's template is given (a payment_page
// file may use every field).
type page402 struct {
	Vendor, Broker string // the route's vendor and broker URL ("" if none)
	Price          uint32 // coupons per request
	Unit, Currency string // the value of one coupon
	Amount         string // Price × Unit, in Currency
	URL, Origin    string // the resource asked for, and its site
	Path           string // its path and query
	Nonce          string // the challenge's nonce
}

// loadPage402 parses the HTML 402 page: the file of the payment_page
// option, or the built-in one.
func loadPage402(file string) (*template.Template, error) {
	src := defaultPage402
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("ecoupon: payment_page: %w", err)
		}
		src = string(b)
	}
	t, err := template.New("402").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("ecoupon: payment_page %s: %w", file, err)
	}
	return t, nil
}

// wantsHTML reports whether r is a browser's navigation: a GET that
// accepts text/html (and did not ask for JSON first).
func wantsHTML(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		switch strings.ToLower(strings.TrimSpace(mt)) {
		case "text/html", "application/xhtml+xml":
			return true
		case "application/json", "application/problem+json":
			return false
		}
	}
	return false
}

// payRequiredHTML answers an unpaid navigation with the HTML 402 page,
// carrying the same challenges as the JSON answer.
func (g *Gate) payRequiredHTML(w http.ResponseWriter, r *http.Request) {
	c := g.challenge
	c.Error, c.Nonce, c.Hint = coupons.CodePaymentRequired, g.nonces.issue(), hintPay
	h := w.Header()
	h.Set("WWW-Authenticate", c.header())
	if c.pay != nil {
		for _, pc := range c.pay.challenges(&c, r.Header, false) {
			h.Add("WWW-Authenticate", pc.String())
		}
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	origin := scheme + "://" + r.Host
	amount, _ := coupons.MulAmount(uint64(g.Price), g.unit)
	data := page402{Vendor: g.Vendor, Broker: g.Broker, Price: g.Price, Unit: c.Unit, Currency: g.Currency,
		Amount: coupons.FormatAmount(amount), URL: origin + r.URL.RequestURI(), Origin: origin, Path: r.URL.RequestURI(),
		Nonce: c.Nonce}
	var b strings.Builder
	if err := g.page402.Execute(&b, data); err != nil {
		g.logger.Error("the payment_page template failed; answering JSON")
		writeJSON(w, http.StatusPaymentRequired, c)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Vary", "Accept")
	w.WriteHeader(http.StatusPaymentRequired)
	w.Write([]byte(b.String()))
}

// CORS: the headers a web app on another origin may send and read.
const (
	corsAllowHeaders  = "Authorization, ECoupon-Open, Content-Digest, Payment-Authorization, Accept-Payment, Content-Type"
	corsExposeHeaders = "WWW-Authenticate, ECoupon-Balance, ECoupon-Credit, ECoupon-Receipt, ECoupon-Disclosed, Payment-Receipt, Retry-After"
)

// cors applies the cors_origins option: a request from an allowed origin
// gets Access-Control-Allow-Origin and the gate's headers exposed; a
// preflight (OPTIONS with Access-Control-Request-Method) is answered 204
// here, without payment, and cors reports true.
func (g *Gate) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || !g.corsAllows(origin) {
		return false
	}
	h := w.Header()
	if g.corsAny {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, PATCH, DELETE")
		h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
	return false
}

func (g *Gate) corsAllows(origin string) bool {
	if g.corsAny {
		return true
	}
	for _, o := range g.CORSOrigins {
		if strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// checkCORSOrigins checks the cors_origins option: "*" alone, or origins
// scheme://host[:port] without a path.
func checkCORSOrigins(origins []string) error {
	for _, o := range origins {
		if o == "*" {
			if len(origins) > 1 {
				return fmt.Errorf("ecoupon: cors_origins: \"*\" allows every origin; give it alone")
			}
			continue
		}
		scheme, rest, ok := strings.Cut(o, "://")
		if !ok || (scheme != "http" && scheme != "https") || rest == "" || strings.ContainsAny(rest, "/?#* ") {
			return fmt.Errorf("ecoupon: cors_origins: %q is not an origin (scheme://host[:port], e.g. https://app.example)", o)
		}
	}
	return nil
}
