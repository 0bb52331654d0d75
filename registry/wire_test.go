package registry

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestAbsentAndZeroDiffer decodes policies that give a number as 0, leave
// it out or give another value, and checks what Validate and Normalize make
// of them, and that the normalized policy survives a JSON round trip. It is
// long because of its table.
func TestAbsentAndZeroDiffer(t *testing.T) {
	def := Policy{}.Normalize()
	tests := []struct {
		name  string
		json  string
		field string // refused: the field Validate names
		hint  string
		check func(p Policy) bool
	}{
		{"absent: defaults", `{}`, "", "", func(p Policy) bool {
			return p.Retries.Attempts == DefaultRetryAttempts && p.Retries.BudgetPerc == DefaultRetryBudgetPercent
		}},
		{"attempts 0: no retries", `{"retries":{"attempts":0}}`, "", "", func(p Policy) bool {
			return p.Retries.Attempts == 0 && p.Retries.BudgetPerc == DefaultRetryBudgetPercent
		}},
		{"budget 0: no budget", `{"retries":{"budget_percent":0}}`, "", "", func(p Policy) bool { return p.Retries.BudgetPerc == 0 }},
		{"max_retries 0", `{"circuit_breakers":{"max_retries":0}}`, "", "", func(p Policy) bool { return p.CircuitBreakers.MaxRetries == 0 }},
		{"request timeout 0s: none", `{"timeouts":{"request":"0s"}}`, "", "", func(p Policy) bool { return p.Timeouts.Request == 0 }},
		{"idle timeout 0s: none", `{"timeouts":{"idle":"0s"}}`, "", "", func(p Policy) bool { return p.Timeouts.Idle == 0 }},
		{"consecutive_5xx 0: check off", `{"outlier_detection":{"consecutive_5xx":0}}`, "", "", func(p Policy) bool {
			o := p.OutlierDetection
			return o.Consecutive5xx == 0 && o.MaxEjectionPercent == DefaultMaxEjectionPercent && o.Interval == DefaultEjectionInterval
		}},
		{"max_ejection_percent 0", `{"outlier_detection":{"max_ejection_percent":0}}`, "", "", func(p Policy) bool {
			return p.OutlierDetection.MaxEjectionPercent == 0 && p.OutlierDetection.Consecutive5xx == DefaultConsecutive5xx
		}},
		{"port 0 is no port, as absent", `{"port":0,"secure_port":0,"retries":{"per_try_timeout":"0s"}}`, "", "", func(p Policy) bool {
			return cmp.Equal(p, def)
		}},
		{"values other than 0 as given", `{"retries":{"attempts":5,"budget_percent":12.5}}`, "", "", func(p Policy) bool {
			return p.Retries.Attempts == 5 && p.Retries.BudgetPerc == 12.5
		}},
		{"connect 0s refused", `{"timeouts":{"connect":"0s"}}`, "policy.timeouts.connect", "leave it out for 1s", nil},
		{"max_connections 0 refused", `{"circuit_breakers":{"max_connections":0}}`, "policy.circuit_breakers.max_connections", "use at least 1", nil},
		{"max_pending_requests 0 refused", `{"circuit_breakers":{"max_pending_requests":0}}`, "policy.circuit_breakers.max_pending_requests", "use at least 1", nil},
		{"max_requests 0 refused", `{"circuit_breakers":{"max_requests":0}}`, "policy.circuit_breakers.max_requests", "use at least 1", nil},
		{"interval 0s refused", `{"outlier_detection":{"interval":"0s"}}`, "policy.outlier_detection.interval", "leave it out for 10s", nil},
		{"base ejection 0s refused", `{"outlier_detection":{"base_ejection_time":"0s"}}`, "policy.outlier_detection.base_ejection_time", "max_ejection_percent: 0", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Policy
			if err := json.Unmarshal([]byte(tt.json), &p); err != nil {
				t.Fatalf("decode: %v", err)
			}
			err := p.Validate()
			var ve *ValidationError
			if tt.field != "" {
				if !errors.As(err, &ve) || ve.Field != tt.field || !strings.Contains(ve.Message, tt.hint) {
					t.Errorf("Validate = %v, want an error on %s saying %q", err, tt.field, tt.hint)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			n := p.Normalize()
			if !tt.check(n) {
				t.Errorf("normalized: %+v", n)
			}
			b, err := json.Marshal(n)
			if err != nil {
				t.Fatal(err)
			}
			var back Policy
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(n, back.Normalize()); diff != "" {
				t.Errorf("JSON round trip of %s (-before +after):\n%s", b, diff)
			}
		})
	}
}

// TestGoZeroValueIsTheDefault: in Go, a zero field still means the default,
// unless Explicit names it.
func TestGoZeroValueIsTheDefault(t *testing.T) {
	p := Policy{Retries: Retries{Attempts: 0}}.Normalize()
	if p.Retries.Attempts != DefaultRetryAttempts || p.Explicit != nil {
		t.Errorf("Policy{} normalized: attempts %d, explicit %v; want the default and nothing explicit", p.Retries.Attempts, p.Explicit)
	}
	p = Policy{Explicit: []string{"retries.attempts", "timeouts.connect"}}.Normalize()
	if p.Retries.Attempts != 0 || p.Timeouts.Connect != DefaultConnectTimeout {
		t.Errorf("explicit zeros normalized: attempts %d, connect %s; want 0 kept and connect defaulted", p.Retries.Attempts, p.Timeouts.Connect.D())
	}
	if diff := cmp.Diff([]string{"retries.attempts"}, p.Explicit); diff != "" {
		t.Errorf("Explicit after Normalize (-want +got):\n%s", diff)
	}
	b, _ := json.Marshal(Policy{Protocol: GRPC})
	if strings.Contains(string(b), "attempts") {
		t.Errorf("a zero the Go caller did not mean was written: %s", b)
	}
}

// TestPoliciesOfThePreviousVersionLoad decodes policies exactly as meshd
// before explicit zeros wrote them (commit 06e54fe) and checks they mean
// what they meant.
func TestPoliciesOfThePreviousVersionLoad(t *testing.T) {
	no := false
	tests := []struct {
		name, json string
		want       Policy
	}{
		{
			"default", `{"protocol":"http1","plaintext":true,"load_balancing":"round_robin","timeouts":{"connect":"1s","request":"15s","idle":"1h0m0s"},"retries":{"attempts":2,"on":["connect-failure","refused-stream","reset"],"budget_percent":20},"circuit_breakers":{"max_connections":1024,"max_pending_requests":1024,"max_requests":1024,"max_retries":3}}`,
			Policy{}.Normalize(),
		},
		{
			"custom", `{"protocol":"grpc","port":7001,"plaintext":false,"load_balancing":"least_request","timeouts":{"connect":"250ms","request":"15s","idle":"1h0m0s"},"retries":{"attempts":4,"on":["5xx"],"per_try_timeout":"1s","budget_percent":12.5},"circuit_breakers":{"max_connections":1024,"max_pending_requests":1024,"max_requests":1024,"max_retries":3},"outlier_detection":{"consecutive_5xx":3,"interval":"10s","base_ejection_time":"30s","max_ejection_percent":50}}`,
			Policy{
				Protocol: GRPC, Port: 7001, Plaintext: &no, LoadBalancing: LeastRequest,
				Timeouts:         Timeouts{Connect: Duration(250 * time.Millisecond)},
				Retries:          Retries{Attempts: 4, On: []string{"5xx"}, PerTry: Duration(time.Second), BudgetPerc: 12.5},
				OutlierDetection: &OutlierDetection{Consecutive5xx: 3},
			}.Normalize(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Policy
			if err := json.Unmarshal([]byte(tt.json), &p); err != nil {
				t.Fatal(err)
			}
			if err := p.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if diff := cmp.Diff(tt.want, p.Normalize()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestPolicyEqual(t *testing.T) {
	def := Policy{}.Normalize()
	var decoded Policy
	b, _ := json.Marshal(def)
	if err := json.Unmarshal(b, &decoded); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		a, b  Policy
		equal bool
	}{
		{"decoded and encoded", def, decoded, true},
		{"explicit entry for a value", Policy{Retries: Retries{Attempts: 3}}, Policy{Retries: Retries{Attempts: 3}, Explicit: []string{"retries.attempts"}}, true},
		{"explicit zero against absent", Policy{}, Policy{Explicit: []string{"retries.attempts"}}, false},
		{"another value", def, Policy{Protocol: GRPC}.Normalize(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Equal(tt.b); got != tt.equal {
				t.Errorf("Equal = %v, want %v", got, tt.equal)
			}
			if got := cmp.Equal(tt.a, tt.b); got != tt.equal {
				t.Errorf("cmp.Equal = %v, want %v", got, tt.equal)
			}
		})
	}
}
