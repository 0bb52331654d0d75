package registry

import "testing"

func TestSelfPreservationRule(t *testing.T) {
	tests := []struct {
		name    string
		rule    SelfPreservation
		counts  LeaseCounts
		limit   int
		engaged bool
	}{
		{"nothing missed", DefaultSelfPreservation, LeaseCounts{Renewing: 100}, 15, false},
		{"one dead among many", DefaultSelfPreservation, LeaseCounts{Renewing: 100, Overdue: 1}, 15, false},
		{"share reached, not crossed", DefaultSelfPreservation, LeaseCounts{Renewing: 20, Overdue: 3}, 3, false},
		{"share crossed", DefaultSelfPreservation, LeaseCounts{Renewing: 20, Overdue: 4}, 3, true},
		{"recent expiries add up", DefaultSelfPreservation, LeaseCounts{Renewing: 18, Overdue: 2, Expired: 2}, 3, true},
		{"recent expiries alone do not engage", DefaultSelfPreservation, LeaseCounts{Renewing: 16, Expired: 4}, 3, false},
		{"small fleet, most dead", DefaultSelfPreservation, LeaseCounts{Renewing: 4, Overdue: 3}, 1, false},
		{"fleet of exactly the minimum", DefaultSelfPreservation, LeaseCounts{Renewing: 8, Overdue: 5, Expired: 2}, 1, true},
		{"no minimum", SelfPreservation{Share: 0.15, MinInstances: 1}, LeaseCounts{Renewing: 4, Overdue: 3}, 1, true},
		{"a single instance always expires", SelfPreservation{Share: 0.15, MinInstances: 1}, LeaseCounts{Renewing: 1, Overdue: 1}, 1, false},
		{"larger share", SelfPreservation{Share: 0.5, MinInstances: 10}, LeaseCounts{Renewing: 10, Overdue: 5}, 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rule.Limit(tt.counts); got != tt.limit {
				t.Errorf("Limit(%+v) = %d, want %d", tt.counts, got, tt.limit)
			}
			if got := tt.rule.Engaged(tt.counts); got != tt.engaged {
				t.Errorf("Engaged(%+v) = %v, want %v", tt.counts, got, tt.engaged)
			}
		})
	}
}
