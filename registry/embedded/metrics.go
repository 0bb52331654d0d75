package embedded

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/prom"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// statuses are the values of the status label, in a fixed order so every
// series exists from the start (a gauge that is absent reads as unknown, not 0).
var statuses = []registry.Status{
	registry.StatusUp, registry.StatusStarting, registry.StatusDown,
	registry.StatusOutOfService, registry.StatusDraining,
}

// metrics are the store's Prometheus collectors. They exist even when no
// Registerer is given, so the code that updates them never checks for nil.
type metrics struct {
	reg              prometheus.Registerer
	vips             prometheus.Gauge
	instances        *prometheus.GaugeVec
	expirations      prometheus.Counter
	selfPreservation prometheus.Gauge
	overdue          prometheus.Gauge
	writesPerCommit  prometheus.Histogram
	commitSeconds    prometheus.Histogram
	storageFailures  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		vips: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_registry_vips",
			Help: "VIPs in the embedded registry.",
		}),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xspace_registry_instances",
			Help: "Instances in the embedded registry, by status.",
		}, []string{"status"}),
		writesPerCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "xspace_registry_commit_writes",
			Help:    "Writes carried by one commit (one fsync) of the embedded registry.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "xspace_registry_commit_seconds",
			Help:    "Time to commit one group of writes to disk, fsync included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		storageFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xspace_registry_storage_failures_total",
			Help: "Panics or memory faults of the storage layer, turned into errors; after one the store refuses writes until restarted.",
		}),
	}
	lease := prom.NewLeaseMetrics()
	m.expirations, m.selfPreservation, m.overdue = lease.Expirations, lease.SelfPreservation, lease.Overdue
	for _, st := range statuses {
		m.instances.WithLabelValues(string(st))
	}
	if err := prom.Register(reg, m.collectors()...); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.vips, m.instances, m.expirations, m.selfPreservation, m.overdue,
		m.writesPerCommit, m.commitSeconds, m.storageFailures,
	}
}

// unregister removes the collectors, so that a store reopened in the same
// process can register its own.
func (m *metrics) unregister() {
	prom.Unregister(m.reg, m.collectors()...)
}
