// Command loadharness measures the gate end to end: one in-process Caddy
// serves the same file through two servers on loopback, one plain
// file_server and one behind the ecoupon gate (bolt store, fsync), and
// keep-alive clients hammer each in turn. Every gated request pays one
// coupon on its client's own lane (a lane per in-flight request, as the
// wallet does); payments are computed before the timed phase.
//
//	go run ./internal/loadharness                 # 3 rounds of 5 s each way
//	go run ./internal/loadharness -clients 32 -duration 10s -store memory
//
// It prints requests per second for both and their ratio (goal ≥ 0.90),
// the median of the ratios of rounds run back to back.
// With the bolt store it also measures what one write+fdatasync costs on
// the store's disk and reports the gate's group commits (payments per
// fdatasync); -store bolt-nosync runs the same store without fdatasync
// (a diagnostic that isolates the disk's share: not a durable store, and
// not available outside this harness).
//
// With -lanes (issue 21, over the gate's HTTP path), it measures how paid
// requests per second hold up as the open lanes grow: for each lane count
// N, a fresh store (bolt by default, behind the gate's spending leases;
// -store pebble, memory, redis or bolt-nosync) is filled with N open lanes
// through the store package's API before Caddy starts: records as the gate
// stores a verified lane open (vendor, unit, currency, expiry, nonce,
// spender, owner, principals, Merkle proof), in books of 4 lanes, every
// lane on one shared hash chain. The clients each own a disjoint share of
// the lanes and pay one coupon per request on a lane drawn uniformly from
// it. Before the timed rounds every lane is paid once, untimed (-warm=false
// skips it: at a million lanes it is a million requests). Per lane count it
// prints plain and paid requests per second (alternate rounds, medians),
// their ratio, CPU per request, the gate's lane cache hit rate in the
// rounds, process RSS per open lane, the store's disk bytes per lane and
// how long the fill and warm-up took; then the paid rate at the most lanes
// over the rate at the fewest (issue 21 asks ≥ 0.8). The gate releases a
// lane's spending lease after 30 s unused (the store's lease_idle,
// -lease-idle here), so a lane paid less often than that costs a durable
// write per payment (the writes/paid column): with a warm-up longer than
// 30 s the rounds start among its releases, and -settle 35s starts every
// lane count after them.
//
//	go run ./internal/loadharness -lanes 1000,100000,1000000            # issue 21's figures
//	go run ./internal/loadharness -lanes 1000,10000 -duration 2s -rounds 1
//	go run ./internal/loadharness -lanes 1000,1000000 -cache 1100000     # a cache that holds every lane
//	go run ./internal/loadharness -lanes 1000,100000 -store pebble -warm=false
//	go run ./internal/loadharness -lanes 1000,100000,1000000 -settle 35s   # rounds after the warm-up's leases are released
//	go run ./internal/loadharness -lanes 1000,1000000 -lease-idle 30m       # leases held through the warm-up and the rounds
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/ecoupons/ecoupons/caddymodule"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/internal/procstat"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
)

var _ caddymodule.StoreProvider = (*noSyncStore)(nil)

var nonceRe = regexp.MustCompile(`nonce=([A-Za-z0-9_-]+)`)

const (
	plainAddr = "127.0.0.1:18082"
	gatedAddr = "127.0.0.1:18081"
)

func main() {
	clients := flag.Int("clients", 16, "concurrent keep-alive clients")
	duration := flag.Duration("duration", 5*time.Second, "length of one timed round")
	rounds := flag.Int("rounds", 3, "rounds per server, run alternately (medians are reported; make it odd)")
	storeKind := flag.String("store", "bolt", "gate store: bolt, memory, redis (starts a local redis-server, appendfsync always), bolt-nosync (diagnostic, not durable), or with -lanes pebble")
	commitDelay := flag.Duration("commit-delay", 0, "the bolt store's commit_delay")
	lease := flag.Int("lease", 0, "the gate's spending lease in coupons (0: the gate's default; 1: every coupon durable before it is accepted)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the timed rounds to this file")
	traceFile := flag.String("trace", "", "write an execution trace of the timed rounds to this file")
	lanesFlag := flag.String("lanes", "", "lane counts, comma separated (e.g. 1000,100000,1000000): pay on that many prefilled open lanes each (empty: one lane per client)")
	cache := flag.Int("cache", 0, "with -lanes: the gate's lane_cache (0: its default)")
	warm := flag.Bool("warm", true, "with -lanes: pay every lane once, untimed, before the rounds")
	leaseIdle := flag.Duration("lease-idle", 0, "with -lanes, bolt or pebble: the store's lease_idle (0: the gate's default, 30s)")
	leaseFlush := flag.Duration("lease-flush", 0, "with -lanes, bolt or pebble: the store's lease_flush (0: the gate's default, 1s)")
	settle := flag.Duration("settle", 0, "with -lanes: wait this long after the warm-up (35s: every lease the warm-up took is released, the gate's idle time being 30s)")
	flag.Parse()
	var counts []int
	if *lanesFlag != "" {
		var err error
		if counts, err = parseLaneCounts(*lanesFlag, *clients); err != nil {
			fmt.Fprintln(os.Stderr, "loadharness:", err)
			os.Exit(2)
		}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		trace.Start(f)
		defer trace.Stop()
	}
	var err error
	if counts != nil {
		err = runLanes(laneOptions{counts: counts, clients: *clients, duration: *duration, rounds: *rounds, storeKind: *storeKind,
			commitDelay: *commitDelay, lease: *lease, cache: *cache, warm: *warm, settle: *settle, leaseIdle: *leaseIdle, leaseFlush: *leaseFlush})
	} else {
		err = run(*clients, *duration, *rounds, *storeKind, *commitDelay, *lease)
	}
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "loadharness:", err)
		os.Exit(1)
	}
}

func key(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("ecoupons load harness " + label))
	return ed25519.NewKeyFromSeed(seed[:])
}

func run(clients int, duration time.Duration, rounds int, storeKind string, commitDelay time.Duration, lease int) error {
	dir, err := os.MkdirTemp("", "ecoupons-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	site, err := writeSite(dir)
	if err != nil {
		return err
	}

	// A broker, a user and a book with a lane per client.
	broker, alice := key("broker"), key("alice")
	bp, _ := spki.NewPublicKey(broker.Public())
	ap, _ := spki.NewPublicKey(alice.Public())
	brokerFile := filepath.Join(dir, "broker.pub")
	if err := os.WriteFile(brokerFile, spki.Advanced(bp.Sexp()), 0o644); err != nil {
		return err
	}
	perLane := int(float64(duration/time.Second+1) * 30000 / float64(clients) * float64(rounds))
	length := uint32(1 << 10)
	for int(length) < perLane+2 {
		length <<= 1
	}
	b, sec, anchors, err := coupons.Create(coupons.Params{Vendor: vendor, Broker: bp.Hash(), Owner: ap.Hash(),
		Lanes: uint32(clients), Length: length, Currency: "EUR", Unit: 1_000_000, NotAfter: time.Now().Add(24 * time.Hour)}, nil)
	if err != nil {
		return err
	}
	sb, _ := b.Sign(alice)
	user, err := spki.SignCert(&spki.Cert{Issuer: spki.KeyPrincipal(bp), Subject: spki.HashPrincipal(ap.Hash()), Tag: coupons.UserTag("load", "EUR")}, broker)
	if err != nil {
		return err
	}
	owner, err := delegation.NewOwner(sb, user, sec, anchors, alice)
	if err != nil {
		return err
	}
	if owner.Funding, err = coupons.SignFunding(sb.Book, broker, time.Time{}); err != nil {
		return err
	}

	storeJSON := map[string]any{"backend": "memory"}
	switch storeKind {
	case "memory":
	case "redis":
		// A local redis-server with the test suite's durability
		// (append-only file, fsync always): every payment is one
		// compare-and-set round trip (no lease: a store shared by a
		// fleet cannot let one gate accept from memory).
		url, stop, err := startRedis(dir)
		if err != nil {
			return err
		}
		defer stop()
		storeJSON = map[string]any{"backend": "redis", "url": url}
	case "bolt", "bolt-nosync":
		storeJSON = map[string]any{"backend": "bolt", "path": filepath.Join(dir, "spent.db"), "commit_delay": commitDelay}
		if storeKind == "bolt-nosync" {
			storeJSON["backend"] = "loadharness_nosync"
			break
		}
		wall, cpu, err := syncCost(dir)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "write+fdatasync on the store's disk: %.0f µs, %.0f µs of CPU each\n", us(wall), us(cpu))
		defer fmt.Printf("write+fdatasync on the store's disk: %.0f µs, %.0f µs of CPU each (measured before the rounds)\n", us(wall), us(cpu))
	default:
		return fmt.Errorf("unknown store %q: bolt, memory, redis or bolt-nosync", storeKind)
	}
	if err := loadCaddy(site, map[string]any{"handler": "ecoupon", "vendor": vendor, "broker_keys": []string{brokerFile},
		"price": 1, "lane_rate": -1, "opens_per_minute": 100000, "lease": lease, "store": storeJSON}); err != nil {
		return err
	}
	defer caddy.Stop()

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients * 2}, Timeout: 10 * time.Second}
	url := func(addr string) string { return "http://" + addr + pagePath }

	// Challenge, then open every lane with its first payment and compute
	// the rest, untimed.
	resp, err := hc.Get(url(gatedAddr))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPaymentRequired {
		return fmt.Errorf("expected 402 from the gate, got %d", resp.StatusCode)
	}
	m := nonceRe.FindStringSubmatch(resp.Header.Get("WWW-Authenticate"))
	if m == nil {
		return fmt.Errorf("no nonce in %q", resp.Header.Get("WWW-Authenticate"))
	}
	nonce := m[1]
	fmt.Fprintf(os.Stderr, "computing %d payments on each of %d lanes…\n", perLane, clients)
	pays := make([][]string, clients)
	var wg sync.WaitGroup
	var prepErr atomic.Value
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			p, err := lanePayments(owner, uint32(c), nonce, perLane+1, "127.0.0.1:18081")
			if err != nil {
				prepErr.Store(err)
				return
			}
			pays[c] = p
		}(c)
	}
	wg.Wait()
	if e := prepErr.Load(); e != nil {
		return e.(error)
	}
	for c := 0; c < clients; c++ {
		o, err := owner.Open(uint32(c), nonce)
		if err != nil {
			return err
		}
		req, _ := http.NewRequest("GET", url(gatedAddr), nil)
		req.Header.Set("Authorization", pays[c][0])
		req.Header.Set("ECoupon-Open", string(spki.Transport(o.Sexp())))
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("opening lane %d: %d", c, resp.StatusCode)
		}
		pays[c] = pays[c][1:]
	}

	var plainRates, gatedRates, plainCPU, gatedCPU, plainUse, gatedUse, groupSizes, syncTimes, ratios []float64
	for r := 0; r < rounds; r++ {
		pr, pc, pu, err := hammer(hc, url(plainAddr), clients, duration, nil)
		if err != nil {
			return err
		}
		st0 := commitStats()
		gr, gc, gu, err := hammer(hc, url(gatedAddr), clients, duration, pays)
		if err != nil {
			return err
		}
		st := commitStats().minus(st0)
		groupInfo := ""
		if st.groups > 0 {
			groupSizes = append(groupSizes, st.writes/st.groups)
			syncTimes = append(syncTimes, st.seconds/st.groups)
			groupInfo = fmt.Sprintf(", %.1f payments per group commit, %.0f µs per log append", st.writes/st.groups, 1e6*st.seconds/st.groups)
		}
		fmt.Fprintf(os.Stderr, "round %d: plain %.0f req/s, gated %.0f req/s%s\n", r+1, pr, gr, groupInfo)
		plainRates, gatedRates, ratios = append(plainRates, pr), append(gatedRates, gr), append(ratios, gr/pr)
		plainCPU, gatedCPU = append(plainCPU, pc), append(gatedCPU, gc)
		plainUse, gatedUse = append(plainUse, pu), append(gatedUse, gu)
	}
	p, g := median(plainRates), median(gatedRates)
	store := storeKind
	if storeKind != "memory" && commitDelay > 0 {
		store += fmt.Sprintf(" (commit_delay %s)", commitDelay)
	}
	if storeKind != "memory" && storeKind != "redis" {
		if lease == 0 {
			lease = caddymodule.DefaultLease
		}
		store += fmt.Sprintf(", lease %d", lease)
	}
	fmt.Printf("clients %d, %s rounds × %d, store %s, 1 KiB file\n", clients, duration, rounds, store)
	fmt.Printf("plain file_server: %.0f req/s (CPU %.0f%%, %.0f µs per request)\n", p, median(plainUse), median(plainCPU))
	fmt.Printf("gated file_server: %.0f req/s (CPU %.0f%%, %.0f µs per request)\n", g, median(gatedUse), median(gatedCPU))
	// Each round's ratio compares two runs seconds apart, so the machine's
	// drift (noisy neighbours, frequency) cancels more than across rounds.
	fmt.Printf("ratio gated/plain: %.3f (median of the rounds' ratios; range %.3f–%.3f)\n", median(ratios), slices.Min(ratios), slices.Max(ratios))
	if len(groupSizes) > 0 {
		fmt.Printf("group commits: %.1f payments each, %.0f µs per log append (and fdatasync) under load\n", median(groupSizes), 1e6*median(syncTimes))
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// syncCost measures one small write and fdatasync on a preallocated file in
// dir, as the bolt store's log does: wall time and process CPU time each.
func syncCost(dir string) (wall, cpu time.Duration, err error) {
	f, err := os.CreateTemp(dir, "synccost")
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	const n, size = 2000, 512
	if _, err := f.Write(make([]byte, n*size)); err != nil {
		return 0, 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, 0, err
	}
	rec := make([]byte, size)
	start, cpu0 := time.Now(), procstat.CPUTime()
	for i := range n {
		if _, err := f.WriteAt(rec, int64(i*size)); err != nil {
			return 0, 0, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, 0, err
		}
	}
	return time.Since(start) / n, (procstat.CPUTime() - cpu0) / n, nil
}

// groupCounters are the gate's bolt group-commit counters, summed over the
// open stores (there is one here).
type groupCounters struct{ groups, writes, seconds float64 }

func (a groupCounters) minus(b groupCounters) groupCounters {
	return groupCounters{a.groups - b.groups, a.writes - b.writes, a.seconds - b.seconds}
}

// commitStats reads the counters from Caddy's metrics registry.
func commitStats() groupCounters {
	var out groupCounters
	if s := noSyncOpen.Load(); s != nil {
		st := s.Stats()
		out = groupCounters{float64(st.Groups), float64(st.Writes), st.SyncTime.Seconds()}
	}
	ctx := caddy.ActiveContext()
	fams, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		return out
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			v := m.GetCounter().GetValue()
			switch f.GetName() {
			case "ecoupons_store_commit_groups_total":
				out.groups += v
			case "ecoupons_store_commit_writes_total":
				out.writes += v
			case "ecoupons_store_commit_sync_seconds_total":
				out.seconds += v
			}
		}
	}
	return out
}

// noSyncStore is the bolt store without fdatasync, registered only in this
// harness: it shows how much of the durable store's cost is the disk's.
type noSyncStore struct {
	Path        string         `json:"path,omitempty"`
	CommitDelay caddy.Duration `json:"commit_delay,omitempty"`
}

func init() { caddy.RegisterModule(noSyncStore{}) }

// CaddyModule returns the Caddy module information.
func (noSyncStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.ecoupon.stores.loadharness_nosync", New: func() caddy.Module { return new(noSyncStore) }}
}

// OpenStore implements caddymodule.StoreProvider.
func (n *noSyncStore) OpenStore(caddy.Context) (store.Store, error) {
	s, err := store.OpenBolt(n.Path, store.BoltOptions{NoSync: true, CommitDelay: time.Duration(n.CommitDelay)})
	if err == nil {
		noSyncOpen.Store(s)
	}
	return s, err
}

// noSyncOpen is the open no-sync store, for its counters.
var noSyncOpen atomic.Pointer[store.Bolt]

// lanePayments computes n payments of one coupon on a lane.
func lanePayments(owner *delegation.Holder, lane uint32, nonce string, n int, host string) ([]string, error) {
	b := owner.Book.Book
	seed, _ := owner.Seed(lane)
	cur, _, err := coupons.NewCursor(b.LaneTag(lane), b.Length, seed)
	if err != nil {
		return nil, err
	}
	id := coupons.LaneID{Book: b.ID(), Lane: lane}
	out := make([]string, n)
	for k := range out {
		i, w, next, hasNext, err := cur.Next()
		if err != nil {
			return nil, err
		}
		d := (&coupons.Request{Method: "GET", Host: host, Path: pagePath, Lane: id, Index: i, Nonce: nonce}).Digest()
		var np *coupons.Value
		if hasNext {
			np = &next
		}
		p := coupons.Pay(id, i, w, np, &d)
		out[k] = p.Header()
	}
	return out, nil
}

// hammer runs clients for duration and returns successful requests per
// second, the process's CPU time per request (µs, clients included) and
// its CPU use (percent of one core); with pays, client c sends pays[c] in
// order (consuming them).
func hammer(hc *http.Client, url string, clients int, duration time.Duration, pays [][]string) (float64, float64, float64, error) {
	var done atomic.Int64
	var failed atomic.Value
	stop := time.Now().Add(duration)
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for time.Now().Before(stop) {
				req, _ := http.NewRequest("GET", url, nil)
				if pays != nil {
					if len(pays[c]) == 0 {
						failed.Store(fmt.Errorf("client %d ran out of precomputed payments", c))
						return
					}
					req.Header.Set("Authorization", pays[c][0])
					pays[c] = pays[c][1:]
				}
				resp, err := hc.Do(req)
				if err != nil {
					failed.Store(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Store(fmt.Errorf("%s: status %d", url, resp.StatusCode))
					return
				}
				done.Add(1)
			}
		}(c)
	}
	start := time.Now()
	cpu0 := procstat.CPUTime()
	wg.Wait()
	if e := failed.Load(); e != nil {
		return 0, 0, 0, e.(error)
	}
	el, cpu := time.Since(start), procstat.CPUTime()-cpu0
	n := float64(max(done.Load(), 1))
	return n / el.Seconds(), float64(cpu.Microseconds()) / n, 100 * cpu.Seconds() / el.Seconds(), nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// startRedis runs redis-server on a free loopback port with its data in
// dir (append-only, fsync always) and returns its URL and a stop function.
func startRedis(dir string) (string, func(), error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, fmt.Errorf("-store redis needs redis-server (apt-get install -y redis-server): %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	data := filepath.Join(dir, "redis")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", data,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no")
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return fmt.Sprintf("redis://127.0.0.1:%d/0", port), stop, nil
		}
	}
	stop()
	return "", nil, errors.New("redis-server did not start listening within 10s")
}
