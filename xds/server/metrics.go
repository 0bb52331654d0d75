package server

import (
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/prom"
)

type metrics struct {
	streams      *prometheus.GaugeVec
	pushes       *prometheus.CounterVec
	pushedBytes  *prometheus.CounterVec
	resources    *prometheus.CounterVec
	nacks        *prometheus.CounterVec
	authFailures prometheus.Counter
	// admission
	waiting prometheus.Gauge
	refused *prometheus.CounterVec
	// unknownDropped counts names the server stopped tracking for a
	// stream that held too many that do not exist.
	unknownDropped *prometheus.CounterVec
	// byType are the series of pushes, resources and pushedBytes of each
	// type, by typeIndex: every response counts into them, and a series
	// looked up by label costs a hash and a map lookup each time.
	byType [servedTypes]pushSeries
}

// pushSeries are the push counters of one type.
type pushSeries struct{ pushes, resources, bytes prometheus.Counter }

// Reasons a stream is refused before admission, the label of
// xspace_xds_streams_refused_total.
const (
	refusedPeer  = "peer_limit"
	refusedQueue = "queue_full"
)

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
	m.waiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "xspace_xds_admission_waiting_streams",
		Help: "Streams waiting for admission (xds.admission_rate); authenticated ones are admitted first.",
	})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xspace_xds_streams_refused_total",
		Help: "Streams refused before admission: peer_limit (xds.max_streams_per_peer), queue_full (xds.max_waiting_streams).",
	}, []string{"reason"})
	m.unknownDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xspace_xds_unknown_names_dropped_total",
		Help: "Subscribed names that do not exist which the server stopped tracking for a stream holding more than xds.max_unknown_names of a type, by resource type.",
	}, []string{"type"})
	// Every series a stream or a response can make exists from the start,
	// so that a rate or an alert on it sees a zero rather than nothing.
	for _, p := range []string{"delta", "sotw"} {
		for _, t := range []string{resource.AnyType, resource.ClusterType, resource.EndpointType} {
			m.streams.WithLabelValues(p, typeLabel(t))
		}
	}
	for i, t := range Types {
		l := typeLabel(t)
		m.nacks.WithLabelValues(l)
		m.byType[i] = pushSeries{m.pushes.WithLabelValues(l), m.resources.WithLabelValues(l), m.pushedBytes.WithLabelValues(l)}
	}
	for _, r := range []string{refusedPeer, refusedQueue} {
		m.refused.WithLabelValues(r)
	}
	for _, t := range Types {
		m.unknownDropped.WithLabelValues(typeLabel(t))
	}
	prom.MustRegister(reg, m.streams, m.pushes, m.pushedBytes, m.resources, m.nacks, m.authFailures,
		m.waiting, m.refused, m.unknownDropped)
	return m
}

// pushed counts a response of a type the server serves.
func (m *metrics) pushed(typeURL string, resources, bytes int) {
	i := typeIndex(typeURL)
	if i < 0 {
		return
	}
	m.byType[i].pushes.Inc()
	m.byType[i].resources.Add(float64(resources))
	m.byType[i].bytes.Add(float64(bytes))
}
