package caddymodule

import (
	"context"
	"fmt"
	"go.uber.org/zap"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ecoupons/ecoupons/store"
	"github.com/redis/go-redis/v9"
)

func init() {
	caddy.RegisterModule(MemoryStore{})
	caddy.RegisterModule(BoltStore{})
	caddy.RegisterModule(RedisStore{})
	caddy.RegisterModule(PebbleStore{})
}

// StoreProvider is a module in the http.handlers.ecoupon.stores namespace:
// it opens the spent-state store a gate uses and closes it on Cleanup.
type StoreProvider interface {
	OpenStore(ctx caddy.Context) (store.Store, error)
}

// MemoryStore keeps spent state in memory: for tests and demos only, since
// a restart or a config reload forgets every spent coupon.
type MemoryStore struct{}

// CaddyModule returns the Caddy module information.
func (MemoryStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.ecoupon.stores.memory", New: func() caddy.Module { return new(MemoryStore) }}
}

// OpenStore implements StoreProvider.
func (MemoryStore) OpenStore(caddy.Context) (store.Store, error) { return store.NewMemory(), nil }

// BoltStore is the embedded durable store (the default): one bbolt file
// and its write-ahead log (<path>.wal, 32 MiB). A lane's reservation
// (the gate's lease) is group-committed and on disk before a coupon
// beyond the last one is accepted; coupons within it are accepted from
// memory and written within a second, and every lane's exact position on
// a clean stop.
type BoltStore struct {
	// Path of the database file. Default: ecoupons/<vendor>.db in Caddy's
	// data directory.
	Path string `json:"path,omitempty"`
	// CommitDelay makes the store wait this long between groups of
	// payments under concurrent load, so that each fdatasync carries more
	// payments: more throughput on a busy gate, up to this much more
	// latency per payment. Default 0 (no wait; e.g. 1ms for a gate under
	// heavy load).
	CommitDelay caddy.Duration `json:"commit_delay,omitempty"`
	LeaseTuning
}

// LeaseTuning are the spending leases' timings of an embedded durable
// store (bolt, pebble). A config reload keeps the values of the store as
// it was opened; a restart applies new ones.
type LeaseTuning struct {
	// LeaseIdle is how long a lane may go unpaid before the store gives
	// its spending lease back (one durable write; the lane's next payment
	// takes a new one, another). Longer keeps more lanes' leases in memory
	// (about 0.8 KB each, measured at a million lanes) and saves both
	// writes on lanes paid less often than the default allows: a site
	// whose readers come back every few minutes, spread over many lanes.
	// Default 30s; at most 24h.
	LeaseIdle caddy.Duration `json:"lease_idle,omitempty"`
	// LeaseFlush is how often the positions accepted from memory (within
	// a lease) are written behind. Longer saves writes on busy lanes. After
	// a crash the coupons accepted since the last write are still refused
	// (the lease covers them), but their chain values are lost: until the
	// lane is paid again (a later coupon redeems every coupon below it) the
	// vendor can redeem it only up to its last written position, at most
	// this much time of payments less. Default 1s; at most 1m.
	LeaseFlush caddy.Duration `json:"lease_flush,omitempty"`
}

// validate checks the timings; name is the store's, for the errors.
func (t LeaseTuning) validate(name string) error {
	if t.LeaseIdle < 0 || time.Duration(t.LeaseIdle) > 24*time.Hour {
		return fmt.Errorf("%s store: lease_idle must be a duration from 0 (the default, 30s) to 24h, got %s", name, time.Duration(t.LeaseIdle))
	}
	if t.LeaseFlush < 0 || time.Duration(t.LeaseFlush) > time.Minute {
		return fmt.Errorf("%s store: lease_flush must be a duration from 0 (the default, 1s) to 1m, got %s", name, time.Duration(t.LeaseFlush))
	}
	return nil
}

// options are the store package's LeaseOptions for these timings (zero:
// its defaults).
func (t LeaseTuning) options() store.LeaseOptions {
	return store.LeaseOptions{Idle: time.Duration(t.LeaseIdle), FlushEvery: time.Duration(t.LeaseFlush)}
}

// warnIfKept logs a warning when the store open already (a config reload)
// runs with other lease timings than these: they apply from the next
// start, not silently never.
func (t LeaseTuning) warnIfKept(ctx caddy.Context, name string, l *store.Leased) {
	want := store.LeaseOptionsWithDefaults(t.options())
	if got := l.Options(); got != want {
		ctx.Logger().Warn("the store is open with other lease timings: the new lease_idle and lease_flush apply from the next start",
			zap.String("store", name), zap.Duration("lease_idle", got.Idle), zap.Duration("lease_flush", got.FlushEvery),
			zap.Duration("configured_lease_idle", want.Idle), zap.Duration("configured_lease_flush", want.FlushEvery))
	}
}

// CaddyModule returns the Caddy module information.
func (BoltStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.ecoupon.stores.bolt", New: func() caddy.Module { return new(BoltStore) }}
}

// Validate checks the options without opening the file.
func (b *BoltStore) Validate() error {
	if b.CommitDelay < 0 {
		return fmt.Errorf("bolt store: commit_delay must not be negative")
	}
	return b.LeaseTuning.validate("bolt")
}

// boltPool shares an open database across config reloads: bbolt locks its
// file, so the new config must reuse the old config's handle.
var boltPool = caddy.NewUsagePool()

// boltHandle is a pooled bolt file and the spending leases held on it:
// one Leased per file, whatever the number of gates and configs using
// it, since reservations are only safe with a single holder.
type boltHandle struct {
	leased *store.Leased
	path   string
}

// Destruct closes the database once no config uses it.
func (h boltHandle) Destruct() error {
	openBolts.Delete(h.path)
	return h.leased.Close() // releases every lane, then closes the file
}

// openBolts holds the open bolt stores by path, for their metrics.
var openBolts sync.Map

// sharedBolt is a store.Store whose Close releases the pool reference.
type sharedBolt struct {
	*store.Leased
	key string
}

// Close releases this config's reference to the database.
func (s sharedBolt) Close() error {
	_, err := boltPool.Delete(s.key)
	return err
}

// OpenStore implements StoreProvider.
func (b *BoltStore) OpenStore(ctx caddy.Context) (store.Store, error) {
	if b.Path == "" {
		return nil, fmt.Errorf("bolt store: no path")
	}
	path, err := filepath.Abs(b.Path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("bolt store: %w", err)
	}
	v, _, err := boltPool.LoadOrNew(path, func() (caddy.Destructor, error) {
		db, err := store.OpenBolt(path, store.BoltOptions{CommitDelay: time.Duration(b.CommitDelay)})
		if err != nil {
			return nil, err
		}
		openBolts.Store(path, db)
		return boltHandle{leased: store.NewLeased(db, b.options()), path: path}, nil
	})
	if err != nil {
		return nil, err
	}
	b.warnIfKept(ctx, path, v.(boltHandle).leased)
	return sharedBolt{Leased: v.(boltHandle).leased, key: path}, nil
}

// PebbleStore is the embedded durable store on pebble (an LSM engine with
// its own log): the same leases and guarantees as BoltStore, about a tenth
// of its disk per lane, and a restart after a crash in well under a
// second at a million lanes (bolt replays its log: up to 2 s there; see
// BENCHMARKS.md, "Durable store at scale"). It links pebble's packages.
type PebbleStore struct {
	// Path of the database directory. Default: ecoupons/<vendor>.pebble in
	// Caddy's data directory.
	Path string `json:"path,omitempty"`
	LeaseTuning
}

// Validate checks the options without opening the database.
func (p *PebbleStore) Validate() error { return p.LeaseTuning.validate("pebble") }

// CaddyModule returns the Caddy module information.
func (PebbleStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.ecoupon.stores.pebble", New: func() caddy.Module { return new(PebbleStore) }}
}

// OpenStore implements StoreProvider. A config reload reuses the open
// database (pebble locks its directory), with its spending leases.
func (p *PebbleStore) OpenStore(ctx caddy.Context) (store.Store, error) {
	if p.Path == "" {
		return nil, fmt.Errorf("pebble store: no path")
	}
	path, err := filepath.Abs(p.Path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("pebble store: %w", err)
	}
	key := "pebble:" + path
	v, _, err := boltPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		db, err := store.OpenPebble(path, store.PebbleOptions{})
		if err != nil {
			return nil, err
		}
		return boltHandle{leased: store.NewLeased(db, p.options()), path: key}, nil
	})
	if err != nil {
		return nil, err
	}
	p.warnIfKept(ctx, key, v.(boltHandle).leased)
	return sharedBolt{Leased: v.(boltHandle).leased, key: key}, nil
}

// RedisStore is shared by a fleet of gates behind one Redis server, or a
// Redis Cluster (Valkey cluster) when Cluster is set.
type RedisStore struct {
	// URL of the server, redis://[user:password@]host:port/db; of a
	// cluster, any of its nodes with the others as addr parameters:
	// redis://host1:port?addr=host2:port&addr=host3:port. Required.
	URL string `json:"url,omitempty"`
	// Prefix of every key. Default "ecoupons:".
	Prefix string `json:"prefix,omitempty"`
	// Cluster: URL names a Redis Cluster. Lanes are spread over 64 hash
	// slots (hash tags; a book's lanes share one).
	Cluster bool `json:"cluster,omitempty"`
	// MinReplicas (cluster only): how many replicas must acknowledge each
	// write before the gate counts it (Redis WAIT), so that a failover
	// never loses an accepted coupon. Default 1; 0 trusts the master
	// alone (a failover may then accept the last coupons again).
	MinReplicas *int `json:"min_replicas,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (RedisStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.ecoupon.stores.redis", New: func() caddy.Module { return new(RedisStore) }}
}

// Validate checks the URL without connecting: Caddy loads the store
// module (and so validates it) before the gate creates any file.
func (r *RedisStore) Validate() error {
	if r.URL == "" {
		return fmt.Errorf("redis store: url is required, e.g. store redis redis://127.0.0.1:6379/0")
	}
	if r.Cluster {
		if _, err := redis.ParseClusterURL(r.URL); err != nil {
			return fmt.Errorf("redis cluster store: url: %w", err)
		}
		if r.MinReplicas != nil && (*r.MinReplicas < 0 || *r.MinReplicas > 16) {
			return fmt.Errorf("redis cluster store: min_replicas must be from 0 to 16, got %d", *r.MinReplicas)
		}
		return nil
	}
	if r.MinReplicas != nil {
		return fmt.Errorf("redis store: min_replicas applies to a cluster only (store redis_cluster)")
	}
	if _, err := redis.ParseURL(r.URL); err != nil {
		return fmt.Errorf("redis store: url: %w", err)
	}
	return nil
}

// OpenStore implements StoreProvider.
func (r *RedisStore) OpenStore(ctx caddy.Context) (store.Store, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if r.Cluster {
		o := store.ClusterOptions{Prefix: r.Prefix, MinReplicas: 1}
		if r.MinReplicas != nil {
			o.MinReplicas = *r.MinReplicas
		}
		return store.NewRedisCluster(c, r.URL, o)
	}
	return store.NewRedis(c, r.URL, r.Prefix)
}

var (
	_ caddy.Validator = (*BoltStore)(nil)
	_ caddy.Validator = (*PebbleStore)(nil)
	_ caddy.Validator = (*RedisStore)(nil)
	_ StoreProvider   = (*MemoryStore)(nil)
	_ StoreProvider   = (*BoltStore)(nil)
	_ StoreProvider   = (*PebbleStore)(nil)
	_ StoreProvider   = (*RedisStore)(nil)
)
