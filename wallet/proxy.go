package wallet

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
)

// Router answers 402 challenges from whatever vendor asks, with the
// Transport that For returns for that vendor (created once per vendor).
type Router struct {
	// Base sends requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// For returns the transport that pays vendor (a book or grant for it).
	For func(vendor string) (*Transport, error)
	// Books, when set, is used instead of For: it returns a Chooser over
	// the vendor's books, which falls back from one to the next.
	Books func(vendor string) (*Chooser, error)
	// Scheme is the scheme 402s are answered in, as Transport.Scheme.
	Scheme string

	mu sync.Mutex
	m  map[string]answerer
}

// answerer pays a challenge: a Transport or a Chooser.
type answerer interface {
	Answer(req *http.Request, ch *Challenge) (*http.Response, error)
}

// RoundTrip implements http.RoundTripper.
func (r *Router) RoundTrip(req *http.Request) (*http.Response, error) {
	base := r.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if err := checkScheme(r.Scheme); err != nil {
		return nil, err
	}
	req = offerPayment(req, r.Scheme)
	resp, err := base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusPaymentRequired {
		return resp, err
	}
	ch, err := ChallengeFromResponse(resp.Header, r.Scheme)
	if err != nil {
		return resp, nil
	}
	resp.Body.Close()
	t, err := r.transport(ch.Vendor)
	if err != nil {
		return nil, err
	}
	return t.Answer(req, ch)
}

func (r *Router) transport(vendor string) (answerer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.m[vendor]; ok {
		return t, nil
	}
	var a answerer
	if r.Books != nil {
		c, err := r.Books(vendor)
		if err != nil {
			return nil, err
		}
		if c.Base == nil {
			c.Base = r.Base
		}
		a = c
	} else {
		t, err := r.For(vendor)
		if err != nil {
			return nil, err
		}
		if t.Base == nil {
			t.Base = r.Base
		}
		a = t
	}
	if r.m == nil {
		r.m = map[string]answerer{}
	}
	r.m[vendor] = a
	return a, nil
}

// maxProxyBody bounds a request body the proxy buffers (it may have to
// send it twice: before and after paying).
const maxProxyBody = 1 << 20

// NewProxy returns an HTTP handler that forwards every request to upstream
// through rt (a Router or a Transport), so that clients that cannot speak
// ECoupon — a browser, a video player — get paid content.
func NewProxy(upstream *url.URL, rt http.RoundTripper) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.Out.Header.Del("Authorization") // never forward a client's own credentials
			pr.Out.Header.Del("Payment-Authorization")
		},
		Transport: rt,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			code := http.StatusBadGateway
			if errors.Is(err, ErrLanesBusy) {
				// Every lane stayed in use for as long as the request
				// waited (Transport.LaneWait): try again shortly.
				w.Header().Set("Retry-After", "1")
				http.Error(w, "ecoupons wallet proxy: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			if declined(err) {
				// The wallet would not pay: still a payment required, with
				// the wallet's reason (and no challenge to answer).
				code = http.StatusPaymentRequired
			}
			http.Error(w, "ecoupons wallet proxy: "+err.Error(), code)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			b, err := io.ReadAll(io.LimitReader(r.Body, maxProxyBody+1))
			if err != nil || len(b) > maxProxyBody {
				http.Error(w, fmt.Sprintf("ecoupons wallet proxy: request bodies are limited to %d bytes", maxProxyBody), http.StatusRequestEntityTooLarge)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		}
		rp.ServeHTTP(w, r)
	})
}

// declined reports whether err is the wallet refusing to pay, rather than
// the upstream failing.
func declined(err error) bool {
	for _, e := range []error{ErrSpendLimit, ErrPriceLimit, ErrNoLane, ErrWrongVendor, ErrNoBook} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
