package discovery

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/prom"
)

// Results of an on-demand lookup, the label of xspace_discovery_lookups_total.
const (
	resultFound    = "found"
	resultNotFound = "not_found"
	resultError    = "error"
)

type metrics struct {
	lookups *prometheus.CounterVec
	// found, notFound and failed are lookups' series of each result,
	// looked up once rather than at every lookup.
	found, notFound, failed prometheus.Counter
	resolve                 prometheus.Histogram
	watched                 prometheus.Gauge
	registryErrors          prometheus.Counter
	translateErrors         prometheus.Counter
	absent                  prometheus.Gauge
	absentEvicted           prometheus.Counter
	absentUntracked         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_discovery_lookups_total",
			Help: "On-demand cluster lookups by result (found, not_found, error).",
		}, []string{"result"}),
		resolve: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "xspace_discovery_resolve_seconds",
			Help: "Time from a stream subscribing to a cluster until its resources (or their absence) are in the cache.",
			Buckets: []float64{
				0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
				0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
			},
		}),
		watched: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_discovery_watched_vips",
			Help: "VIPs currently watched because a stream holds them or held them within the grace period.",
		}),
		registryErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xspace_discovery_registry_errors_total",
			Help: "Registry lookups that failed; the last known state kept being served.",
		}),
		translateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xspace_discovery_translate_errors_total",
			Help: "VIPs whose generated resources failed validation and were not published.",
		}),
		absent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_discovery_not_found_vips",
			Help: "Watched VIPs that do not exist (held by a stream, or within discovery.not_found_grace); at most discovery.max_not_found.",
		}),
		absentEvicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xspace_discovery_not_found_evicted_total",
			Help: "VIPs that do not exist and that no stream held, forgotten before their grace ended to stay within discovery.max_not_found.",
		}),
		absentUntracked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xspace_discovery_not_found_untracked_total",
			Help: "Lookups of VIPs that do not exist answered without keeping any state, because discovery.max_not_found were held; such a VIP is not pushed to the stream if it appears later.",
		}),
	}
	m.found = m.lookups.WithLabelValues(resultFound)
	m.notFound = m.lookups.WithLabelValues(resultNotFound)
	m.failed = m.lookups.WithLabelValues(resultError)
	prom.MustRegister(reg, m.lookups, m.resolve, m.watched, m.registryErrors, m.translateErrors,
		m.absent, m.absentEvicted, m.absentUntracked)
	return m
}

// looked counts a lookup with its result.
func (m *metrics) looked(result string) {
	switch result {
	case resultFound:
		m.found.Inc()
	case resultNotFound:
		m.notFound.Inc()
	default:
		m.failed.Inc()
	}
}
