//go:build !js

package wallet

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
)

// The local paying proxy is for the CLI; a browser wallet has none (its
// service worker pays), and leaves httputil out of the WebAssembly.

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
