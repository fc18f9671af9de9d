package caddymodule

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
	"go.uber.org/zap"
)

// maxRevocationList bounds a fetched revocation list.
const maxRevocationList = 16 << 20

// revocations holds the verified lists of the gate's brokers and keeps
// them fresh. It implements coupons.Revocations.
type revocations struct {
	dir      string // where the newest list of each broker is kept ("" : nowhere)
	sources  []string
	checkers map[spki.KeyHash]*delegation.Checker
	brokers  []*spki.PublicKey
	client   *http.Client
	logger   *zap.Logger
	mu       sync.Mutex
	lastErr  map[string]error

	demand     sync.Mutex // one on-demand refresh at a time
	lastDemand time.Time

	// gen counts the lists installed since the gate started (from 1, so
	// that a lane entry's zero generation means never checked). It is
	// bumped after each new list is installed: a payment that reads gen
	// and then checks its lane's principals against the lists sees every
	// list up to that generation, and the generation it remembers tells
	// the next payment whether a newer list came since.
	gen atomic.Uint64
}

// Generation returns the count of lists installed so far.
func (r *revocations) Generation() uint64 { return r.gen.Load() }

// Revokes reports whether a lane's principals (its open's certificates
// and keys, kept by the store) hold a certificate or key that an
// installed list revokes.
func (r *revocations) Revokes(m *store.Meta) bool {
	for _, h := range m.Certs {
		if r.CertRevoked(h) {
			return true
		}
	}
	for _, k := range m.Keys {
		if r.KeyRevoked(k) {
			return true
		}
	}
	return false
}

// refreshOnDemand fetches the lists now, when a lane open finds them stale,
// at most once a second; concurrent callers wait for the same fetch.
func (r *revocations) refreshOnDemand(ctx context.Context) {
	r.demand.Lock()
	defer r.demand.Unlock()
	if time.Since(r.lastDemand) < time.Second {
		return
	}
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r.refresh(c)
	r.lastDemand = time.Now()
}

// newRevocations makes the checkers of brokers and installs the lists
// kept in dir by an earlier run, so that a restart or config reload cannot
// be rolled back to an older list (a stale mirror, a file, a source that
// answers first).
func newRevocations(sources []string, brokers []*spki.PublicKey, dir string, logger *zap.Logger) *revocations {
	r := &revocations{dir: dir, sources: sources, brokers: brokers, checkers: map[spki.KeyHash]*delegation.Checker{},
		client: &http.Client{Timeout: 10 * time.Second}, logger: logger, lastErr: map[string]error{}}
	r.gen.Store(1)
	for _, b := range brokers {
		c := delegation.NewChecker(b)
		r.checkers[b.Hash()] = c
		if dir == "" {
			continue
		}
		raw, err := os.ReadFile(r.keptPath(b.Hash()))
		if err != nil {
			continue
		}
		lim := spki.DefaultLimits
		lim.MaxSize, lim.MaxNodes = maxRevocationList, 1<<21
		x, err := lim.Parse(raw)
		if err == nil {
			_, err = c.Update(x)
		}
		if err != nil {
			logger.Warn("a kept revocation list does not parse or verify; ignored", zap.String("file", r.keptPath(b.Hash())), zap.Error(err))
		}
	}
	return r
}

func (r *revocations) keptPath(broker spki.KeyHash) string {
	return filepath.Join(r.dir, hex.EncodeToString(broker[:16])+".revocations")
}

// keepMu serialises the writers of kept lists in this process (pollers,
// on-demand refreshes, the old and new gates of a config reload).
var keepMu sync.Mutex

// keep writes a newly installed list for the next start: never over a
// newer one, through a fresh temporary file synced before it is renamed
// into place, so a crash leaves the old or the new list, whole.
func (r *revocations) keep(broker spki.KeyHash, list *delegation.Revocations) {
	if r.dir == "" {
		return
	}
	keepMu.Lock()
	defer keepMu.Unlock()
	path := r.keptPath(broker)
	if raw, err := os.ReadFile(path); err == nil {
		lim := spki.DefaultLimits
		lim.MaxSize, lim.MaxNodes = maxRevocationList, 1<<21
		if x, err := lim.Parse(raw); err == nil {
			if old, err := delegation.ParseRevocations(x, r.brokerKey(broker)); err == nil && old.Number >= list.Number {
				return
			}
		}
	}
	err := os.MkdirAll(r.dir, 0o700)
	var f *os.File
	if err == nil {
		f, err = os.CreateTemp(r.dir, ".revocations-*")
	}
	if err == nil {
		_, err = f.Write(spki.Canonical(list.Sexp()))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.Name(), path)
		}
		if err != nil {
			os.Remove(f.Name())
		}
	}
	if err != nil {
		r.logger.Warn("could not keep the revocation list for the next start", zap.Error(err))
	}
}

func (r *revocations) brokerKey(h spki.KeyHash) *spki.PublicKey {
	for _, b := range r.brokers {
		if b.Hash() == h {
			return b
		}
	}
	return nil
}

// fetch reads one source: an http(s) URL or a file.
func (r *revocations) fetch(ctx context.Context, src string) ([]byte, error) {
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		req, err := http.NewRequestWithContext(ctx, "GET", src, nil)
		if err != nil {
			return nil, err
		}
		resp, err := r.client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: HTTP %d", src, resp.StatusCode)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxRevocationList+1))
		if err == nil && len(b) > maxRevocationList {
			err = fmt.Errorf("%s: list larger than %d bytes", src, maxRevocationList)
		}
		return b, err
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRevocationList+1))
	if err == nil && len(b) > maxRevocationList {
		err = fmt.Errorf("%s: list larger than %d bytes", src, maxRevocationList)
	}
	return b, err
}

// refresh fetches every source and installs what verifies; it returns the
// first error (the others are logged).
func (r *revocations) refresh(ctx context.Context) error {
	var first error
	for _, src := range r.sources {
		err := r.refreshOne(ctx, src)
		r.mu.Lock()
		r.lastErr[src] = err
		r.mu.Unlock()
		if err != nil {
			r.logger.Warn("could not refresh a revocation list", zap.String("source", src), zap.Error(err))
			if first == nil {
				first = err
			}
		}
	}
	return first
}

func (r *revocations) refreshOne(ctx context.Context, src string) error {
	b, err := r.fetch(ctx, src)
	if err != nil {
		return err
	}
	lim := spki.DefaultLimits
	lim.MaxSize, lim.MaxNodes = maxRevocationList, 1<<21
	x, err := lim.Parse(b)
	if err != nil {
		return err
	}
	var errs []error
	for h, c := range r.checkers {
		before := c.Current()
		if list, err := c.Update(x); err == nil {
			if before == nil || list.Number > before.Number {
				// Installed: open lanes are checked again at their next
				// payment (see Gate.checkRevoked).
				r.gen.Add(1)
				r.keep(h, list)
			}
			return nil
		} else if errors.Is(err, delegation.ErrRollback) {
			return fmt.Errorf("broker %s: %w", h, err)
		} else {
			errs = append(errs, err)
		}
	}
	return fmt.Errorf("no configured broker key verifies the list: %w", errors.Join(errs...))
}

// poll refreshes every interval until ctx ends; after a failure it retries
// sooner (1 s, doubling up to the interval), so that a gate started
// before its broker (in the same Caddy, say) is ready within seconds.
func (r *revocations) poll(ctx context.Context, every time.Duration, failed bool) {
	backoff := time.Second
	for {
		wait := every
		if failed {
			wait = min(backoff, every)
			backoff *= 2
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
			failed = r.refresh(ctx) != nil
		}
	}
}

// fresh reports whether the list of the broker is fresh at now.
func (r *revocations) fresh(broker spki.KeyHash, now time.Time) error {
	c, ok := r.checkers[broker]
	if !ok {
		return fmt.Errorf("no revocation list for broker %s", broker)
	}
	return c.Fresh(now)
}

// CertRevoked implements coupons.Revocations.
func (r *revocations) CertRevoked(h [32]byte) bool {
	for _, c := range r.checkers {
		if c.CertRevoked(h) {
			return true
		}
	}
	return false
}

// KeyRevoked implements coupons.Revocations.
func (r *revocations) KeyRevoked(h spki.KeyHash) bool {
	for _, c := range r.checkers {
		if c.KeyRevoked(h) {
			return true
		}
	}
	return false
}
