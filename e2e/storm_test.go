package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/stack"
)

// TestBrokerKilledDuringRedemptionStorm: four submitters redeem rising
// coupon indexes on 32 lanes as fast as the broker answers, retrying a batch
// until it is acknowledged; the broker is killed with SIGKILL twice in the
// middle and restarted. Afterwards no acknowledged redemption is lost (each
// submitter's last acknowledged batch, sent again, pays nothing more), the
// vendor was paid exactly for the highest index of every lane, and the
// ledger's invariants hold.
func TestBrokerKilledDuringRedemptionStorm(t *testing.T) {
	env := setup(t)
	addr := freeAddr(t)
	brk := env.broker(addr)
	brk.start()
	defer brk.kill()
	_, vendorKey, _ := ed25519.GenerateKey(rand.Reader)
	s := &stack.Stack{Broker: addr, AdminKey: env.admin, VendorKey: vendorKey, BrokerPub: env.brokerPub}
	alice := stack.NewKey()
	if _, _, err := s.NewUser(alice, "200"); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterVendor(); err != nil {
		t.Fatal(err)
	}
	const lanesPerBook, length = 16, 1024
	type lane struct {
		id     coupons.LaneID
		tag    coupons.LaneTag
		seed   coupons.Value
		anchor string
		proof  []string
	}
	var lanes []lane
	for b := 0; b < 2; b++ {
		bk, err := s.MakeBook(alice, lanesPerBook, length)
		if err != nil {
			t.Fatal(err)
		}
		book := bk.Signed.Book
		for l := uint32(0); l < lanesPerBook; l++ {
			proof, err := coupons.MerkleProof(bk.Anchors, l)
			if err != nil {
				t.Fatal(err)
			}
			var ps []string
			for _, p := range proof {
				ps = append(ps, base64.RawURLEncoding.EncodeToString(p[:]))
			}
			lanes = append(lanes, lane{id: coupons.LaneID{Book: book.ID(), Lane: l}, tag: book.LaneTag(l), seed: bk.Secrets.Seed(l),
				anchor: base64.RawURLEncoding.EncodeToString(bk.Anchors[l][:]), proof: ps})
		}
	}
	batch := func(ls []lane, index uint32) []broker.RedeemItem {
		var items []broker.RedeemItem
		for _, l := range ls {
			w := coupons.Walk(&l.tag, length, l.seed, index)
			items = append(items, broker.RedeemItem{Lane: l.id.String(), Index: index, Value: base64.RawURLEncoding.EncodeToString(w[:]),
				Anchor: l.anchor, Proof: l.proof})
		}
		return items
	}
	type outcome struct {
		Results []broker.RedeemOutcome `json:"results"`
	}
	redeem := func(items []broker.RedeemItem) (*outcome, error) {
		var out outcome
		err := s.CallJSON(vendorKey, "POST", "/v1/redeem", map[string]any{"items": items}, &out)
		return &out, err
	}

	// The storm: submitter k owns lanes 8k..8k+7 and redeems indexes
	// 4, 8, …, 4·rounds, each batch until acknowledged.
	const submitters, rounds = 4, 60
	var wg sync.WaitGroup
	var mu sync.Mutex
	lastAcked := make([]uint32, submitters)
	failures, acked := 0, 0
	stop := time.Now().Add(2 * time.Minute)
	for k := 0; k < submitters; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := lanes[8*k : 8*k+8]
			for r := uint32(1); r <= rounds; r++ {
				items := batch(mine, 4*r)
				for {
					out, err := redeem(items)
					if err == nil {
						for _, o := range out.Results {
							if o.Error != "" {
								t.Errorf("lane %s at %d: %s", o.Lane, 4*r, o.Error)
							}
						}
						mu.Lock()
						lastAcked[k] = 4 * r
						acked++
						mu.Unlock()
						break
					}
					mu.Lock()
					failures++
					mu.Unlock()
					if time.Now().After(stop) {
						t.Errorf("submitter %d: the broker did not come back: %v", k, err)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	// Kill the broker a third and two thirds of the way through.
	progress := func() int { mu.Lock(); defer mu.Unlock(); return acked }
	for kill := 1; kill <= 2; kill++ {
		for progress() < kill*submitters*rounds/3 && time.Now().Before(stop) {
			time.Sleep(time.Millisecond)
		}
		brk.kill()
		time.Sleep(200 * time.Millisecond)
		brk.start()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if failures == 0 {
		t.Fatal("no batch failed: the broker was not killed during the storm (make the storm longer)")
	}
	// Nothing acknowledged was lost: every last batch, sent again, pays
	// nothing more.
	for k := 0; k < submitters; k++ {
		out, err := redeem(batch(lanes[8*k:8*k+8], lastAcked[k]))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Results {
			if o.Coupons != 0 || o.Error != "" {
				t.Errorf("lane %s redeemed again after the restarts: %+v", o.Lane, o)
			}
		}
	}
	want := coupons.FormatAmount(int64(len(lanes)) * 4 * rounds * coupons.NanosPerUnit / 1000)
	if got, err := s.VendorBalance(); err != nil || got != want {
		t.Fatalf("vendor paid %s EUR (%v), want %s", got, err, want)
	}
	brk.kill()
	db, err := broker.OpenSQLite(context.Background(), filepath.Join(env.dir, "broker.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.CheckInvariants(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d batches of 8 lanes through 2 SIGKILLs (%d attempts failed and were retried); the vendor was paid exactly %s EUR", submitters*rounds, failures, want)
}
