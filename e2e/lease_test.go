package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/stack"
	"github.com/ecoupons/ecoupons/wallet"
)

// TestGateKilledWithinLease: a broker and one gate on the default bolt
// store and default spending lease, as processes of the built binary; a
// wallet pays from 4 lanes at once and the gate is killed with SIGKILL
// under that load, then restarted. The wallet resumes every lane where
// the gate says, within the lease its challenge advertises (every request
// after the restart is served), and the broker ends up paying the vendor
// exactly for the highest coupon the gate accepted on each lane, as the
// wallet's log of receipts (one per accepted payment) says.
func TestGateKilledWithinLease(t *testing.T) {
	env := setup(t)
	keys := env.keys
	_, vendorKey, _ := ed25519.GenerateKey(rand.Reader)
	writeKey(t, filepath.Join(keys, "vendor.pem"), vendorKey)
	brokerAddr, gateAddr := freeAddr(t), freeAddr(t)
	brk := env.broker(brokerAddr)
	gate := env.proc("gate", gateAddr, fmt.Sprintf("\tecoupon /premium/* {\n\t\tvendor news.example\n\t\tbroker http://%s\n\t\tbroker_key %s\n\t\tvendor_key %s\n"+
		"\t\tredeem_every 1s\n\t\tlane_rate -1\n\t}\n\trespond /premium/* \"paid\"",
		brokerAddr, filepath.Join(keys, "broker.pub"), filepath.Join(keys, "vendor.pem")))
	brk.start()
	defer brk.kill()
	gate.start()
	defer gate.kill()

	s := &stack.Stack{Broker: brokerAddr, AdminKey: env.admin, VendorKey: vendorKey, BrokerPub: env.brokerPub}
	alice := stack.NewKey()
	_, user, err := s.NewUser(alice, "5")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterVendor(); err != nil {
		t.Fatal(err)
	}
	const lanes, length = 4, 1024
	owner, _, err := s.NewBook(alice, user, lanes, length)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := wallet.OpenTransport(owner, filepath.Join(env.dir, "wallet", "lanes.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	receipts := wallet.OpenReceiptLog(filepath.Join(env.dir, "wallet"))
	tr.Receipts = receipts
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func() (int, error) {
		resp, err := client.Get("http://" + gateAddr + "/premium/x")
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	// Load from 4 workers (one lane each in flight) until the gate dies.
	var served atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if code, err := get(); err == nil && code == 200 {
					served.Add(1)
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	gate.kill()
	close(stop)
	wg.Wait()
	before := served.Load()
	if before < 40 {
		t.Fatalf("only %d requests served before the kill", before)
	}
	gate.start()

	// After the restart every request is served: the wallet follows the
	// gate's resume points within its lease.
	var failed atomic.Int64
	var errs sync.Map
	for w := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				code, err := get()
				if err != nil || code != 200 {
					failed.Add(1)
					errs.Store(w, fmt.Sprintf("%d %v", code, err))
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		errs.Range(func(k, v any) bool { t.Errorf("worker %v: %v", k, v); return true })
		t.Fatalf("%d requests after the restart were not served", failed.Load())
	}

	// The client's log: the highest accepted coupon of each lane.
	recs, err := receipts.Records()
	if err != nil {
		t.Fatal(err)
	}
	highest := map[string]uint32{}
	for _, r := range recs {
		highest[r.Lane] = max(highest[r.Lane], r.Index)
	}
	var total uint32
	for _, i := range highest {
		total += i
	}
	want := coupons.FormatAmount(int64(total) * coupons.NanosPerUnit / 1000)
	if err := s.WaitPaid(want, 30*time.Second); err != nil {
		t.Fatalf("%v (the gate accepted up to %v: %d coupons; %d requests served before the kill, %d in all)", err, highest, total, before, before+lanes*20)
	}
	t.Logf("%d requests served before SIGKILL, %d after; the broker paid exactly the %d coupons accepted (%s EUR) on %d lanes",
		before, lanes*20, total, want, len(highest))
}
