package prom

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterIsAllOrNone(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
	b := prometheus.NewCounter(prometheus.CounterOpts{Name: "b_total", Help: "b"})
	reg.MustRegister(b) // taken: the second registration fails
	if err := Register(reg, a, b); err == nil {
		t.Fatal("Register succeeded over an already registered collector")
	}
	if err := reg.Register(a); err != nil {
		t.Fatalf("a failed Register left a registered: %v", err)
	}
	Unregister(reg, a, b)
	if err := Register(reg, a, b); err != nil {
		t.Fatalf("after Unregister both register again: %v", err)
	}
	if err := Register(nil, a, b); err != nil {
		t.Fatalf("a nil registerer: %v", err)
	}
}
