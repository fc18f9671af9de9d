package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
)

// TestGateKill9WithinLease kills a gate on the default bolt store and
// default lease (its lanes' positions only reserved durably) with SIGKILL
// while clients pay on 4 lanes, and restarts it on the same files:
//   - every payment accepted before the kill, replayed (with its lane's
//     open), is refused: no coupon is accepted twice;
//   - each client's next coupon is accepted or refused as coupon_spent
//     with a resume point at most the advertised lease past it, and the
//     coupon there is accepted;
//   - after a clean stop, the store's redemption outbox claims, for every
//     lane, exactly the highest coupon accepted on it (what the broker
//     will pay).
func TestGateKill9WithinLease(t *testing.T) { testGateKill9WithinLease(t, "bolt") }

// TestPebbleGateKill9WithinLease is the same kill on the pebble store.
func TestPebbleGateKill9WithinLease(t *testing.T) { testGateKill9WithinLease(t, "pebble") }

func testGateKill9WithinLease(t *testing.T, backend string) {
	if testing.Short() {
		t.Skip("kill -9 test skipped in -short mode")
	}
	w := newWorldL(t, "news.example", t0Later(), 1<<15)
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dbPath := filepath.Join(dir, "spent.db")
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "caddy")},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"gate": map[string]any{
			"listen": []string{addr}, "automatic_https": map[string]any{"disable": true},
			"routes": []any{map[string]any{"handle": []any{
				map[string]any{"handler": "ecoupon", "vendor": "news.example", "broker_keys": []string{w.brokerKeyFile}, "price": 1,
					"lane_rate": -1, "secret_file": filepath.Join(dir, "secret"),
					"store": map[string]any{"backend": backend, "path": dbPath}},
				map[string]any{"handler": "static_response", "body": "paid"}}}}}}}},
	}
	raw, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "caddy.json")
	if err := os.WriteFile(cfgFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	child := startGateChild(t, cfgFile, addr)
	defer func() { child.Process.Kill(); child.Wait() }()

	resp, err := http.Get("http://" + addr + "/premium/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ch := resp.Header.Get("WWW-Authenticate")
	nonce := nonceRe.FindStringSubmatch(ch)[1]
	lease := uint32(DefaultLease)
	if want := fmt.Sprintf("lease=%d", lease); !strings.Contains(ch, want) {
		t.Fatalf("the challenge does not advertise %s: %s", want, ch)
	}

	const lanes = 4
	var mu sync.Mutex
	var accepted []http.Header
	highest := map[coupons.LaneID]uint32{} // the client's log: highest accepted coupon per lane
	clients := make([]*client, lanes)
	for l := range clients {
		clients[l] = newClient(t, nil, w.owner, uint32(l))
		clients[l].nonce = nonce
	}
	send := func(h http.Header) (int, string, error) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/premium/x", nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var p struct {
			Error  string `json:"error"`
			Resume uint32 `json:"resume"`
		}
		json.Unmarshal(body, &p)
		if p.Error == "coupon_spent" {
			return resp.StatusCode, fmt.Sprint(p.Resume), nil
		}
		return resp.StatusCode, p.Error, nil
	}
	record := func(h http.Header) {
		var p coupons.Payment
		if err := coupons.ParsePayment(h.Get("Authorization"), &p); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		accepted = append(accepted, http.Header{"Authorization": h["Authorization"]})
		highest[p.Lane] = max(highest[p.Lane], p.Index)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for l := 0; l < lanes; l++ {
		wg.Add(1)
		go func(c *client) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c.cursor.Remaining() < 2*lease {
					return
				}
				h := c.paymentFor(addr, "GET", "/premium/x", 1)
				code, _, err := send(h)
				if err != nil {
					return // killed
				}
				if code == 200 {
					record(h)
				}
			}
		}(clients[l])
	}
	time.Sleep(700 * time.Millisecond)
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	close(stop)
	wg.Wait()
	n := len(accepted)
	if n < 20 {
		t.Fatalf("only %d payments accepted before the kill", n)
	}

	child = startGateChild(t, cfgFile, addr)
	opens := map[string]string{}
	for _, c := range clients {
		o, err := c.h.Open(c.lane.Lane, nonce)
		if err != nil {
			t.Fatal(err)
		}
		opens[c.lane.String()] = string(spki.Transport(o.Sexp()))
	}
	for k, h := range accepted[:n] {
		var p coupons.Payment
		if err := coupons.ParsePayment(h.Get("Authorization"), &p); err != nil {
			t.Fatal(err)
		}
		h.Set(HeaderOpen, opens[p.Lane.String()])
		code, _, err := send(h)
		if err != nil {
			t.Fatal(err)
		}
		if code == 200 {
			t.Fatalf("payment %d of %d, accepted before the kill, was accepted again after the restart", k, n)
		}
	}
	// Each client pays its next coupon; a lane the gate held a lease on
	// resumes past it, within the lease.
	resumed := 0
	for _, c := range clients {
		pos := c.cursor.Position()
		h := c.paymentFor(addr, "GET", "/premium/x", 1)
		code, why, err := send(h)
		if err != nil {
			t.Fatal(err)
		}
		if code != 200 {
			var resume uint32
			if _, err := fmt.Sscan(why, &resume); err != nil || code != 402 {
				t.Fatalf("lane %d after the restart: %d %s", c.lane.Lane, code, why)
			}
			if resume <= pos+1 || resume-1-pos > lease {
				t.Fatalf("lane %d resumes at %d, the client was at %d, lease %d", c.lane.Lane, resume, pos, lease)
			}
			for c.cursor.Position() < resume-1 {
				c.cursor.Next()
			}
			resumed++
			h = c.paymentFor(addr, "GET", "/premium/x", 1)
			if code, why, err = send(h); err != nil || code != 200 {
				t.Fatalf("lane %d at its resume point %d: %d %s %v", c.lane.Lane, resume, code, why, err)
			}
		}
		record(h)
		// And a few more from memory, within the new lease.
		for k := 0; k < 3; k++ {
			h := c.paymentFor(addr, "GET", "/premium/x", 1)
			if code, why, err := send(h); err != nil || code != 200 {
				t.Fatalf("lane %d after resuming: %d %s %v", c.lane.Lane, code, why, err)
			}
			record(h)
		}
	}
	if resumed == 0 {
		t.Error("no lane had to resume after the kill: the gate held no lease (is the default lease on?)")
	}
	// A clean stop writes every exact position; the outbox then claims
	// exactly the highest coupon accepted per lane.
	if err := child.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := child.Wait(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	var db store.Store
	if backend == "pebble" {
		db, err = store.OpenPebble(dbPath, store.PebbleOptions{})
	} else {
		db, err = store.OpenBolt(dbPath, store.BoltOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pend, err := db.Pending(context.Background(), time.Now().Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	claimed := map[coupons.LaneID]uint32{}
	for _, p := range pend {
		claimed[p.ID] = p.Index
	}
	for id, want := range highest {
		if claimed[id] != want {
			t.Errorf("lane %s: the outbox claims coupon %d, the client's highest accepted is %d", id, claimed[id], want)
		}
		rec, err := db.Get(context.Background(), id)
		if err != nil || rec.State.Last != want || rec.Lease > rec.State.Last {
			t.Errorf("lane %s after a clean stop: last %d lease %d (%v), want last %d and no reservation left", id, rec.State.Last, rec.Lease, err, want)
		}
	}
	t.Logf("%d payments accepted before SIGKILL, none again after; %d of %d lanes resumed within lease %d", n, resumed, lanes, lease)
}
