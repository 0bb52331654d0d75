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
