package caddymodule

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"unsafe"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Header keys of the paid path in canonical form (http.CanonicalHeaderKey
// of the names the protocol spells), so that the gate reads and writes
// header maps directly, without canonicalising a key per request.
// TestHeaderKeysCanonical checks them.
const (
	keyAuthorization = "Authorization"
	keyOpen          = "Ecoupon-Open"    // HeaderOpen
	keyContentDigest = "Content-Digest"  // coupons.HeaderContentDigest
	keyRange         = "Range"           // the request's Range, bound by the digest
	keyBalance       = "Ecoupon-Balance" // HeaderBalance
	keyCredit        = "Ecoupon-Credit"  // HeaderCredit
	keyReceipt       = "Ecoupon-Receipt" // HeaderReceipt
)

// wellKnownPrefix is the prefix of the gate's own paths (OpenPath,
// VendorPath).
const wellKnownPrefix = "/.well-known/ecoupons/"

// headerValue returns the first value of a canonical key (Header.Get
// without canonicalising key).
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// setUint sets a canonical key to the decimal n, as Header.Set would, in
// one allocation: the value's slice and its digits (the string points into
// them, and is never written to once made).
func setUint(h http.Header, key string, n uint64) {
	u := new(uintValue)
	d := strconv.AppendUint(u.digits[:0], n, 10)
	u.v[0] = unsafe.String(&d[0], len(d))
	h[key] = u.v[:]
}

// uintValue is a header value holding a decimal (setUint).
type uintValue struct {
	v      [1]string
	digits [20]byte // the most a uint64 has
}

// statusWriter passes a paid request's response through to the client,
// streaming, and keeps its status for the settlement (a 5xx is credited
// back). It is what caddyhttp.NewResponseRecorder(w, nil, nil) is to the
// gate, pooled: flushes, hijacking (http.ResponseController, through
// FlushError, Hijack and Unwrap), ReadFrom and Push reach the client's
// writer.
type statusWriter struct {
	http.ResponseWriter
	status int // the final status written, 0 until one is
}

var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

// newStatusWriter returns a pooled statusWriter on w; release it with
// put once the next handler has returned.
func newStatusWriter(w http.ResponseWriter) *statusWriter {
	sw := statusWriters.Get().(*statusWriter)
	sw.ResponseWriter = w
	return sw
}

// put returns sw to the pool.
func (sw *statusWriter) put() {
	*sw = statusWriter{}
	statusWriters.Put(sw)
}

// WriteHeader records the first final status and writes it; later ones
// are dropped (as caddyhttp's recorder does), 1xx pass through.
func (sw *statusWriter) WriteHeader(code int) {
	if sw.status != 0 {
		return
	}
	if code >= 200 || code < 100 {
		sw.status = code
	}
	sw.ResponseWriter.WriteHeader(code)
}

// Write writes body bytes (after an implicit 200).
func (sw *statusWriter) Write(b []byte) (int, error) {
	if sw.status == 0 {
		sw.WriteHeader(http.StatusOK)
	}
	return sw.ResponseWriter.Write(b)
}

// ReadFrom lets the client's writer copy a body itself (sendfile).
func (sw *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if sw.status == 0 {
		sw.WriteHeader(http.StatusOK)
	}
	if rf, ok := sw.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(sw.ResponseWriter, r)
}

// FlushError flushes the client's writer (http.ResponseController).
func (sw *statusWriter) FlushError() error {
	if sw.status == 0 {
		sw.status = http.StatusOK // a flush sends the header
	}
	return http.NewResponseController(sw.ResponseWriter).Flush()
}

// Hijack takes over the client's connection (http.ResponseController).
func (sw *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(sw.ResponseWriter).Hijack()
}

// Push implements http.Pusher when the client's writer does.
func (sw *statusWriter) Push(target string, opts *http.PushOptions) error {
	if p, ok := sw.ResponseWriter.(http.Pusher); ok {
		return p.Push(target, opts)
	}
	return caddyhttp.ErrNotImplemented
}

// Unwrap returns the client's writer (http.ResponseController).
func (sw *statusWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }
