package caddymodule

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/store"
	"github.com/prometheus/client_golang/prometheus"
)

// gateMetrics are the gate's Prometheus metrics, registered in Caddy's
// registry (served by Caddy's metrics endpoint), labelled by vendor.
var gateMetrics struct {
	once         sync.Once
	payments     *prometheus.CounterVec   // vendor, result: accepted or the refusal reason
	opens        *prometheus.CounterVec   // vendor, result
	cache        *prometheus.CounterVec   // vendor, result: hit or miss
	thefts       *prometheus.CounterVec   // vendor
	refunds      *prometheus.CounterVec   // vendor
	revokedLanes *prometheus.CounterVec   // vendor
	redemptions  *prometheus.CounterVec   // vendor, result: paid, refused, retry or failed
	verifyDelay  *prometheus.HistogramVec // vendor
	coupons      *prometheus.CounterVec   // vendor, route
	revenue      *prometheus.CounterVec   // vendor, route, currency
	bolt         boltCollector
}

// boltCollector exports the group-commit counters of every open bolt
// store, labelled by its path: writes/groups is the average group size,
// sync seconds/groups the average log append with its fdatasync (what
// the store's commit_delay trades latency against).
type boltCollector struct{}

var (
	boltGroupsDesc = prometheus.NewDesc("ecoupons_store_commit_groups_total",
		"Groups of writes the bolt store appended to its write-ahead log, one fdatasync each.", []string{"path"}, nil)
	boltWritesDesc = prometheus.NewDesc("ecoupons_store_commit_writes_total",
		"Writes (payments, lane opens, redemptions) the bolt store made durable.", []string{"path"}, nil)
	boltSyncDesc = prometheus.NewDesc("ecoupons_store_commit_sync_seconds_total",
		"Time the bolt store spent appending groups to its write-ahead log and syncing them.", []string{"path"}, nil)
)

// Describe implements prometheus.Collector.
func (boltCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- boltGroupsDesc
	ch <- boltWritesDesc
	ch <- boltSyncDesc
}

// Collect implements prometheus.Collector.
func (boltCollector) Collect(ch chan<- prometheus.Metric) {
	openBolts.Range(func(k, v any) bool {
		path, st := k.(string), v.(*store.Bolt).Stats()
		ch <- prometheus.MustNewConstMetric(boltGroupsDesc, prometheus.CounterValue, float64(st.Groups), path)
		ch <- prometheus.MustNewConstMetric(boltWritesDesc, prometheus.CounterValue, float64(st.Writes), path)
		ch <- prometheus.MustNewConstMetric(boltSyncDesc, prometheus.CounterValue, st.SyncTime.Seconds(), path)
		return true
	})
}

func initMetrics(reg *prometheus.Registry) {
	const ns, sub = "ecoupons", "gate"
	m := &gateMetrics
	m.once.Do(func() {
		m.payments = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "payments_total",
			Help: "Payments seen by the gate, by result (accepted, or the reason code of the refusal)."}, []string{"vendor", "result"})
		m.opens = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "lane_opens_total",
			Help: "Lane opens, by result (opened, or the reason code of the refusal)."}, []string{"vendor", "result"})
		m.cache = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "lane_cache_total",
			Help: "Lane cache lookups, by result (hit or miss)."}, []string{"vendor", "result"})
		m.thefts = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "suspected_thefts_total",
			Help: "Requests whose TESLA binding failed when the next coupon revealed its key: a coupon spent by someone who did not hold the chain."}, []string{"vendor"})
		m.refunds = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "upstream_refunds_total",
			Help: "Paid requests whose upstream answered 5xx and whose price went back to the lane as credit."}, []string{"vendor"})
		m.revokedLanes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "revoked_lanes_total",
			Help: "Open lanes this gate found under a revoked certificate or key (a newly installed revocation list) and marked revoked in the store."}, []string{"vendor"})
		m.redemptions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "redemptions_total",
			Help: "Lanes submitted to the broker for redemption, by result: paid, refused (for good: the lane left the pending set), retry (refused for now: the lane backs off) or failed (the batch failed: broker unreachable, 5xx; the lane backs off)."}, []string{"vendor", "result"})
		m.coupons = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "coupons_total",
			Help: "Coupons the gate kept for requests it served (the price of each; requests whose upstream failed are credited back and not counted), by vendor and route (the gate's name option)."}, []string{"vendor", "route"})
		m.revenue = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "revenue_total",
			Help: "The value of coupons_total in currency units (coupons × unit), by vendor, route and currency."}, []string{"vendor", "route", "currency"})
		m.verifyDelay = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "payment_verification_seconds",
			Help:    "Time from parsing a payment to its durable acceptance (store included), for a uniform sample of one accepted payment in 16.",
			Buckets: []float64{0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1}}, []string{"vendor"})
	})
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{m.payments, m.opens, m.cache, m.thefts, m.refunds, m.revokedLanes, m.redemptions, m.verifyDelay, m.coupons, m.revenue, m.bolt} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err)
			}
		}
	}
}

// delaySampling is how often the acceptance delay is observed: one payment
// in delaySampling, chosen at random. Reading the clock again and updating
// the histogram cost about as much as two SHA-256 of the payment's own
// work (a clock read is 50–70 ns on a virtual machine); a uniform sample
// shows the same distribution (payments_total counts every payment).
const delaySampling = 16

// observeDelay records, for one payment in delaySampling, the time since
// started (when the payment's acceptance began) in the verification
// histogram.
func (g *Gate) observeDelay(started time.Time) {
	if rand.Uint32()%delaySampling == 0 {
		g.mDelay.Observe(time.Since(started).Seconds())
	}
}
