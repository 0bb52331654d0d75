package secrets

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/prom"
)

// Values of the result label.
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

// metrics are the Manager's Prometheus collectors. None has a per-service
// label: per-certificate detail is in Manager.Certificates. They exist even
// when no Registerer is given, so the code that updates them never checks
// for nil.
type metrics struct {
	certificates  prometheus.Gauge
	soonestExpiry prometheus.Gauge
	nearExpiry    prometheus.Gauge
	renewals      *prometheus.CounterVec
	acquireErrors prometheus.Counter
	issueSeconds  prometheus.Histogram
	trustUpdates  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		certificates: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_secrets_certificates",
			Help: "Valid certificates cached for the services that proxies hold.",
		}),
		soonestExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_secrets_soonest_expiry_timestamp_seconds",
			Help: "NotAfter of the cached certificate that expires first, as a Unix time; 0 when none is cached.",
		}),
		nearExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_secrets_near_expiry_certificates",
			Help: "Held certificates within the near-expiry window of their NotAfter, or held identities not served (expired, or not issued yet); these degrade /readyz.",
		}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_secrets_renewals_total",
			Help: "Background renewals of cached certificates, by result.",
		}, []string{"result"}),
		acquireErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xspace_secrets_acquire_errors_total",
			Help: "First issues of a service's certificate that failed (nothing was served).",
		}),
		issueSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "xspace_secrets_issue_seconds",
			Help:    "Time the issuer took to issue a certificate, successful or not.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		trustUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xspace_secrets_trust_bundle_updates_total",
			Help: "Times the trust bundle fetched from the issuer differed from the cached one.",
		}),
	}
	for _, r := range []string{resultSuccess, resultFailure} {
		m.renewals.WithLabelValues(r)
	}
	prom.MustRegister(reg, m.certificates, m.soonestExpiry, m.nearExpiry, m.renewals,
		m.acquireErrors, m.issueSeconds, m.trustUpdates)
	return m
}
