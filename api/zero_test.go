package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// TestExplicitZerosMeanWhatTheySay applies policies with explicit zeros
// over the REST API, as JSON and as YAML, and reads back what is in force.
func TestExplicitZerosMeanWhatTheySay(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name, contentType, body string
		check                   func(p registry.Policy) bool
	}{
		{
			"json", jsonCT, `{"policy":{"retries":{"attempts":0,"budget_percent":0},"outlier_detection":{"consecutive_5xx":0}}}`,
			func(p registry.Policy) bool {
				return p.Retries.Attempts == 0 && p.Retries.BudgetPerc == 0 && p.OutlierDetection.Consecutive5xx == 0 &&
					p.OutlierDetection.Interval == registry.DefaultEjectionInterval
			},
		},
		{
			"yaml", yamlCT, "policy:\n  retries: {attempts: 0, budget_percent: 0}\n  outlier_detection: {consecutive_5xx: 0}\n",
			func(p registry.Policy) bool {
				return p.Retries.Attempts == 0 && p.Retries.BudgetPerc == 0 && p.OutlierDetection.Consecutive5xx == 0
			},
		},
		{
			"left out: defaults", jsonCT, `{"policy":{"outlier_detection":{}}}`,
			func(p registry.Policy) bool {
				return p.Retries.Attempts == registry.DefaultRetryAttempts && p.Retries.BudgetPerc == registry.DefaultRetryBudgetPercent &&
					p.OutlierDetection.Consecutive5xx == registry.DefaultConsecutive5xx
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := s.send(t, "PUT", "/v1/vips/payments", tt.contentType, []byte(tt.body))
			if status != http.StatusOK && status != http.StatusCreated {
				t.Fatalf("PUT: %d %s", status, body)
			}
			for _, from := range [][]byte{body, s.get(t, "/v1/vips/payments")} {
				var v registry.VIP
				if err := json.Unmarshal(from, &v); err != nil {
					t.Fatal(err)
				}
				if !tt.check(v.Policy.Normalize()) {
					t.Errorf("policy in force: %s", from)
				}
			}
			stored, err := s.store.GetVIP(t.Context(), "payments")
			if err != nil || !tt.check(stored.Policy) {
				t.Errorf("stored policy %+v, %v", stored.Policy, err)
			}
		})
	}
}

// TestZeroRefusalsSayWhatToDo: the 0s that are refused come with what to
// write instead.
func TestZeroRefusalsSayWhatToDo(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name, path, contentType, body string
		says                          []string
	}{
		{
			"weight", "/v1/vips/payments/instances/web-1", jsonCT, `{"address":"10.0.0.1","port":80,"weight":0}`,
			[]string{"DRAINING", "OUT_OF_SERVICE", "leave weight out"},
		},
		{
			"ttl", "/v1/vips/payments/instances/web-1", jsonCT, `{"address":"10.0.0.1","port":80,"ttl_seconds":0}`,
			[]string{"expire the instance at once", "leave it out for 30"},
		},
		{
			"connect timeout", "/v1/vips/payments", jsonCT, `{"policy":{"timeouts":{"connect":"0s"}}}`,
			[]string{"250ms", "leave it out for 1s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, header, body := s.send(t, "PUT", tt.path, tt.contentType, []byte(tt.body))
			e := decodeError(t, header, body)
			if status != http.StatusBadRequest {
				t.Errorf("status %d, want 400", status)
			}
			for _, want := range tt.says {
				if !strings.Contains(e.Message, want) {
					t.Errorf("message %q does not say %q", e.Message, want)
				}
			}
		})
	}
}
