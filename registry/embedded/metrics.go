package embedded

import (
	"github.com/prometheus/client_golang/prometheus"

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
		expirations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xspace_registry_lease_expirations_total",
			Help: "Instances removed because their lease expired.",
		}),
		selfPreservation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_registry_self_preservation",
			Help: "1 while lease expiry is suspended because too many leases expired at once.",
		}),
	}
	for _, st := range statuses {
		m.instances.WithLabelValues(string(st))
	}
	if err := registry.RegisterAll(reg, m.collectors()...); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.vips, m.instances, m.expirations, m.selfPreservation}
}

// unregister removes the collectors, so that a store reopened in the same
// process can register its own.
func (m *metrics) unregister() {
	registry.UnregisterAll(m.reg, m.collectors()...)
}
