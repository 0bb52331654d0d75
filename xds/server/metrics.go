package server

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	streams      *prometheus.GaugeVec
	pushes       *prometheus.CounterVec
	pushedBytes  *prometheus.CounterVec
	resources    *prometheus.CounterVec
	nacks        *prometheus.CounterVec
	authFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xspace_xds_streams",
			Help: "Connected xDS streams by protocol (delta, sotw) and service (ads, cds, eds).",
		}, []string{"protocol", "type"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_xds_pushes_total",
			Help: "xDS responses sent, by resource type.",
		}, []string{"type"}),
		pushedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_xds_pushed_bytes_total",
			Help: "Encoded resource bytes sent in xDS responses, by resource type.",
		}, []string{"type"}),
		resources: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_xds_pushed_resources_total",
			Help: "Resources sent or removed in xDS responses, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_xds_nacks_total",
			Help: "Responses a proxy rejected (NACK), by resource type.",
		}, []string{"type"}),
	}
	m.authFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "xspace_xds_auth_failures_total",
		Help: "Streams refused because their bearer token was invalid or expired.",
	})
	if reg != nil {
		reg.MustRegister(m.streams, m.pushes, m.pushedBytes, m.resources, m.nacks, m.authFailures)
	}
	return m
}

func (m *metrics) pushed(typ string, resources, bytes int) {
	m.pushes.WithLabelValues(typ).Inc()
	m.resources.WithLabelValues(typ).Add(float64(resources))
	m.pushedBytes.WithLabelValues(typ).Add(float64(bytes))
}
