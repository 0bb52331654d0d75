// Package promtest reads metric values from a Prometheus registry in tests.
package promtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Value returns one sample of the metric called name gathered from g: a
// counter's or gauge's value, or a histogram's sample count. labels are
// name, value pairs the sample must all carry. found is false when no
// sample matches.
func Value(tb testing.TB, g prometheus.Gatherer, name string, labels ...string) (value float64, found bool) {
	tb.Helper()
	if len(labels)%2 != 0 {
		tb.Fatalf("promtest: labels of %s must be name, value pairs: %v", name, labels)
	}
	families, err := g.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !carries(m.GetLabel(), labels) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func carries(have []*dto.LabelPair, want []string) bool {
	for i := 0; i < len(want); i += 2 {
		found := false
		for _, l := range have {
			found = found || l.GetName() == want[i] && l.GetValue() == want[i+1]
		}
		if !found {
			return false
		}
	}
	return true
}
