package wallet

import (
	"net/http"
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
