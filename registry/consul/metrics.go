package consul

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/prom"
)

// Values of the op label: what a request to Consul was for.
const (
	opLookup = "lookup" // an on-demand Lookup (health + KV)
	opWatch  = "watch"  // a blocking query of a watched VIP
	opRead   = "read"   // a REST read (GetVIP, ListVIPs, Instances)
	opWrite  = "write"  // a REST write (PutVIP, Register, Heartbeat, ...)
	opProbe  = "probe"  // the reachability probe
)

// Values of the source label of lookups_total.
const (
	sourceWatch    = "watch"     // served from a watch's last result
	sourceQuery    = "query"     // one query to Consul
	sourceFailFast = "fail_fast" // refused at once while degraded
)

// metrics are the store's Prometheus collectors. They exist even when no
// Registerer is given, so the code that updates them never checks for nil.
// No label carries a VIP or instance name.
type metrics struct {
	reg       prometheus.Registerer
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	lookups   *prometheus.CounterVec
	watches   prometheus.Gauge
	wakeups   *prometheus.CounterVec
	degraded  prometheus.Gauge
	outages   prometheus.Counter
	skipped   prometheus.Counter
	transport prometheus.Gauge
	lease     prom.LeaseMetrics
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_registry_consul_requests_total",
			Help: "Requests to Consul by purpose (lookup, watch, read, write, probe) and result (ok, error).",
		}, []string{"op", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "xspace_registry_consul_request_seconds",
			Help:    "Duration of requests to Consul by purpose; a watch's blocking query lasts until a change or its wait time.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"op"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_registry_consul_lookups_total",
			Help: "Lookups by source: watch (a watched VIP's last result), query (one query), fail_fast (refused while degraded).",
		}, []string{"source"}),
		watches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_registry_consul_watched_vips",
			Help: "VIPs with a blocking query running, because a proxy holds them.",
		}),
		wakeups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_registry_consul_watch_wakeups_total",
			Help: "Blocking queries that returned, by outcome: changed, unchanged, error, behind (an older index than served, replaced by a consistent read).",
		}, []string{"outcome"}),
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_registry_consul_degraded",
			Help: "1 while Consul cannot be reached; the last known state keeps being served.",
		}),
		outages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xspace_registry_consul_outages_total",
			Help: "Times the store became degraded.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xspace_registry_consul_skipped_instances_total",
			Help: "Consul service instances left out of a lookup because their address is not an IP or their port is 0.",
		}),
		transport: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_registry_consul_blocking_queries",
			Help: "Blocking queries in flight (two per watched VIP: instances and policy).",
		}),
	}
	for _, op := range []string{opLookup, opWatch, opRead, opWrite, opProbe} {
		for _, r := range []string{"ok", "error"} {
			m.requests.WithLabelValues(op, r)
		}
		m.latency.WithLabelValues(op)
	}
	for _, s := range []string{sourceWatch, sourceQuery, sourceFailFast} {
		m.lookups.WithLabelValues(s)
	}
	m.lease = prom.NewLeaseMetrics()
	for _, o := range []string{"changed", "unchanged", "error", "behind"} {
		m.wakeups.WithLabelValues(o)
	}
	if err := prom.Register(reg, m.collectors()...); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return append([]prometheus.Collector{
		m.requests, m.latency, m.lookups, m.watches, m.wakeups,
		m.degraded, m.outages, m.skipped, m.transport,
	}, m.lease.Collectors()...)
}

// unregister removes the collectors, so that a store made again in the
// same process can register its own.
func (m *metrics) unregister() {
	prom.Unregister(m.reg, m.collectors()...)
}
