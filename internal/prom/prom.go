// Package prom is how every component of meshd exports Prometheus
// metrics: it takes a prometheus.Registerer (nil: nothing is exported, the
// metrics still count), creates every series it can at construction so
// that dashboards and alerts see zeros rather than nothing, and registers
// all its collectors at once with Register, all or none. A component whose
// constructor returns an error returns Register's; the others call
// MustRegister, for which a failure (a duplicate name) is a programming
// error.
package prom

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers cs on reg, all or none: if one fails, those already
// registered are removed again, so a component that fails to start leaves
// the registry as it found it. A nil reg registers nothing.
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			Unregister(reg, cs[:i]...)
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

// MustRegister is Register for components that cannot fail otherwise; it
// panics if a collector is registered already.
func MustRegister(reg prometheus.Registerer, cs ...prometheus.Collector) {
	if err := Register(reg, cs...); err != nil {
		panic(err)
	}
}

// Unregister removes collectors, so that a component reopened in the same
// process can register its own.
func Unregister(reg prometheus.Registerer, cs ...prometheus.Collector) {
	if reg == nil {
		return
	}
	for _, c := range cs {
		reg.Unregister(c)
	}
}

// LeaseMetrics are the metrics of a registry that expires leases under the
// registry.SelfPreservation rule, with the same names whichever registry it is.
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

// Collectors returns the metrics, for Register.
func (m LeaseMetrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Expirations, m.SelfPreservation, m.Overdue}
}
