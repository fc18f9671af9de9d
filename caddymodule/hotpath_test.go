package caddymodule

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// TestStatusWriter: the gate's writer passes a response through as it is
// written (flushes included, through http.ResponseController, as
// reverse_proxy streams), keeps the first final status, and says when the
// client's writer cannot hijack.
func TestStatusWriter(t *testing.T) {
	rec := httptest.NewRecorder()
	sw := newStatusWriter(rec)
	rc := http.NewResponseController(sw)
	sw.Header().Set("X-Up", "1")
	sw.WriteHeader(http.StatusBadGateway)
	sw.WriteHeader(http.StatusOK) // superfluous: dropped
	if _, err := sw.Write([]byte("part 1")); err != nil {
		t.Fatal(err)
	}
	if err := rc.Flush(); err != nil || !rec.Flushed {
		t.Fatalf("flush: %v, flushed %v", err, rec.Flushed)
	}
	if rec.Body.String() != "part 1" {
		t.Fatalf("body %q before the handler returned", rec.Body)
	}
	if _, err := sw.ReadFrom(strings.NewReader(", part 2")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := rc.Hijack(); !errors.Is(err, http.ErrNotSupported) {
		t.Errorf("hijack on a writer that cannot: %v", err)
	}
	if sw.status != http.StatusBadGateway || rec.Code != http.StatusBadGateway || rec.Body.String() != "part 1, part 2" || rec.Header().Get("X-Up") != "1" {
		t.Errorf("status %d, client got %d %q %v", sw.status, rec.Code, rec.Body, rec.Header())
	}
	if sw.Unwrap() != rec {
		t.Error("Unwrap does not return the client's writer")
	}
	sw.put()
	// A body without a header is a 200.
	rec = httptest.NewRecorder()
	sw = newStatusWriter(rec)
	if _, err := sw.Write([]byte("x")); err != nil || sw.status != http.StatusOK || rec.Code != http.StatusOK {
		t.Errorf("implicit 200: %v %d %d", err, sw.status, rec.Code)
	}
	sw.put()
}

// TestSetUint: setUint sets what Header.Set would, in one allocation.
func TestSetUint(t *testing.T) {
	for _, n := range []uint64{0, 7, 1 << 22, 1<<64 - 1} {
		h := http.Header{}
		setUint(h, keyBalance, n)
		want := http.Header{}
		want.Set(HeaderBalance, strconv.FormatUint(n, 10))
		if !reflect.DeepEqual(h, want) {
			t.Errorf("%d: %v, Header.Set: %v", n, h, want)
		}
	}
	h := http.Header{keyCredit: nil}
	if a := testing.AllocsPerRun(100, func() { setUint(h, keyBalance, 1<<22) }); a != 1 {
		t.Errorf("setUint: %v allocations", a)
	}
}
