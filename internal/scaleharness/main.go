// Command scaleharness measures how the gate's acceptance core and its
// durable store keep their speed as the number of open lanes grows: for
// each lane count it opens that many lanes in a fresh store, then clients
// pay coupons on lanes drawn uniformly at random (each client owns a
// disjoint set of lanes, as a wallet owns its lanes), through the same
// lanes.Core and store a gate uses (bolt, or with -store pebble the
// pebble store, behind spending leases), for a timed round. It reports payments per second, CPU per
// payment, the lane cache's hit rate, the process's memory per open lane,
// the store's disk bytes per lane, and the time a store killed with
// SIGKILL under load takes to open again.
//
//	go run ./internal/scaleharness                       # 1k, 100k and 1M lanes
//	go run ./internal/scaleharness -lanes 1000,100000 -duration 5s
//	go run ./internal/scaleharness -lanes 1000,100000 -duration 5s -store pebble
//	go run ./internal/scaleharness -lanes 100000 -flush-every 10s -idle 5m   # the leases' write-behind and release
//
// HTTP is left out on purpose (the load harness measures it): what grows
// with the lanes is the cache, the store's index and its checkpoints.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/procstat"
	"github.com/ecoupons/ecoupons/lanes"
	"github.com/ecoupons/ecoupons/store"
)

const (
	chainLength = 1 << 12
	nonce       = "scale-harness"
)

// world is one chain every lane shares (the core verifies each lane
// against its own record, so lanes only need distinct IDs).
type world struct {
	book [32]byte
	tag  coupons.LaneTag
	w    []coupons.Value
}

func newWorld() *world {
	wd := &world{w: make([]coupons.Value, chainLength+1)}
	rand.Read(wd.book[:])
	var salt [32]byte
	rand.Read(salt[:])
	wd.tag = coupons.NewLaneTag(salt, 0)
	rand.Read(wd.w[chainLength][:])
	for i := uint32(chainLength); i > 0; i-- {
		wd.w[i-1] = coupons.Step(&wd.tag, i-1, &wd.w[i])
	}
	return wd
}

func (wd *world) id(lane uint32) coupons.LaneID { return coupons.LaneID{Book: wd.book, Lane: lane} }

func (wd *world) meta() store.Meta {
	return store.Meta{Tag: wd.tag, Anchor: wd.w[0], Length: chainLength, Unit: 1_000_000, Currency: "EUR",
		NotAfter: time.Now().Add(24 * time.Hour), Nonce: nonce, Certs: [][32]byte{{1}}, Keys: nil}
}

// pay is coupon i of lane, bound to a GET of /a.
func (wd *world) pay(lane, i uint32) *lanes.Payment {
	id := wd.id(lane)
	req := coupons.Request{Method: "GET", Host: "scale.example", Path: "/a", Lane: id, Index: i, Nonce: nonce}
	d := req.Digest()
	return &lanes.Payment{Coupon: coupons.Pay(id, i, wd.w[i], &wd.w[i+1], &d),
		Request: coupons.Request{Method: "GET", Host: "scale.example", Path: "/a"}}
}

type counter struct{ n atomic.Int64 }

func (c *counter) Inc() { c.n.Add(1) }

func main() {
	lanesFlag := flag.String("lanes", "1000,100000,1000000", "lane counts to measure, comma separated")
	clients := flag.Int("clients", 32, "concurrent payers")
	duration := flag.Duration("duration", 10*time.Second, "length of the timed round at each lane count")
	storeKind := flag.String("store", "bolt", "bolt or pebble (behind spending leases, as a gate uses them) or memory")
	lease := flag.Int("lease", 32, "spending lease in coupons (1: every coupon durable before it is accepted)")
	cache := flag.Int("cache", 0, "lane cache size (0: the gate's default)")
	restart := flag.Bool("restart", true, "also measure opening a durable store killed (SIGKILL) under load")
	flag.DurationVar(&leaseOpt.FlushEvery, "flush-every", 0, "the Leased store's FlushEvery: how often positions held in memory are written behind (0: its default)")
	flag.DurationVar(&leaseOpt.Idle, "idle", 0, "the Leased store's Idle: how long an unused lane keeps its reservation (0: its default)")
	child := flag.String("child", "", "internal: fill and pay in this directory until killed")
	flag.Parse()
	if *storeKind == "memory" {
		// As a gate does: spending leases need a store that holds them
		// (store.Leased); on the memory store a lease above 1 would be
		// read back as a crash leftover whenever a lane misses the cache.
		*lease = 1
	}
	if *child != "" {
		n, _ := strconv.Atoi(flag.Arg(0))
		if err := runChild(*child, *storeKind, n, *lease); err != nil {
			fmt.Fprintln(os.Stderr, "scaleharness child:", err)
			os.Exit(1)
		}
		return
	}
	fmt.Printf("%-9s %12s %14s %10s %14s %14s %12s\n", "lanes", "payments/s", "CPU/payment", "cache hit", "RSS/lane", "disk/lane", "restart")
	for _, f := range strings.Split(*lanesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < *clients {
			fmt.Fprintf(os.Stderr, "scaleharness: lane count %q: a number of at least -clients\n", f)
			os.Exit(2)
		}
		if err := measure(n, *clients, *duration, *storeKind, *lease, *cache, *restart); err != nil {
			fmt.Fprintln(os.Stderr, "scaleharness:", err)
			os.Exit(1)
		}
	}
}

// leaseOpt are the spending leases' options (-flush-every, -idle).
var leaseOpt store.LeaseOptions

func openStore(dir, kind string) (store.Store, func() error, error) {
	switch kind {
	case "memory":
		m := store.NewMemory()
		return m, m.Close, nil
	case "bolt":
		b, err := store.OpenBolt(filepath.Join(dir, "spent.db"), store.BoltOptions{})
		if err != nil {
			return nil, nil, err
		}
		l := store.NewLeased(b, leaseOpt)
		return l, func() error { l.Close(); return b.Close() }, nil
	case "pebble":
		p, err := store.OpenPebble(filepath.Join(dir, "pebble"), store.PebbleOptions{})
		if err != nil {
			return nil, nil, err
		}
		l := store.NewLeased(p, leaseOpt)
		return l, func() error { l.Close(); return p.Close() }, nil
	}
	return nil, nil, fmt.Errorf("unknown store %q: bolt, pebble or memory", kind)
}

// fill opens n lanes, in batches written concurrently (a store groups
// concurrent writes).
func fill(st store.Store, wd *world, n int) error {
	var wg sync.WaitGroup
	var first error
	var mu sync.Mutex
	const workers = 64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lane := w; lane < n; lane += workers {
				if _, err := st.Open(context.Background(), wd.id(uint32(lane)), store.NewRecord(wd.meta())); err != nil {
					mu.Lock()
					first = errors.Join(first, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func measure(n, clients int, duration time.Duration, kind string, lease, cacheLanes int, restart bool) error {
	dir, err := os.MkdirTemp("", "ecoupons-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	wd := newWorld()
	rssBefore, _ := procstat.RSS()
	st, closeStore, err := openStore(dir, kind)
	if err != nil {
		return err
	}
	if err := fill(st, wd, n); err != nil {
		closeStore()
		return err
	}
	var hit, miss counter
	core, err := lanes.New(st, lanes.Config{Price: 1, MaxJump: 64, Lease: uint32(lease), LaneRate: -1, Hit: &hit, Miss: &miss, CacheLanes: cacheLanes})
	if err != nil {
		closeStore()
		return err
	}
	// Every lane once, untimed: the cache and the store's pages warm up
	// as they would on a gate that has served these lanes before.
	pos := make([]uint32, n)
	paid, cpu, err := pay(core, wd, pos, clients, 0, n)
	if err != nil {
		return err
	}
	hit.n.Store(0)
	miss.n.Store(0)
	paid, cpu, err = pay(core, wd, pos, clients, duration, 0)
	if err != nil {
		return err
	}
	perLane := float64(rssNow()-rssBefore) / float64(n)
	core.Close()
	if err := closeStore(); err != nil {
		return err
	}
	disk := procstat.DirSize(dir)
	rate := float64(paid) / duration.Seconds()
	hits := float64(hit.n.Load()) / float64(max(hit.n.Load()+miss.n.Load(), 1))
	reopen := "-"
	if restart && kind != "memory" {
		d, err := killedReopen(kind, n, lease)
		if err != nil {
			return err
		}
		reopen = d.Round(time.Millisecond).String()
	}
	fmt.Printf("%-9d %12.0f %12.1fµs %9.1f%% %12.0f B %12.0f B %12s\n", n, rate, float64(cpu.Microseconds())/float64(max(paid, 1)),
		100*hits, perLane, float64(disk)/float64(n), reopen)
	return nil
}

// pay runs clients payers: each owns the lanes ≡ its index (mod clients)
// and pays one coupon at a time on a random one of them, for duration, or
// (duration 0) once on each of the first sweep lanes. It returns the
// payments accepted and the process CPU time they took.
func pay(core *lanes.Core, wd *world, pos []uint32, clients int, duration time.Duration, sweep int) (int64, time.Duration, error) {
	var paid atomic.Int64
	var stop atomic.Bool
	errs := make(chan error, clients)
	cpu0 := procstat.CPUTime()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(c), 99))
			owned := (len(pos) - c + clients - 1) / clients
			next := func(k int) int { return c + k*clients }
			for k := 0; ; k++ {
				var lane int
				if duration == 0 {
					if lane = next(k); lane >= sweep {
						return
					}
				} else {
					if stop.Load() {
						return
					}
					lane = next(rng.IntN(owned))
				}
				i := pos[lane] + 1
				if i >= chainLength {
					continue
				}
				if _, err := core.Accept(context.Background(), wd.pay(uint32(lane), i)); err != nil {
					errs <- fmt.Errorf("lane %d coupon %d: %w", lane, i, err)
					return
				}
				pos[lane] = i
				paid.Add(1)
			}
		}()
	}
	if duration > 0 {
		time.Sleep(duration)
		stop.Store(true)
	}
	wg.Wait()
	select {
	case err := <-errs:
		return 0, 0, err
	default:
	}
	return paid.Load(), procstat.CPUTime() - cpu0, nil
}

// killedReopen fills n lanes in a child process that then pays on them
// until it is killed with SIGKILL, and times opening its store again (the
// log replayed) and reading a lane.
func killedReopen(kind string, n, lease int) (time.Duration, error) {
	dir, err := os.MkdirTemp("", "ecoupons-scale-kill-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(exe, "-child", dir, "-store", kind, "-lease", strconv.Itoa(lease), strconv.Itoa(n))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "paying" {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, fmt.Errorf("the child did not start paying")
	}
	time.Sleep(3 * time.Second)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	start := time.Now()
	var b store.Store
	if kind == "pebble" {
		b, err = store.OpenPebble(filepath.Join(dir, "pebble"), store.PebbleOptions{})
	} else {
		b, err = store.OpenBolt(filepath.Join(dir, "spent.db"), store.BoltOptions{})
	}
	if err != nil {
		return 0, err
	}
	defer b.Close()
	wd := &world{}
	if _, err := b.Get(context.Background(), coupons.LaneID{Book: wd.book, Lane: 0}); err != nil && !errors.Is(err, store.ErrNotFound) {
		return 0, err
	}
	return time.Since(start), nil
}

// runChild is the process killedReopen kills: it fills n lanes in dir and
// pays on them until killed.
func runChild(dir, kind string, n, lease int) error {
	st, _, err := openStore(dir, kind)
	if err != nil {
		return err
	}
	wd := newWorld()
	if err := fill(st, wd, n); err != nil {
		return err
	}
	core, err := lanes.New(st, lanes.Config{Price: 1, MaxJump: 64, Lease: uint32(lease), LaneRate: -1})
	if err != nil {
		return err
	}
	fmt.Println("paying")
	_, _, err = pay(core, wd, make([]uint32, n), 32, time.Hour, 0)
	return err
}

// rssNow is the process's resident memory in bytes.
func rssNow() int64 { all, _ := procstat.RSS(); return all }
