package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
)

// These are the attacks a review of the takeover found, kept as tests.

// openDoc builds h's open of lane s for nonce with portion end (0: as
// held), signed by h, then lets edit change the unsigned parts.
func openDoc(t *testing.T, h *delegation.Holder, s uint32, nonce string, end uint32, edit func(*coupons.Open)) string {
	t.Helper()
	o, err := h.Open(s, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if end != 0 {
		o.End = end
		if err := o.SignOpen(h.Signer, nonce); err != nil {
			t.Fatal(err)
		}
	}
	if edit != nil {
		edit(o)
	}
	return string(spki.Transport(o.Sexp()))
}

func payWithOpen(auth, open string) http.Header {
	h := http.Header{}
	h.Set("Authorization", auth)
	h.Set(HeaderOpen, open)
	return h
}

// TestTakeoverWalkNotRepeatableByOwnKey: an owner whose lanes hold 2^22
// coupons sends its own opens with alternating portion ends and a garbage
// last coupon, hoping that each counts as a takeover allowed a walk of
// 2^22 hashes. Its own opens change nothing (same spender), so the walk
// stays within max_jump and each attempt is refused at once.
func TestTakeoverWalkNotRepeatableByOwnKey(t *testing.T) {
	const L = 1 << 22
	w := newWorldL(t, "news.example", t0Later(), L)
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	lane := coupons.LaneID{Book: w.owner.Book.Book.ID(), Lane: 0}
	nonce := gateNonce(g)
	garbage := coupons.Pay(lane, L, coupons.Value{1}, nil, nil) // the lane's last coupon: no m needed
	for k := 0; k < 4; k++ {
		doc := openDoc(t, w.owner, 0, nonce, uint32(L-1-k%2), nil)
		start := time.Now()
		rec := serve(g, "GET", "/premium/x", payWithOpen(garbage.Header(), doc))
		if took := time.Since(start); rec.Code != 402 || took > 100*time.Millisecond {
			t.Fatalf("attempt %d: %d after %v: %s", k, rec.Code, took, rec.Body)
		}
	}
}

// TestRevokedDeviceCannotClearItsMark: a phone's lane is marked revoked in
// the store; at a gate with no list, the phone opens it again under other
// principals (its user certificate left out, a junk certificate added, a
// new portion end) hoping the store takes that for a takeover. It is
// refused: it shares its own key and grant with the marked chain.
func TestRevokedDeviceCannotClearItsMark(t *testing.T) {
	for _, variant := range []string{"strip-user", "junk-cert", "same-open"} {
		t.Run(variant, func(t *testing.T) {
			w := newWorld(t, "news.example", t0Later())
			g := newGate(t, w, `{"backend":"memory"}`, 1)
			phone := grantDevice(t, "phone", w.owner, 0, 0, delegation.GrantOptions{Cap: 20 * 1_000_000})
			pc := newClient(t, nil, phone, 0)
			pc.nonce = gateNonce(g)
			mustPay(t, g, pc, 1, "the phone")
			r := laneAt(t, g, phone, 0)
			if err := g.store.MarkRevoked(context.Background(), pc.lane, r.Meta.Certs, r.Meta.Keys); err != nil {
				t.Fatal(err)
			}
			g.core.ClearCache()
			pc.opened, pc.nonce = false, gateNonce(g)
			pc.editOpen = func(o *coupons.Open) {
				if variant == "same-open" {
					return
				}
				o.End = 4
				if err := o.SignOpen(phone.Signer, o.Nonce); err != nil {
					t.Fatal(err)
				}
				if variant == "strip-user" {
					o.User = nil
					return
				}
				nk, _ := spki.NewPublicKey(testKey("nobody").Public())
				jc := &spki.Cert{Issuer: spki.KeyPrincipal(nk), Subject: spki.HashPrincipal(keyHash("nobody2")), Tag: o.Delegation[0].Cert.Tag}
				junk, err := spki.SignCert(jc, testKey("nobody"))
				if err != nil {
					t.Fatal(err)
				}
				o.Delegation = append(o.Delegation, junk)
			}
			wantRefusal(t, payOn(t, g, pc), 402, "revoked")
			if r := laneAt(t, g, phone, 0); !r.Meta.Revoked || r.State.Last != 1 {
				t.Fatalf("the lane: revoked %v at %d", r.Meta.Revoked, r.State.Last)
			}
		})
	}
}

// TestReplayedOpenCannotTakeLaneBack: the owner reclaims lane 0 from the
// phone; someone who saw the phone's open replays it (its nonce still
// valid) by POST and with a payment. A delegate cannot take a lane from
// the issuer above it: refused (lane_in_use), and the owner goes on paying
// under its own open, with no theft reported.
func TestReplayedOpenCannotTakeLaneBack(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	phone := grantDevice(t, "phone", w.owner, 0, 0, delegation.GrantOptions{Cap: 5 * 1_000_000})
	pc := newClient(t, nil, phone, 0)
	pc.nonce = gateNonce(g)
	captured := openDoc(t, phone, 0, pc.nonce, 0, nil)
	mustPay(t, g, pc, 2, "the phone")
	oc := reclaimer(t, w.owner, 0, 5)
	oc.nonce = gateNonce(g)
	mustPay(t, g, oc, 1, "the owner's reclaim")
	thefts := gateThefts()

	req := httptest.NewRequest("POST", "http://localhost:9080"+OpenPath, strings.NewReader(captured))
	rr := httptest.NewRecorder()
	if err := g.ServeHTTP(rr, req, okHandler); err != nil || rr.Code != 402 || errorCode(t, rr.Body.String()) != "lane_in_use" {
		t.Fatalf("the replayed open: %d %s", rr.Code, rr.Body)
	}
	d := [32]byte{}
	p := coupons.Pay(pc.lane, 7, coupons.Value{7}, &coupons.Value{8}, &d)
	wantRefusal(t, serve(g, "GET", "/premium/x", payWithOpen(p.Header(), captured)), 402, "lane_in_use")
	if r := laneAt(t, g, w.owner, 0); r.Meta.Spender != w.owner.Book.Book.Owner {
		t.Fatal("the replay gave the lane back to the phone")
	}
	mustPay(t, g, oc, 4, "the owner after the replays")
	if gateThefts() != thefts {
		t.Error("the owner's payments were reported as theft")
	}
}

// TestOwnerReopensMarkedLaneWithoutRevokedCertificate: the owner's own
// lane is marked (say the broker revoked its user certificate, which only
// names its account); the owner opens it again without that certificate
// and pays on: its key and the book's certificate are not revoked.
func TestOwnerReopensMarkedLaneWithoutRevokedCertificate(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	oc := newClient(t, nil, w.owner, 1)
	oc.nonce = gateNonce(g)
	mustPay(t, g, oc, 1, "the owner")
	r := laneAt(t, g, w.owner, 1)
	if err := g.store.MarkRevoked(context.Background(), oc.lane, r.Meta.Certs, r.Meta.Keys); err != nil {
		t.Fatal(err)
	}
	g.core.ClearCache()
	oc.opened, oc.nonce = false, gateNonce(g)
	oc.editOpen = func(o *coupons.Open) { o.User = nil }
	mustPay(t, g, oc, 1, "the owner, reopening without its user certificate")
	if r := laneAt(t, g, w.owner, 1); r.Meta.Revoked || r.State.Last != 2 {
		t.Fatalf("the lane: revoked %v at %d", r.Meta.Revoked, r.State.Last)
	}
}
