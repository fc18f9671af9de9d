package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ecoupons/ecoupons/caddymodule"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/internal/procstat"
	"github.com/ecoupons/ecoupons/lanes"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
)

// The lanes mode (-lanes): the gate's store is filled with N open lanes
// before Caddy starts, and clients pay on lanes drawn uniformly from
// their own share of them.

const (
	// vendor is the gated route's vendor.
	vendor = "load.example"
	// pagePath is the gated (and plain) resource.
	pagePath = "/premium/page.html"
	// bookLanes is the lanes of each book the stored lanes belong to: the
	// wallet's default (ecoupons wallet new -lanes 4).
	bookLanes = 4
	// rateBound is the most paid requests per second the precomputed
	// payments are sized for (as run's).
	rateBound = 30000
)

// laneOptions are the lanes mode's settings.
type laneOptions struct {
	counts      []int
	clients     int
	duration    time.Duration
	rounds      int
	storeKind   string
	commitDelay time.Duration
	lease       int
	cache       int  // the gate's lane_cache (0: its default)
	warm        bool // pay every lane once, untimed, before the rounds
	// settle is how long to wait after the warm-up, before the rounds:
	// past the spending leases' idle time (30 s), the lanes the warm-up
	// leased are all released first, whatever the warm-up's length.
	settle time.Duration
	// leaseIdle and leaseFlush are the embedded stores' lease_idle and
	// lease_flush (0: the gate's defaults, 30s and 1s).
	leaseIdle, leaseFlush time.Duration
}

// parseLaneCounts reads -lanes: a comma-separated list of lane counts,
// each at least clients (every client owns at least one lane).
func parseLaneCounts(s string, clients int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < clients || n > math.MaxUint32 {
			return nil, fmt.Errorf("-lanes: %q is not a lane count of at least -clients (%d)", f, clients)
		}
		out = append(out, n)
	}
	return out, nil
}

// fixture is what every stored lane is made of: the record a real lane
// open verified by the gate's own checks (coupons.VerifyOpen) would store,
// with one hash chain that every lane shares.
type fixture struct {
	brokerFile string
	meta       store.Meta      // the record's metadata, as openLane builds it
	proof      [][32]byte      // the lane's Merkle proof, stored with its open
	book       [32]byte        // the real book's ID (the first group of lanes)
	w          []coupons.Value // the shared chain: w[i] is coupon i's value
}

// newFixture makes a broker and a user, a 4-lane book of the given
// length funded by the broker, and opens its lane 0 as the wallet would
// (owner.Open, signed by the owner), verified with the gate's policy
// (vendor, broker keys, clock; a nonce the gate would have issued is
// taken as is: the gate checks it when the lane is opened, never again).
func newFixture(dir string, length uint32) (*fixture, error) {
	broker, alice := key("broker"), key("alice")
	bp, _ := spki.NewPublicKey(broker.Public())
	ap, _ := spki.NewPublicKey(alice.Public())
	fx := &fixture{brokerFile: filepath.Join(dir, "broker.pub")}
	if err := os.WriteFile(fx.brokerFile, spki.Advanced(bp.Sexp()), 0o644); err != nil {
		return nil, err
	}
	b, sec, anchors, err := coupons.Create(coupons.Params{Vendor: vendor, Broker: bp.Hash(), Owner: ap.Hash(),
		Lanes: bookLanes, Length: length, Currency: "EUR", Unit: 1_000_000, NotAfter: time.Now().Add(7 * 24 * time.Hour)}, nil)
	if err != nil {
		return nil, err
	}
	sb, err := b.Sign(alice)
	if err != nil {
		return nil, err
	}
	user, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(bp), Subject: spki.HashPrincipal(ap.Hash()), Tag: coupons.UserTag("load", "EUR")}, broker)
	if err != nil {
		return nil, err
	}
	owner, err := delegation.NewOwner(sb, user, sec, anchors, alice)
	if err != nil {
		return nil, err
	}
	if owner.Funding, err = coupons.SignFunding(sb.Book, broker, time.Time{}); err != nil {
		return nil, err
	}
	// A nonce of the gate's shape (24 bytes, base64url): the stored record
	// keeps it and every payment's request digest includes it.
	ns := sha256.Sum256([]byte("ecoupons load harness nonce"))
	nonce := base64.RawURLEncoding.EncodeToString(ns[:24])
	o, err := owner.Open(0, nonce)
	if err != nil {
		return nil, err
	}
	lane, err := coupons.VerifyOpen(o, &coupons.OpenPolicy{Vendor: vendor, Brokers: []*spki.PublicKey{bp}, Now: time.Now(),
		CheckNonce: func(string) error { return nil }})
	if err != nil {
		return nil, fmt.Errorf("verifying the fixture's lane open: %w", err)
	}
	unit, err := coupons.ParseAmount("0.001") // the gate's default unit
	if err != nil {
		return nil, err
	}
	if lane.Unit != unit {
		return nil, fmt.Errorf("the fixture's book is worth %d, the gate takes %d", lane.Unit, unit)
	}
	// As caddymodule's openLane stores a verified open.
	fx.meta = store.Meta{Tag: lane.Tag, Anchor: lane.Anchor, Length: lane.Length, Unit: lane.Unit, Currency: lane.Currency,
		NotAfter: lane.NotAfter, Spender: lane.Spender, Owner: lane.Owner, Cap: lane.Cap, Nonce: o.Nonce,
		Vendor: sha256.Sum256([]byte(vendor)), Certs: lane.Certs, Keys: lane.Keys, End: lane.End, Grant: lane.Grant}
	fx.proof = o.Proof
	fx.book = b.ID()
	seed, ok := owner.Seed(0)
	if !ok {
		return nil, errors.New("the owner holds no seed of lane 0")
	}
	tag := b.LaneTag(0)
	fx.w = make([]coupons.Value, length+1)
	fx.w[length] = seed
	for i := length; i > 0; i-- {
		fx.w[i-1] = coupons.Step(&tag, i-1, &fx.w[i])
	}
	if fx.w[0] != lane.Anchor {
		return nil, errors.New("the fixture's chain does not end at the lane's anchor")
	}
	return fx, nil
}

// id is stored lane k: lane k mod 4 of book k/4, the first book being the
// real one and the others named by a hash of it (random-looking IDs, as a
// store full of readers' books has).
func (fx *fixture) id(k int) coupons.LaneID {
	g := k / bookLanes
	book := fx.book
	if g > 0 {
		h := sha256.New()
		h.Write([]byte("ecoupons load harness book"))
		h.Write(fx.book[:])
		h.Write(strconv.AppendInt(nil, int64(g), 10))
		h.Sum(book[:0])
	}
	return coupons.LaneID{Book: book, Lane: uint32(k % bookLanes)}
}

// record is the stored record of a lane just opened (its principals its
// own copies, as each verified open's are).
func (fx *fixture) record() store.Record {
	m := fx.meta
	m.Certs, m.Keys = slices.Clone(m.Certs), slices.Clone(m.Keys)
	return store.NewRecord(m)
}

// payment is the Authorization header paying coupon i of lane id for a GET
// of the gated page, bound to it as the wallet binds it.
func (fx *fixture) payment(id coupons.LaneID, i uint32) (string, error) {
	if i == 0 || i >= uint32(len(fx.w))-1 {
		return "", fmt.Errorf("coupon %d is past the fixture's chain of %d: run fewer rounds or shorter ones", i, len(fx.w)-1)
	}
	d := (&coupons.Request{Method: "GET", Host: gatedAddr, Path: pagePath, Lane: id, Index: i, Nonce: fx.meta.Nonce}).Digest()
	p := coupons.Pay(id, i, fx.w[i], &fx.w[i+1], &d)
	return p.Header(), nil
}

// prefilled is the memory store filled for the gate (-store memory), handed
// to it by the loadharness_prefilled store module.
var prefilled atomic.Pointer[store.Memory]

// prefilledStore is the store module of -store memory in the lanes mode:
// the memory store this harness filled before Caddy started.
type prefilledStore struct{}

func init() { caddy.RegisterModule(prefilledStore{}) }

// CaddyModule returns the Caddy module information.
func (prefilledStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.ecoupon.stores.loadharness_prefilled", New: func() caddy.Module { return new(prefilledStore) }}
}

// OpenStore implements caddymodule.StoreProvider.
func (prefilledStore) OpenStore(caddy.Context) (store.Store, error) {
	m := prefilled.Swap(nil)
	if m == nil {
		return nil, errors.New("loadharness: no prefilled memory store")
	}
	return m, nil
}

var _ caddymodule.StoreProvider = prefilledStore{}

// fillStore opens the store of kind in dir directly (the package's API,
// without fdatasync: the fill is set-up, not measured), writes n open lanes
// and closes it, and returns the gate's store configuration for it.
func fillStore(dir, kind string, commitDelay time.Duration, fx *fixture, n int) (map[string]any, func(), error) {
	var st store.Store
	var cfg map[string]any
	stop := func() {}
	var err error
	switch kind {
	case "bolt", "bolt-nosync":
		path := filepath.Join(dir, "spent.db")
		st, err = store.OpenBolt(path, store.BoltOptions{NoSync: true})
		cfg = map[string]any{"backend": "bolt", "path": path, "commit_delay": commitDelay}
		if kind == "bolt-nosync" {
			cfg["backend"] = "loadharness_nosync"
		}
	case "pebble":
		path := filepath.Join(dir, "spent.pebble")
		st, err = store.OpenPebble(path, store.PebbleOptions{NoSync: true})
		cfg = map[string]any{"backend": "pebble", "path": path}
	case "memory":
		st = store.NewMemory()
		cfg = map[string]any{"backend": "loadharness_prefilled"}
	case "redis":
		var url string
		if url, stop, err = startRedis(dir); err != nil {
			return nil, nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err = store.NewRedis(ctx, url, "")
		cancel()
		cfg = map[string]any{"backend": "redis", "url": url}
	default:
		return nil, nil, fmt.Errorf("unknown store %q: bolt, pebble, memory, redis or bolt-nosync", kind)
	}
	if err != nil {
		stop()
		return nil, nil, err
	}
	if err := fill(st, fx, n); err != nil {
		st.Close()
		stop()
		return nil, nil, err
	}
	if kind == "memory" {
		prefilled.Store(st.(*store.Memory))
		return cfg, stop, nil
	}
	if err := st.Close(); err != nil {
		stop()
		return nil, nil, err
	}
	return cfg, stop, nil
}

// fill opens n lanes, each with its proof, from concurrent writers (the
// durable stores group concurrent writes).
func fill(st store.Store, fx *fixture, n int) error {
	const workers = 256
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= n {
					return
				}
				if _, err := st.Open(context.Background(), fx.id(k), fx.record(), fx.proof...); err != nil {
					mu.Lock()
					first = errors.Join(first, fmt.Errorf("opening stored lane %d: %w", k, err))
					mu.Unlock()
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// laneResult is one lane count's measurement.
type laneResult struct {
	n                 int
	plain, paid       float64 // requests per second (medians of the rounds)
	ratio             float64 // median of the rounds' paid/plain
	cpuPaid, cpuPlain float64 // µs of process CPU per request
	hits              float64 // lane cache hit rate in the timed rounds
	rssLane, anonLane float64 // bytes per lane: resident, and of that anonymous (heap, not the store's mapped file)
	rss, anon         int64   // process RSS after fill and warm-up, and its anonymous part
	writes            float64 // durable store writes (bolt's group commits) per paid request, -1: not counted
	disk              int64   // the store's directory, after the gate stopped
	fill, warm        time.Duration
}

// runLanes measures the gate's paid requests per second with payments
// spread over each of o.counts open lanes.
func runLanes(o laneOptions) error {
	perClient := int(float64(o.duration/time.Second+1) * rateBound / float64(o.clients) * float64(o.rounds))
	// The chain every lane shares must outlast the busiest lane at the
	// smallest lane count: a Poisson tail well past the mean.
	mean := float64(perClient*o.clients) / float64(slices.Min(o.counts))
	length := uint32(1 << 10)
	for float64(length) < 2+mean+8*math.Sqrt(mean)+64 {
		length <<= 1
	}
	top, err := os.MkdirTemp("", "ecoupons-load-lanes-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(top)
	fx, err := newFixture(top, length)
	if err != nil {
		return err
	}
	if o.storeKind == "bolt" {
		wall, cpu, err := syncCost(top)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "write+fdatasync on the store's disk: %.0f µs, %.0f µs of CPU each\n", us(wall), us(cpu))
		defer fmt.Printf("write+fdatasync on the store's disk: %.0f µs, %.0f µs of CPU each (measured before the rounds)\n", us(wall), us(cpu))
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.clients * 2}, Timeout: 30 * time.Second}
	var results []laneResult
	for _, n := range o.counts {
		r, err := measureLanes(hc, fx, n, o, perClient)
		hc.CloseIdleConnections()
		if err != nil {
			return fmt.Errorf("%d lanes: %w", n, err)
		}
		results = append(results, r)
	}

	storeDesc := o.storeKind
	if o.commitDelay > 0 {
		storeDesc += fmt.Sprintf(" (commit_delay %s)", o.commitDelay)
	}
	if o.storeKind != "memory" && o.storeKind != "redis" {
		lease := o.lease
		if lease == 0 {
			lease = caddymodule.DefaultLease
		}
		storeDesc += fmt.Sprintf(", lease %d", lease)
	}
	cache := o.cache
	if cache == 0 {
		cache = lanes.DefaultCacheLanes
	}
	warm := "every lane paid once, untimed, before the rounds"
	if !o.warm {
		warm = "none (-warm=false: a lane's first payment in the rounds misses the cache)"
	}
	if o.settle > 0 {
		warm += fmt.Sprintf(", then %s idle", o.settle)
	}
	fmt.Printf("lanes mode: clients %d, %s rounds × %d, store %s, lane_cache %d, 1 KiB file; lanes prefilled through the store's API, %d per book, one shared chain of %d; warm-up: %s\n",
		o.clients, o.duration, o.rounds, storeDesc, cache, bookLanes, length, warm)
	fmt.Printf("%-9s %11s %11s %7s %10s %10s %11s %12s %12s %12s %12s %9s %9s\n", "lanes", "plain/s", "paid/s", "ratio", "CPU/paid", "CPU/plain", "cache hit", "writes/paid", "RSS/lane", "anon/lane", "disk/lane", "fill", "warm-up")
	for _, r := range results {
		disk, writes, over := "-", "-", " "
		if r.disk > 0 {
			disk = fmt.Sprintf("%.0f B", float64(r.disk)/float64(r.n))
		}
		if r.writes >= 0 {
			writes = fmt.Sprintf("%.3f", r.writes)
		}
		if r.n > cache {
			over = "*"
		}
		fmt.Printf("%-9d %11.0f %11.0f %7.3f %8.1fµs %8.1fµs %9.1f%%%s %12s %10.0f B %10.0f B %12s %9s %9s\n", r.n, r.plain, r.paid, r.ratio, r.cpuPaid, r.cpuPlain,
			100*r.hits, over, writes, r.rssLane, r.anonLane, disk, r.fill.Round(10*time.Millisecond), r.warm.Round(10*time.Millisecond))
	}
	fmt.Println("(medians of the rounds; CPU is the process's, clients included; * more lanes than lane_cache holds; writes/paid counts the bolt store's durable writes in the rounds (new leases, the leases' write-behind) per paid request; RSS/lane is the process's resident memory after the fill and warm-up, minus before the fill, over the lanes: Caddy's own start is in it; anon/lane is its anonymous part, without the store's mapped file; disk/lane is the store's directory after the gate stopped, the bolt store's 32 MiB write-ahead log included)")
	if len(results) > 1 {
		a, b := results[0], results[len(results)-1]
		fmt.Printf("RSS per added lane, %d → %d lanes: %.0f B (anonymous: %.0f B)\n", a.n, b.n,
			float64(b.rss-a.rss)/float64(b.n-a.n), float64(b.anon-a.anon)/float64(b.n-a.n))
		goal := "met"
		if b.paid < 0.8*a.paid {
			goal = "not met"
		}
		fmt.Printf("issue 21 goal (paid req/s at the most lanes ≥ 0.8× at the fewest): %d/%d lanes = %.3f, %s\n", b.n, a.n, b.paid/a.paid, goal)
	}
	return nil
}

// measureLanes runs one lane count: a fresh store filled with n lanes,
// Caddy on it, the warm-up, the payments computed, the rounds.
func measureLanes(hc *http.Client, fx *fixture, n int, o laneOptions, perClient int) (laneResult, error) {
	res := laneResult{n: n}
	dir, err := os.MkdirTemp("", "ecoupons-load-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	site, err := writeSite(dir)
	if err != nil {
		return res, err
	}
	storeDir := filepath.Join(dir, "store")
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return res, err
	}

	debug.FreeOSMemory()
	rss0, anon0 := procstat.RSS()
	fmt.Fprintf(os.Stderr, "%d lanes: filling the %s store…\n", n, o.storeKind)
	start := time.Now()
	storeJSON, stopStore, err := fillStore(storeDir, o.storeKind, o.commitDelay, fx, n)
	if err == nil && (o.storeKind == "bolt" || o.storeKind == "pebble") {
		storeJSON["lease_idle"], storeJSON["lease_flush"] = o.leaseIdle, o.leaseFlush
	}
	if err != nil {
		return res, err
	}
	defer stopStore()
	res.fill = time.Since(start)
	fmt.Fprintf(os.Stderr, "%d lanes: filled in %s (%.0f lanes/s)\n", n, res.fill.Round(time.Millisecond), float64(n)/res.fill.Seconds())

	gate := map[string]any{"handler": "ecoupon", "vendor": vendor, "broker_keys": []string{fx.brokerFile},
		"price": 1, "lane_rate": -1, "lease": o.lease, "store": storeJSON}
	if o.cache > 0 {
		gate["lane_cache"] = o.cache
	}
	if err := loadCaddy(site, gate); err != nil {
		prefilled.Store(nil)
		return res, err
	}
	stopped := false
	defer func() {
		if !stopped {
			caddy.Stop()
		}
	}()

	// Each client owns the lanes ≡ its index (mod clients); next[k] is the
	// next coupon of lane k (each written by its owner only).
	next := make([]uint32, n)
	for k := range next {
		next[k] = 1
	}
	if o.warm {
		if res.warm, err = warmUp(fx, next); err != nil {
			return res, err
		}
	}
	if o.settle > 0 {
		fmt.Fprintf(os.Stderr, "%d lanes: waiting %s before the rounds…\n", n, o.settle)
		time.Sleep(o.settle)
	}
	debug.FreeOSMemory()
	res.rss, res.anon = procstat.RSS()
	res.rssLane, res.anonLane = float64(res.rss-rss0)/float64(n), float64(res.anon-anon0)/float64(n)

	fmt.Fprintf(os.Stderr, "%d lanes: computing %d payments for each of %d clients…\n", n, perClient, o.clients)
	pays := make([][]string, o.clients)
	errs := make(chan error, o.clients)
	var wg sync.WaitGroup
	for c := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(n), uint64(c)))
			owned := (n - c + o.clients - 1) / o.clients
			p := make([]string, perClient)
			for j := range p {
				k := c + rng.IntN(owned)*o.clients
				h, err := fx.payment(fx.id(k), next[k])
				if err != nil {
					errs <- err
					return
				}
				next[k]++
				p[j] = h
			}
			pays[c] = p
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return res, err
	default:
	}

	url := func(addr string) string { return "http://" + addr + pagePath }
	var plainRates, paidRates, plainCPU, paidCPU, ratios []float64
	var hits, misses, writes, paid float64
	for r := 0; r < o.rounds; r++ {
		pr, pc, _, err := hammer(hc, url(plainAddr), o.clients, o.duration, nil)
		if err != nil {
			return res, err
		}
		h0, m0 := cacheCounts()
		st0 := commitStats()
		gr, gc, _, err := hammer(hc, url(gatedAddr), o.clients, o.duration, pays)
		if err != nil {
			return res, err
		}
		st := commitStats().minus(st0)
		h1, m1 := cacheCounts()
		hits, misses = hits+h1-h0, misses+m1-m0
		writes, paid = writes+st.writes, paid+gr*o.duration.Seconds()
		info := ""
		if st.groups > 0 {
			info = fmt.Sprintf(", %.1f writes per group commit", st.writes/st.groups)
		}
		fmt.Fprintf(os.Stderr, "%d lanes, round %d: plain %.0f req/s, paid %.0f req/s, cache hit %.1f%%%s\n", n, r+1, pr, gr,
			100*(h1-h0)/max(h1-h0+m1-m0, 1), info)
		plainRates, paidRates, ratios = append(plainRates, pr), append(paidRates, gr), append(ratios, gr/pr)
		plainCPU, paidCPU = append(plainCPU, pc), append(paidCPU, gc)
	}
	res.plain, res.paid, res.ratio = median(plainRates), median(paidRates), median(ratios)
	res.cpuPlain, res.cpuPaid = median(plainCPU), median(paidCPU)
	res.hits = hits / max(hits+misses, 1)
	res.writes = -1
	if o.storeKind == "bolt" || o.storeKind == "bolt-nosync" {
		res.writes = writes / max(paid, 1)
	}
	pays = nil

	caddy.Stop() // the store closed: its final checkpoint on disk
	stopped = true
	if o.storeKind != "memory" && o.storeKind != "redis" {
		res.disk = procstat.DirSize(storeDir)
	}
	return res, nil
}

// warmWorkers are the warm-up's concurrent clients: more than the rounds'
// usually, since a lane's first payment here takes a new lease, a durable
// write, and concurrent ones share a group commit.
const warmWorkers = 64

// warmUp pays every lane's next coupon once, computing each payment just
// before it is sent.
func warmUp(fx *fixture, next []uint32) (time.Duration, error) {
	n := len(next)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: warmWorkers}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	var lane atomic.Int64
	fmt.Fprintf(os.Stderr, "%d lanes: warm-up, every lane paid once…\n", n)
	var done atomic.Int64
	var failed atomic.Value
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "  warm-up: %d of %d lanes\n", done.Load(), n)
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for range warmWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for failed.Load() == nil {
				k := int(lane.Add(1) - 1)
				if k >= n {
					return
				}
				id := fx.id(k)
				h, err := fx.payment(id, next[k])
				if err != nil {
					failed.Store(err)
					return
				}
				req, _ := http.NewRequest("GET", "http://"+gatedAddr+pagePath, nil)
				req.Header.Set("Authorization", h)
				resp, err := hc.Do(req)
				if err != nil {
					failed.Store(err)
					return
				}
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Store(fmt.Errorf("warm-up payment on stored lane %d (%s): %d %s", k, id, resp.StatusCode, body))
					return
				}
				next[k]++
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stopProgress)
	if e := failed.Load(); e != nil {
		return 0, e.(error)
	}
	d := time.Since(start)
	fmt.Fprintf(os.Stderr, "%d lanes: warm-up took %s (%.0f req/s)\n", n, d.Round(time.Millisecond), float64(n)/d.Seconds())
	return d, nil
}

// loadCaddy starts Caddy with the plain file_server and the gated one in
// front of the same file, the gate configured by gate.
func loadCaddy(site string, gate map[string]any) error {
	fileServer := map[string]any{"handler": "file_server", "root": site}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{
			"plain": map[string]any{"listen": []string{plainAddr}, "automatic_https": map[string]any{"disable": true},
				"routes": []any{map[string]any{"handle": []any{fileServer}}}},
			"gated": map[string]any{"listen": []string{gatedAddr}, "automatic_https": map[string]any{"disable": true},
				"routes": []any{map[string]any{"handle": []any{gate, fileServer}}}},
		}}},
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	return caddy.Load(raw, true)
}

// writeSite writes the 1 KiB page both servers serve, under dir/site.
func writeSite(dir string) (string, error) {
	site := filepath.Join(dir, "site")
	if err := os.MkdirAll(filepath.Join(site, "premium"), 0o755); err != nil {
		return "", err
	}
	page := make([]byte, 1024)
	for i := range page {
		page[i] = 'a' + byte(i%26)
	}
	return site, os.WriteFile(filepath.Join(site, pagePath), page, 0o644)
}

// cacheCounts reads the gate's lane cache counters (hits, misses) from
// Caddy's metrics registry.
func cacheCounts() (hits, misses float64) {
	ctx := caddy.ActiveContext()
	fams, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		return 0, 0
	}
	for _, f := range fams {
		if f.GetName() != "ecoupons_gate_lane_cache_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var result, vend string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "result":
					result = l.GetValue()
				case "vendor":
					vend = l.GetValue()
				}
			}
			if vend != vendor {
				continue
			}
			switch result {
			case "hit":
				hits += m.GetCounter().GetValue()
			case "miss":
				misses += m.GetCounter().GetValue()
			}
		}
	}
	return hits, misses
}
