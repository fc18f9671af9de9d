package caddymodule

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
//
// In the offline mode a broker that cannot be reached does not stop the
// open: the registration is written durably to the gate's pending
// directory first, and sent before the next redemption (registerPending),
// which pays nothing for the book's lanes until it succeeded.
func (g *Gate) registerAnonymous(ctx context.Context, o *coupons.Open) error {
	id := o.Book.Book.ID()
	if _, ok := g.anonHeld.Load(id); ok {
		return nil
	}
	body, err := json.Marshal(map[string]string{"book": string(spki.Transport(o.Book.Sexp())), "funding": string(spki.Transport(o.Blind))})
	if err != nil {
		return err
	}
	err = g.postRegistration(ctx, id, body)
	if errors.Is(err, errBrokerUnavailable) && g.Mode == ModeOffline {
		if perr := writeFileDurably(g.anonPendingDir(), hex.EncodeToString(id[:])+".json", body); perr != nil {
			return errors.Join(err, perr)
		}
		g.logger.Warn("the broker could not be told of an anonymous book; its registration is kept and sent before the next redemption",
			zap.String("book", hex.EncodeToString(id[:8])), zap.Error(err))
		g.anonHeld.Store(id, struct{}{})
		return nil
	}
	return err
}

// postRegistration sends one registration; on success the book is known
// to be held.
func (g *Gate) postRegistration(ctx context.Context, id [32]byte, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(g.BrokerTimeout))
	defer cancel()
	status, raw, err := g.brokerPost(ctx, "/v1/anonymous/books", body, 1<<16)
	if err := brokerAnswer(status, raw, err, coupons.CodeUnknownDenomination); err != nil {
		return err
	}
	g.anonHeld.Store(id, struct{}{})
	return nil
}

// anonPendingDir holds the registrations of anonymous books an offline
// gate could not send yet, one file per book, beside the secret file.
func (g *Gate) anonPendingDir() string {
	return filepath.Join(filepath.Dir(g.SecretFile), g.Vendor+".anonymous")
}

// registerPending sends the kept registrations (registerAnonymous), each
// removed once the broker took it or refused it for good (its lanes are
// then refused at redemption, unknown_book). It stops at the first
// failure to reach the broker, which it returns: the redemption that
// follows would fail too.
func (g *Gate) registerPending(ctx context.Context) error {
	dir := g.anonPendingDir()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		return err
	}
	for _, f := range files {
		var id [32]byte
		if n, err := hex.Decode(id[:], []byte(strings.TrimSuffix(filepath.Base(f), ".json"))); err != nil || n != 32 {
			continue
		}
		body, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		err = g.postRegistration(ctx, id, body)
		var ref *brokerRefusal
		switch {
		case errors.As(err, &ref):
			g.logger.Error("the broker refused an anonymous book this gate accepted; its lanes will not be paid",
				zap.String("book", hex.EncodeToString(id[:8])), zap.String("code", ref.Code), zap.String("reason", ref.Reason))
		case err != nil:
			return err
		}
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	return nil
}

// writeFileDurably writes name in dir (made if missing) through a
// temporary file synced before it is renamed into place, and syncs the
// directory: after a crash the file is whole or absent.
func writeFileDurably(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".pending-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
