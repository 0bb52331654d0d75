package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestAllowedCallersRoundTrip: allowed_callers left out, empty and a list,
// sent as JSON or YAML, are stored as three different policies (a list
// sorted, without repeats), and read back the same through the API.
func TestAllowedCallersRoundTrip(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name, ct, body string
		want           *[]string
		wire           string // allowed_callers in the GET answer, "" when left out
	}{
		{"left out", jsonCT, `{"policy":{"protocol":"http2"}}`, nil, ""},
		{"empty, json", jsonCT, `{"policy":{"allowed_callers":[]}}`, &[]string{}, `[]`},
		{"empty, yaml", yamlCT, "policy:\n  allowed_callers: []\n", &[]string{}, `[]`},
		{"a list, yaml", yamlCT, "policy:\n  allowed_callers:\n    - web\n    - orders\n    - web\n", &[]string{"orders", "web"}, `["orders","web"]`},
		{"a list, json", jsonCT, `{"policy":{"allowed_callers":["batch"]}}`, &[]string{"batch"}, `["batch"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := s.send(t, "PUT", "/v1/vips/payments", tt.ct, []byte(tt.body))
			if status != http.StatusOK && status != http.StatusCreated {
				t.Fatalf("PUT: %d %s", status, body)
			}
			v, err := s.store.GetVIP(t.Context(), "payments")
			if err != nil || !cmp.Equal(v.Policy.AllowedCallers, tt.want) {
				t.Fatalf("stored allowed_callers = %v (%v), want %v", v.Policy.AllowedCallers, err, tt.want)
			}
			status, _, body = s.send(t, "GET", "/v1/vips/payments", "", nil)
			var got struct {
				Policy map[string]json.RawMessage `json:"policy"`
			}
			if status != http.StatusOK || json.Unmarshal(body, &got) != nil {
				t.Fatalf("GET: %d %s", status, body)
			}
			if w := string(got.Policy["allowed_callers"]); w != tt.wire {
				t.Fatalf("GET answers allowed_callers %q, want %q", w, tt.wire)
			}
		})
	}
}

// TestAllowedCallersRefusalsSayWhatToDo: the message names the entry and
// what a service name is, or what null means and what to write instead.
func TestAllowedCallersRefusalsSayWhatToDo(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name, ct, body, field string
		says                  []string
	}{
		{
			"not a service name", jsonCT, `{"policy":{"allowed_callers":["orders","web","Pay ments"]}}`, "policy.allowed_callers[2]",
			[]string{`policy.allowed_callers[2]: "Pay ments" is not a service name`, "only lower-case letters, digits and '-'", `such as "orders"`},
		},
		{
			"null", yamlCT, "policy:\n  allowed_callers:\n", "policy.allowed_callers",
			[]string{"leave the field out to let any mesh identity call", "give [] to let nobody"},
		},
		{
			"a YAML boolean", yamlCT, "policy:\n  allowed_callers: [no]\n", "policy.allowed_callers[0]",
			[]string{"expected a string, got bool", "quote it"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, header, body := s.send(t, "PUT", "/v1/vips/payments", tt.ct, []byte(tt.body))
			e := decodeError(t, header, body)
			if status != http.StatusBadRequest || e.Code != "invalid_argument" || e.Field != tt.field {
				t.Fatalf("got %d %+v, want 400 invalid_argument on %s", status, e, tt.field)
			}
			for _, w := range tt.says {
				if !strings.Contains(e.Message, w) {
					t.Errorf("message %q does not say %q", e.Message, w)
				}
			}
		})
	}
}

// TestAllowedCallersWithPlaintextWarn: a policy that names allowed callers
// and still serves plaintext is stored, with a Warning saying that
// plaintext callers get past the list and how to turn it off; with
// plaintext: false, or without a list, there is nothing to warn about.
func TestAllowedCallersWithPlaintextWarn(t *testing.T) {
	s := newTestServer(t)
	for _, tt := range []struct {
		body string
		warn bool
	}{
		{`{"policy":{"allowed_callers":["web"]}}`, true},
		{`{"policy":{"allowed_callers":[]}}`, true},
		{`{"policy":{"allowed_callers":["web"],"plaintext":false}}`, false},
		{`{"policy":{}}`, false},
	} {
		status, header, body := s.send(t, "PUT", "/v1/vips/payments", jsonCT, []byte(tt.body))
		if status != http.StatusOK && status != http.StatusCreated {
			t.Fatalf("PUT %s: %d %s", tt.body, status, body)
		}
		got := header.Get("Warning")
		if !tt.warn && got != "" {
			t.Errorf("PUT %s: Warning %q; want none", tt.body, got)
		}
		if tt.warn && (!strings.HasPrefix(got, `299 - "`) || !strings.Contains(got, "payments.vip") || !strings.Contains(got, "plaintext: false")) {
			t.Errorf("PUT %s: Warning %q; want a 299 naming payments.vip and plaintext: false", tt.body, got)
		}
	}
}
