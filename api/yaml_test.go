package api_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestYAMLRetryOn applies retries.on written the ways YAML allows: YAML 1.1
// reads an unquoted on as the boolean true, and the policy must still get
// its retry conditions.
func TestYAMLRetryOn(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"block", "policy:\n  retries:\n    attempts: 3\n    on: [5xx, reset]\n", []string{"5xx", "reset"}},
		{
			"flow, as the README writes it", "policy:\n  retries: {attempts: 2, on: [connect-failure, refused-stream, reset], per_try_timeout: 0s, budget_percent: 20}\n",
			[]string{"connect-failure", "refused-stream", "reset"},
		},
		{"block list", "policy:\n  retries:\n    on:\n      - gateway-error\n", []string{"gateway-error"}},
		{"quoted", "policy:\n  retries:\n    \"on\": [unavailable]\n", []string{"unavailable"}},
		{"capitalized", "policy:\n  retries:\n    On: [cancelled]\n", []string{"cancelled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := s.send(t, "PUT", "/v1/vips/payments", yamlCT, []byte(tt.yaml))
			if status != http.StatusOK && status != http.StatusCreated {
				t.Fatalf("PUT: %d %s", status, body)
			}
			v, err := s.store.GetVIP(t.Context(), "payments")
			if err != nil || !slices.Equal(v.Policy.Retries.On, tt.want) {
				t.Errorf("stored retries.on = %v (%v), want %v", v.Policy.Retries.On, err, tt.want)
			}
		})
	}
}

// TestYAMLRetryOnRefusals: the conditions given twice, or a key YAML reads
// as false, are refused with a message that says why.
func TestYAMLRetryOnRefusals(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name, yaml, code, field, says string
	}{
		{"given twice", "policy:\n  retries:\n    on: [5xx]\n    \"on\": [reset]\n", "malformed_body", "policy.retries.on", "given twice"},
		{"off", "policy:\n  retries:\n    off: [5xx]\n", "unknown_field", "policy.retries.false", "quote the key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.snapshot(t)
			status, header, body := s.send(t, "PUT", "/v1/vips/payments", yamlCT, []byte(tt.yaml))
			e := decodeError(t, header, body)
			if status != http.StatusBadRequest || e.Code != tt.code || e.Field != tt.field || !strings.Contains(e.Message, tt.says) {
				t.Errorf("got %d %+v, want 400 %s on %s saying %q", status, e, tt.code, tt.field, tt.says)
			}
			if after := s.snapshot(t); string(before) != string(after) {
				t.Errorf("stored state changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}
