package wallet

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
)

// restartedGate refuses the first payment on each lane as coupon_spent,
// saying the lane resumes at resume (its lease advertised: lease), then
// accepts payments from there; it records the coupon index of each
// payment.
type restartedGate struct {
	lease, resume uint32
	refused       bool
	indexes       []uint32
}

func (f *restartedGate) RoundTrip(r *http.Request) (*http.Response, error) {
	resp := &http.Response{Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}")), Request: r}
	chal := fmt.Sprintf(`ECoupon realm="news.example", vendor="news.example", price=1, unit="0.001", currency="EUR", lease=%d, nonce="AAAAAAAAAAAAAAAAAAAAAA"`, f.lease)
	auth := r.Header.Get("Authorization")
	if auth == "" {
		resp.StatusCode = 402
		resp.Header.Set("WWW-Authenticate", chal)
		return resp, nil
	}
	var p coupons.Payment
	if err := coupons.ParsePayment(auth, &p); err != nil {
		return nil, err
	}
	f.indexes = append(f.indexes, p.Index)
	if !f.refused || p.Index < f.resume {
		f.refused = true
		resp.StatusCode = 402
		resp.Body = io.NopCloser(strings.NewReader(`{"error":"coupon_spent"}`))
		resp.Header.Set("WWW-Authenticate", fmt.Sprintf("%s, resume=%d", chal, f.resume))
		return resp, nil
	}
	resp.StatusCode = 200
	return resp, nil
}

func get(t *testing.T, tr *Transport) (*http.Response, error) {
	t.Helper()
	resp, err := (&http.Client{Transport: tr}).Get("http://news.example/x")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// TestResumeAfterGateRestartWithinLease: a gate that restarted within its
// spending lease refuses the wallet's next coupon as spent and says where
// the lane resumes; the wallet skips there (within the lease) and pays,
// counting the skipped coupons as spent.
func TestResumeAfterGateRestartWithinLease(t *testing.T) {
	tr := newTestTransport(t)
	gate := &restartedGate{lease: 8, resume: 9}
	tr.Base = gate
	resp, err := get(t, tr)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the gate's restart: %v %v", resp, err)
	}
	if len(gate.indexes) != 2 || gate.indexes[0] != 1 || gate.indexes[1] != 9 {
		t.Fatalf("coupons paid %v, want [1 9]", gate.indexes)
	}
	if tr.Spent() != 9 {
		t.Fatalf("spent %d, want 9 (1, 7 skipped, 9)", tr.Spent())
	}
}

// TestResumeBeyondLeaseRefused: a gate that asks the wallet to skip more
// coupons than the lease it advertises (a vendor taking coupons for
// nothing) is refused, and nothing more is revealed.
func TestResumeBeyondLeaseRefused(t *testing.T) {
	tr := newTestTransport(t)
	gate := &restartedGate{lease: 8, resume: 11}
	tr.Base = gate
	if _, err := get(t, tr); !errors.Is(err, ErrResumeRefused) {
		t.Fatalf("a resume 9 coupons past the wallet's, lease 8: %v", err)
	}
	if len(gate.indexes) != 1 || tr.Spent() != 1 {
		t.Fatalf("paid %v, spent %d: the hostile resume cost more than the refused coupon", gate.indexes, tr.Spent())
	}
}

// TestRepeatedResumeRefused: a gate that makes the same lane skip coupons
// again soon after (on every payment, say) is refused the second time.
func TestRepeatedResumeRefused(t *testing.T) {
	tr := newTestTransport(t)
	gate := &restartedGate{lease: 8, resume: 9}
	tr.Base = gate
	if _, err := get(t, tr); err != nil {
		t.Fatal(err)
	}
	// Both lanes are free again; make every lane skip once, then again.
	var err error
	for k := 0; k < 4 && err == nil; k++ {
		gate.refused, gate.resume = false, gate.indexes[len(gate.indexes)-1]+8
		_, err = get(t, tr)
	}
	if !errors.Is(err, ErrResumeRefused) {
		t.Fatalf("repeated resumes on the book's 2 lanes: %v", err)
	}
}
