package registry

import "github.com/prometheus/client_golang/prometheus"

// RegisterAll registers a store's collectors on reg, all or none: if one
// fails, those already registered are removed again, so a store that fails
// to open leaves the registry as it found it. A nil reg registers nothing.
func RegisterAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			UnregisterAll(reg, cs[:i]...)
			return err
		}
	}
	return nil
}

// UnregisterAll removes a store's collectors, so that a store reopened in
// the same process can register its own.
func UnregisterAll(reg prometheus.Registerer, cs ...prometheus.Collector) {
	if reg == nil {
		return
	}
	for _, c := range cs {
		reg.Unregister(c)
	}
}

// LeaseMetrics are the metrics of a registry that expires leases under the
// SelfPreservation rule, with the same names whichever registry it is.
type LeaseMetrics struct {
	// Expirations counts instances taken out because their lease expired.
	Expirations prometheus.Counter
	// SelfPreservation is 1 while expiry is suspended.
	SelfPreservation prometheus.Gauge
	// Overdue is how many instances have missed their lease and are still
	// served (held by self-preservation, or awaiting expiry), at the last pass.
	Overdue prometheus.Gauge
}

// NewLeaseMetrics returns the lease metrics, not registered.
func NewLeaseMetrics() LeaseMetrics {
	return LeaseMetrics{
		Expirations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xspace_registry_lease_expirations_total",
			Help: "Instances removed because their lease expired.",
		}),
		SelfPreservation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_registry_self_preservation",
			Help: "1 while lease expiry is suspended because too many leases expired at once.",
		}),
		Overdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_registry_overdue_instances",
			Help: "Instances whose lease has run out and that are still registered (held by self-preservation, or awaiting expiry), at the last sweep.",
		}),
	}
}

// Collectors returns the metrics, for RegisterAll.
func (m LeaseMetrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Expirations, m.SelfPreservation, m.Overdue}
}
