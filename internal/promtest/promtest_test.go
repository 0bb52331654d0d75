package promtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "c"}, []string{"op", "result"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h_seconds", Help: "h"})
	reg.MustRegister(c, g, h)
	c.WithLabelValues("issue", "ok").Add(2)
	c.WithLabelValues("issue", "error").Add(5)
	g.Set(7)
	h.Observe(1)
	h.Observe(2)
	tests := []struct {
		name   string
		labels []string
		want   float64
		found  bool
	}{
		{"c_total", []string{"op", "issue", "result", "ok"}, 2, true},
		{"c_total", []string{"result", "error"}, 5, true},
		{"c_total", []string{"result", "missing"}, 0, false},
		{"g", nil, 7, true},
		{"h_seconds", nil, 2, true},
		{"absent", nil, 0, false},
	}
	for _, tt := range tests {
		if v, ok := Value(t, reg, tt.name, tt.labels...); v != tt.want || ok != tt.found {
			t.Errorf("Value(%s %v) = %v, %v; want %v, %v", tt.name, tt.labels, v, ok, tt.want, tt.found)
		}
	}
}
