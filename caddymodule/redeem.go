package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/brokerapi"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
	"go.uber.org/zap"
)

// redeemBatch is the most lanes sent to the broker in one request.
const redeemBatch = 500

// redeemLoop submits the store's pending lanes to the broker every
// RedeemEvery until ctx ends. Nothing is lost on a crash: lanes stay
// pending in the store until the broker's answer is recorded, and the
// broker pays each coupon once however often it is submitted.
func (g *Gate) redeemLoop(ctx context.Context) {
	g.logVendorCheck(ctx)
	t := time.NewTicker(time.Duration(g.RedeemEvery))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := g.redeemOnce(ctx); err != nil {
				g.logger.Warn("redemption at the broker failed; the lanes stay pending and are retried", zap.Error(err))
			}
		}
	}
}

// maxRedeemBackoff caps the wait of a lane the broker refused for now
// (or whose batch failed), unless redeem_every is longer.
const maxRedeemBackoff = time.Hour

// redeemDelay is how long a lane waits after its tries-th consecutive
// temporary failure: every × 2^(tries−1), at most the larger of every and
// maxRedeemBackoff.
func redeemDelay(every time.Duration, tries uint32) time.Duration {
	limit := max(every, maxRedeemBackoff)
	d := every
	for n := uint32(1); n < tries && d < limit; n++ {
		d *= 2
	}
	return min(d, limit)
}

// redeemNow is the redemption worker's clock (a test's, or time.Now).
func (g *Gate) redeemNow() time.Time {
	if g.redeemClock != nil {
		return g.redeemClock()
	}
	return time.Now()
}

// redeemOnce sends every pending lane that is due (in batches, those that
// have waited longest first) and records what the broker paid. A lane the
// broker refuses for good leaves the pending set with its reason
// (store.Refuse); one it refuses for now, or whose batch failed, backs off
// (store.Postpone). A failed batch ends the run, after its lanes were
// postponed, so that the next run starts with other lanes. It returns the
// number of lanes the broker acknowledged.
func (g *Gate) redeemOnce(ctx context.Context) (int, error) {
	// The broker must hold the anonymous books an offline gate accepted
	// while it could not be told, before it is asked to pay for them.
	if err := g.registerPending(ctx); err != nil {
		return 0, fmt.Errorf("registering anonymous books: %w", err)
	}
	acked := 0
	start := g.redeemNow()
	every := time.Duration(g.RedeemEvery)
	seen := map[coupons.LaneID]bool{}
	for {
		// Lanes sent in this run are due after start (paid with newer
		// coupons, postponed) or gone, so each query brings new lanes;
		// seen guards against a clock that steps back.
		pending, err := g.store.Pending(ctx, start, redeemBatch)
		if err != nil {
			return acked, err
		}
		var items []brokerapi.RedeemItem
		var batch []int
		for k, p := range pending {
			if seen[p.ID] {
				continue
			}
			seen[p.ID] = true
			it := brokerapi.RedeemItem{Lane: p.ID.String(), Index: p.Index, Value: base64.RawURLEncoding.EncodeToString(p.Value[:])}
			if th, ok := g.thefts.peek(p.ID); ok {
				enc := base64.RawURLEncoding.EncodeToString
				it.Theft = &brokerapi.TheftItem{Index: th.Index, Digest: enc(th.Digest[:]), MAC: enc(th.MAC[:]), Next: enc(th.Next[:])}
			}
			if p.Redeemed == 0 {
				it.Anchor = base64.RawURLEncoding.EncodeToString(p.Anchor[:])
				for _, h := range p.Proof {
					it.Proof = append(it.Proof, base64.RawURLEncoding.EncodeToString(h[:]))
				}
			}
			items = append(items, it)
			batch = append(batch, k)
		}
		if len(items) == 0 {
			return acked, nil
		}
		results, err := g.postRedeem(ctx, items)
		if err == nil && len(results) != len(items) {
			err = fmt.Errorf("the broker answered %d results for %d lanes", len(results), len(items))
		}
		if err != nil {
			// The broker unreachable, a 5xx, an answer that does not parse:
			// every lane of the batch backs off.
			for _, k := range batch {
				p := pending[k]
				if perr := g.store.Postpone(ctx, p.ID, g.redeemNow().Add(redeemDelay(every, p.Tries+1))); perr != nil {
					return acked, errors.Join(err, perr)
				}
			}
			gateMetrics.redemptions.WithLabelValues(g.Vendor, "failed").Add(float64(len(items)))
			return acked, err
		}
		for i, r := range results {
			p := pending[batch[i]]
			if items[i].Theft != nil && (r.Theft != "" || brokerapi.RedeemPermanent(r.Code)) {
				// Recorded, or refused for good (the evidence, or its lane,
				// which will not be sent again): either way it is done.
				g.thefts.drop(p.ID, items[i].Theft.Index)
				g.logger.Warn("theft evidence sent to the broker", zap.String("lane", p.ID.String()), zap.Uint32("index", items[i].Theft.Index), zap.String("outcome", r.Theft))
			}
			if r.Error != "" {
				if err := g.redeemRefused(ctx, p, r, every); err != nil {
					return acked, err
				}
				continue
			}
			if err := g.store.Redeemed(ctx, p.ID, p.Index); err != nil {
				return acked, err
			}
			gateMetrics.redemptions.WithLabelValues(g.Vendor, "paid").Inc()
			acked++
		}
	}
}

// redeemRefused records the broker's refusal of lane p: for good when its
// code says so (brokerapi.RedeemPermanent), the lane then leaving the pending
// set with its reason, logged once; else the lane backs off. A refusal
// without a code (an older broker) counts as temporary.
func (g *Gate) redeemRefused(ctx context.Context, p store.Pending, r brokerapi.RedeemOutcome, every time.Duration) error {
	if brokerapi.RedeemPermanent(r.Code) {
		ref := store.Refusal{ID: p.ID, Index: p.Index, Code: r.Code, Message: r.Error, At: g.redeemNow()}
		if err := g.store.Refuse(ctx, ref); err != nil {
			return err
		}
		gateMetrics.redemptions.WithLabelValues(g.Vendor, "refused").Inc()
		g.logger.Error("the broker refused a redemption for good; the lane leaves the pending set (store.Refusals lists it)",
			zap.String("lane", p.ID.String()), zap.Uint32("index", p.Index), zap.String("code", r.Code), zap.String("reason", r.Error))
		return nil
	}
	delay := redeemDelay(every, p.Tries+1)
	if err := g.store.Postpone(ctx, p.ID, g.redeemNow().Add(delay)); err != nil {
		return err
	}
	gateMetrics.redemptions.WithLabelValues(g.Vendor, "retry").Inc()
	g.logger.Warn("the broker refused a redemption for now; the lane stays pending and backs off",
		zap.String("lane", p.ID.String()), zap.Uint32("index", p.Index), zap.String("code", r.Code), zap.String("reason", r.Error),
		zap.Uint32("tries", p.Tries+1), zap.Duration("retry_in", delay))
	return nil
}

func (g *Gate) postRedeem(ctx context.Context, items []brokerapi.RedeemItem) ([]brokerapi.RedeemOutcome, error) {
	body, err := json.Marshal(map[string]any{"items": items})
	if err != nil {
		return nil, err
	}
	status, raw, err := g.brokerPost(ctx, "/v1/redeem", body, 16<<20)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("broker answered %d: %s", status, bytes.TrimSpace(raw))
	}
	var out struct {
		Results []brokerapi.RedeemOutcome `json:"results"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("broker's answer: %w", err)
	}
	return out.Results, nil
}

// brokerPost POSTs body to path at the broker, signed with the vendor's
// key, and returns the status and up to limit bytes of the answer.
func (g *Gate) brokerPost(ctx context.Context, path string, body []byte, limit int64) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(g.Broker, "/")+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	aud, err := g.brokerAudience(ctx)
	if err != nil {
		return 0, nil, err
	}
	if err := brokerapi.SignRequest(req, body, g.vendorSigner, aud, time.Now()); err != nil {
		return 0, nil, err
	}
	resp, err := g.httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	return resp.StatusCode, raw, err
}

// audience is the key hash of the gate's broker, once known.
type audience struct {
	mu    sync.Mutex
	hash  spki.KeyHash
	known bool
}

// brokerAudience is the key hash of the broker at g.Broker, which the
// gate's signed requests name (so that the broker refuses them anywhere
// else): the gate's broker_key when it has one; with several, the one the
// broker's GET /v1/broker answers, which must be among them (asked once).
func (g *Gate) brokerAudience(ctx context.Context) (spki.KeyHash, error) {
	if len(g.brokers) == 1 {
		return g.brokers[0].Hash(), nil
	}
	a := g.aud
	if a == nil {
		a = &audience{} // not provisioned: ask every time
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.known {
		return a.hash, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(g.Broker, "/")+"/v1/broker", nil)
	if err != nil {
		return spki.KeyHash{}, err
	}
	resp, err := g.httpClient.Do(req)
	if err != nil {
		return spki.KeyHash{}, fmt.Errorf("the broker's key: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return spki.KeyHash{}, fmt.Errorf("the broker's key: %w", err)
	}
	x, err := spki.Parse(raw)
	if err != nil {
		return spki.KeyHash{}, fmt.Errorf("the broker's key: %w", err)
	}
	k, err := spki.ParsePublicKey(x)
	if err != nil {
		return spki.KeyHash{}, fmt.Errorf("the broker's key: %w", err)
	}
	for _, b := range g.brokers {
		if b.Equal(k) {
			a.hash, a.known = k.Hash(), true
			return a.hash, nil
		}
	}
	return spki.KeyHash{}, fmt.Errorf("the broker at %s has the key %s, which is none of this gate's broker_key", g.Broker, k.Hash())
}

// maxQueuedThefts bounds the theft evidence a gate holds in memory.
const maxQueuedThefts = 4096

// theftQueue holds theft evidence until it rides on its lane's next
// redemption. It lives in memory: a gate that crashes before redeeming
// loses the evidence (it is logged when found), never money.
type theftQueue struct {
	mu sync.Mutex
	m  map[coupons.LaneID][]coupons.Theft
	n  int
}

func (q *theftQueue) add(id coupons.LaneID, t coupons.Theft) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n >= maxQueuedThefts {
		return false
	}
	if q.m == nil {
		q.m = map[coupons.LaneID][]coupons.Theft{}
	}
	q.m[id] = append(q.m[id], t)
	q.n++
	return true
}

func (q *theftQueue) peek(id coupons.LaneID) (coupons.Theft, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if ts := q.m[id]; len(ts) > 0 {
		return ts[0], true
	}
	return coupons.Theft{}, false
}

func (q *theftQueue) drop(id coupons.LaneID, index uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ts := q.m[id]
	for k, t := range ts {
		if t.Index == index {
			q.m[id] = append(ts[:k:k], ts[k+1:]...)
			q.n--
			break
		}
	}
	if len(q.m[id]) == 0 {
		delete(q.m, id)
	}
}
