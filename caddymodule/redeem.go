package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/coupons"
	"go.uber.org/zap"
)

// redeemBatch is the most lanes sent to the broker in one request.
const redeemBatch = 500

// redeemLoop submits the store's pending lanes to the broker every
// RedeemEvery until ctx ends. Nothing is lost on a crash: lanes stay
// pending in the store until the broker's answer is recorded, and the
// broker pays each coupon once however often it is submitted.
func (g *Gate) redeemLoop(ctx context.Context) {
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

// redeemOnce sends every pending lane (in batches) and records what the
// broker paid. It returns the number of lanes the broker acknowledged.
func (g *Gate) redeemOnce(ctx context.Context) (int, error) {
	acked := 0
	seen := map[coupons.LaneID]bool{}
	for {
		pending, err := g.store.Pending(ctx, redeemBatch)
		if err != nil {
			return acked, err
		}
		var items []broker.RedeemItem
		var batch []int
		for k, p := range pending {
			if seen[p.ID] {
				continue // refused earlier in this run: do not loop on it
			}
			seen[p.ID] = true
			it := broker.RedeemItem{Lane: p.ID.String(), Index: p.Index, Value: base64.RawURLEncoding.EncodeToString(p.Value[:])}
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
		if err != nil {
			return acked, err
		}
		if len(results) != len(items) {
			return acked, fmt.Errorf("the broker answered %d results for %d lanes", len(results), len(items))
		}
		for i, r := range results {
			p := pending[batch[i]]
			if r.Error != "" {
				gateMetrics.redemptions.WithLabelValues(g.Vendor, "refused").Inc()
				g.logger.Error("the broker refused a redemption; the lane stays pending", zap.String("lane", p.ID.String()), zap.String("reason", r.Error))
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

func (g *Gate) postRedeem(ctx context.Context, items []broker.RedeemItem) ([]broker.RedeemOutcome, error) {
	body, err := json.Marshal(map[string]any{"items": items})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(g.Broker, "/")+"/v1/redeem", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if err := broker.SignRequest(req, body, g.vendorSigner, time.Now()); err != nil {
		return nil, err
	}
	resp, err := g.httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("broker answered %d: %s", resp.StatusCode, bytes.TrimSpace(raw))
	}
	var out struct {
		Results []broker.RedeemOutcome `json:"results"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("broker's answer: %w", err)
	}
	return out.Results, nil
}
