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

	mu sync.Mutex
	m  map[string]*Transport
}

// RoundTrip implements http.RoundTripper.
func (r *Router) RoundTrip(req *http.Request) (*http.Response, error) {
	base := r.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusPaymentRequired {
		return resp, err
	}
	ch, err := ParseChallenge(resp.Header.Get("WWW-Authenticate"))
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

func (r *Router) transport(vendor string) (*Transport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.m[vendor]; ok {
		return t, nil
	}
	t, err := r.For(vendor)
	if err != nil {
		return nil, err
	}
	if t.Base == nil {
		t.Base = r.Base
	}
	if r.m == nil {
		r.m = map[string]*Transport{}
	}
	r.m[vendor] = t
	return t, nil
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
		},
		Transport: rt,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			code := http.StatusBadGateway
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
	for _, e := range []error{ErrSpendLimit, ErrPriceLimit, ErrNoLane, ErrWrongVendor} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
