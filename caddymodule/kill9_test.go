package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// runGateChild runs Caddy with the JSON config in the file cfg until it is
// killed: the child half of TestGateKill9.
func runGateChild(cfg string) {
	b, err := os.ReadFile(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := caddy.Load(b, true); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// SIGTERM stops the gate cleanly (its store flushed and closed);
	// SIGKILL is the crash.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	if err := caddy.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startGateChild(t *testing.T, cfgFile, addr string) *exec.Cmd {
	t.Helper()
	// os.Args[0] may have been rewritten by Caddy code run in other tests.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run", "^$")
	cmd.Env = append(os.Environ(), "ECOUPONS_GATE_CHILD="+cfgFile)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + "/premium/x"); err == nil {
			resp.Body.Close()
			return cmd
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	t.Fatal("the gate child did not start")
	return nil
}

// TestGateKill9 kills a gate (bolt store, lease 1: every coupon durable
// before it is accepted) with SIGKILL while clients pay,
// restarts it on the same files, and replays every payment the killed
// gate had accepted: the restarted gate accepts none of them, and goes on
// accepting new coupons.
func TestGateKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test skipped in -short mode")
	}
	w := newWorldL(t, "news.example", t0Later(), 1<<15)
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "caddy")},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"gate": map[string]any{
			"listen": []string{addr}, "automatic_https": map[string]any{"disable": true},
			"routes": []any{map[string]any{"handle": []any{
				map[string]any{"handler": "ecoupon", "vendor": "news.example", "broker_keys": []string{w.brokerKeyFile}, "price": 1,
					"lane_rate": -1, "lease": 1, "secret_file": filepath.Join(dir, "secret"),
					"store": map[string]any{"backend": "bolt", "path": filepath.Join(dir, "spent.db")}},
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
	nonce := nonceRe.FindStringSubmatch(resp.Header.Get("WWW-Authenticate"))[1]

	const lanes = 4
	var mu sync.Mutex
	var accepted []http.Header
	clients := make([]*client, lanes)
	for l := range clients {
		clients[l] = newClient(t, nil, w.owner, uint32(l))
		clients[l].nonce = nonce
	}
	send := func(h http.Header) (int, error) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/premium/x", nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// Pay from every lane until the gate dies under us.
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
				if c.cursor.Remaining() < 16 {
					return
				}
				h := c.paymentFor(addr, "GET", "/premium/x", 1)
				code, err := send(h)
				if err != nil {
					return // killed
				}
				if code == 200 {
					mu.Lock()
					accepted = append(accepted, http.Header{"Authorization": h["Authorization"]})
					mu.Unlock()
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
	mu.Lock()
	n := len(accepted)
	mu.Unlock()
	if n < 20 {
		t.Fatalf("only %d payments accepted before the kill", n)
	}

	child = startGateChild(t, cfgFile, addr)
	// Each replay carries its lane's open too: a gate that had forgotten
	// the lane would reopen it and take the coupon again.
	opens := map[string]string{}
	for _, c := range clients {
		o, err := c.h.Open(c.lane.Lane, nonce)
		if err != nil {
			t.Fatal(err)
		}
		opens[c.lane.String()] = string(spki.Transport(o.Sexp()))
	}
	for k, h := range accepted {
		var p coupons.Payment
		if err := coupons.ParsePayment(h.Get("Authorization"), &p); err != nil {
			t.Fatal(err)
		}
		h.Set(HeaderOpen, opens[p.Lane.String()])
		code, err := send(h)
		if err != nil {
			t.Fatal(err)
		}
		if code == 200 {
			t.Fatalf("payment %d of %d, accepted before the kill, was accepted again after the restart", k, n)
		}
	}
	// Fresh coupons still pay (the cursors moved past everything sent).
	for _, c := range clients {
		if code, err := send(c.paymentFor(addr, "GET", "/premium/x", 1)); err != nil || code != 200 {
			t.Fatalf("new coupon after the restart: %d %v", code, err)
		}
	}
	t.Logf("%d payments accepted before SIGKILL; none accepted again after restart", n)
}
