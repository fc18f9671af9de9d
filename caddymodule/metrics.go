package caddymodule

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// gateMetrics are the gate's Prometheus metrics, registered in Caddy's
// registry (served by Caddy's metrics endpoint), labelled by vendor.
var gateMetrics struct {
	once        sync.Once
	payments    *prometheus.CounterVec   // vendor, result: accepted or the refusal reason
	opens       *prometheus.CounterVec   // vendor, result
	cache       *prometheus.CounterVec   // vendor, result: hit or miss
	thefts      *prometheus.CounterVec   // vendor
	refunds     *prometheus.CounterVec   // vendor
	redemptions *prometheus.CounterVec   // vendor, result: paid or refused
	verifyDelay *prometheus.HistogramVec // vendor
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
		m.redemptions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "redemptions_total",
			Help: "Lanes submitted to the broker for redemption, by result (paid, or refused by the broker)."}, []string{"vendor", "result"})
		m.verifyDelay = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "payment_verification_seconds",
			Help:    "Time from parsing a payment to its durable acceptance or refusal (store included).",
			Buckets: []float64{0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1}}, []string{"vendor"})
	})
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{m.payments, m.opens, m.cache, m.thefts, m.refunds, m.redemptions, m.verifyDelay} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err)
			}
		}
	}
}
