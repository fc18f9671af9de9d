package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/blindfund"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"go.uber.org/zap"
)

// Anonymous books (docs/PROTOCOL.md §19): their lane opens carry the
// broker's blind signature under a denomination instead of a book
// certificate. The gate learns the denominations from its brokers (each
// certified by a broker key it trusts), verifies a book's signature once
// (the signature cache), and registers the book at the broker at its
// first lane open, so that the broker can pay for it.

// denominationFetchEvery bounds how often a proof naming an unknown
// denomination makes the gate fetch the published ones.
const denominationFetchEvery = 5 * time.Second

// maxDenominationList bounds a fetched list of denominations.
const maxDenominationList = 1 << 20

// denominations fetches the brokers' published denominations into a
// blindfund.Set, on demand (a denomination never changes once
// published: a fetched one is kept).
type denominations struct {
	set     *blindfund.Set
	sources []string
	client  *http.Client
	logger  *zap.Logger

	mu   sync.Mutex // one fetch at a time
	last time.Time
}

// newDenominations makes the gate's denomination set: sources are the
// Denominations option, or the broker's GET /v1/denominations.
func (g *Gate) newDenominations() *denominations {
	sources := g.Denominations
	if len(sources) == 0 && g.Broker != "" {
		sources = []string{strings.TrimRight(g.Broker, "/") + "/v1/denominations"}
	}
	d := &denominations{set: blindfund.NewSet(g.brokers, g.sigs), sources: sources, client: &http.Client{Timeout: 10 * time.Second}, logger: g.logger}
	d.set.Miss = d.fetchOnDemand
	return d
}

// fetchOnDemand fetches the sources, at most once per
// denominationFetchEvery; concurrent callers wait for the same fetch.
func (d *denominations) fetchOnDemand() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if time.Since(d.last) < denominationFetchEvery {
		return
	}
	d.last = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, src := range d.sources {
		if err := d.fetch(ctx, src); err != nil {
			d.logger.Warn("could not read a broker's denominations", zap.String("source", src), zap.Error(err))
		}
	}
}

func (d *denominations) fetch(ctx context.Context, src string) error {
	var raw []byte
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return err
		}
		resp, err := d.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		if raw, err = io.ReadAll(io.LimitReader(resp.Body, maxDenominationList)); err != nil {
			return err
		}
	} else {
		var err error
		if raw, err = os.ReadFile(src); err != nil {
			return err
		}
	}
	_, err := d.set.AddPublished(raw)
	return err
}

// registerAnonymous tells the broker of an anonymous book at its first
// lane open here (POST /v1/anonymous/books, signed by the vendor), so that
// the broker moves its face value from the anonymous pool to the book's
// escrow and redeems its coupons. Done once per book and gate process;
// the broker takes a repeat as a no-op.
func (g *Gate) registerAnonymous(ctx context.Context, o *coupons.Open) error {
	id := o.Book.Book.ID()
	if _, ok := g.anonHeld.Load(id); ok {
		return nil
	}
	body, err := json.Marshal(map[string]string{"book": string(spki.Transport(o.Book.Sexp())), "funding": string(spki.Transport(o.Blind))})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(g.BrokerTimeout))
	defer cancel()
	status, raw, err := g.brokerPost(ctx, "/v1/anonymous/books", body, 1<<16)
	if err := brokerAnswer(status, raw, err, coupons.CodeUnknownDenomination); err != nil {
		return err
	}
	g.anonHeld.Store(id, struct{}{})
	return nil
}
