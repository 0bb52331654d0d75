package registry

import (
	"bytes"
	"encoding/json"
	"slices"
)

// Absent and zero are different. On the wire (the REST API, YAML files,
// registry.db, Consul KV) an optional number of a policy may be left out,
// which means its default, or given, and then 0 is a value like any other:
// it either means what it says (retries.attempts: 0 is no retry) or
// Validate refuses it with a hint (timeouts.connect: 0s). In Go the zero
// value still means "the default", so that Policy{} is the default policy;
// Policy.Explicit records which fields were given, and Normalize keeps
// those that hold a meaningful 0 instead of defaulting them.

// policyJSON is Policy on the wire, with a pointer wherever absent and 0 differ.
type policyJSON struct {
	Protocol         Protocol      `json:"protocol,omitempty"`
	Port             *uint32       `json:"port,omitempty"`
	SecurePort       *uint32       `json:"secure_port,omitempty"`
	Plaintext        *bool         `json:"plaintext,omitempty"`
	AllowedCallers   callersJSON   `json:"allowed_callers,omitzero"`
	LoadBalancing    LoadBalancing `json:"load_balancing,omitempty"`
	HashOn           *HashOn       `json:"hash_on,omitempty"`
	Timeouts         timeoutsJSON  `json:"timeouts"`
	Retries          retriesJSON   `json:"retries"`
	CircuitBreakers  breakersJSON  `json:"circuit_breakers"`
	OutlierDetection *outlierJSON  `json:"outlier_detection,omitempty"`
}

type timeoutsJSON struct {
	Connect *Duration `json:"connect,omitempty"`
	Request *Duration `json:"request,omitempty"`
	Idle    *Duration `json:"idle,omitempty"`
}

type retriesJSON struct {
	Attempts   *uint32   `json:"attempts,omitempty"`
	On         []string  `json:"on,omitempty"`
	PerTry     *Duration `json:"per_try_timeout,omitempty"`
	BudgetPerc *float64  `json:"budget_percent,omitempty"`
}

type breakersJSON struct {
	MaxConnections     *uint32 `json:"max_connections,omitempty"`
	MaxPendingRequests *uint32 `json:"max_pending_requests,omitempty"`
	MaxRequests        *uint32 `json:"max_requests,omitempty"`
	MaxRetries         *uint32 `json:"max_retries,omitempty"`
}

type outlierJSON struct {
	Consecutive5xx     *uint32   `json:"consecutive_5xx,omitempty"`
	Interval           *Duration `json:"interval,omitempty"`
	BaseEjectionTime   *Duration `json:"base_ejection_time,omitempty"`
	MaxEjectionPercent *uint32   `json:"max_ejection_percent,omitempty"`
}

// UnmarshalJSON decodes a policy strictly (unknown fields are errors) and
// records in Explicit every optional number it gives.
func (p *Policy) UnmarshalJSON(b []byte) error {
	var w policyJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return err
	}
	*p = w.policy()
	return nil
}

// Equal reports whether p and q are the same policy, that is whether they
// read the same on the wire: the same values and the same explicit zeros
// (an Explicit entry naming a field that holds another value says nothing,
// and neither does a nil list against an empty one). go-cmp uses it, so a
// decoded policy compares equal to the one that was encoded.
func (p Policy) Equal(q Policy) bool {
	a, errA := json.Marshal(p)
	b, errB := json.Marshal(q)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// MarshalJSON writes a policy with every non-zero field, and the zeros
// Explicit names, so that decoding it gives the same policy back.
func (p Policy) MarshalJSON() ([]byte, error) { return json.Marshal(wirePolicy(p)) }

func (w policyJSON) policy() Policy {
	var e []string
	p := Policy{Protocol: w.Protocol, Plaintext: w.Plaintext, AllowedCallers: w.AllowedCallers.list, LoadBalancing: w.LoadBalancing, HashOn: w.HashOn}
	in(&p.Port, w.Port, "port", &e)
	in(&p.SecurePort, w.SecurePort, "secure_port", &e)
	in(&p.Timeouts.Connect, w.Timeouts.Connect, "timeouts.connect", &e)
	in(&p.Timeouts.Request, w.Timeouts.Request, "timeouts.request", &e)
	in(&p.Timeouts.Idle, w.Timeouts.Idle, "timeouts.idle", &e)
	in(&p.Retries.Attempts, w.Retries.Attempts, "retries.attempts", &e)
	p.Retries.On = w.Retries.On
	in(&p.Retries.PerTry, w.Retries.PerTry, "retries.per_try_timeout", &e)
	in(&p.Retries.BudgetPerc, w.Retries.BudgetPerc, "retries.budget_percent", &e)
	cb := w.CircuitBreakers
	in(&p.CircuitBreakers.MaxConnections, cb.MaxConnections, "circuit_breakers.max_connections", &e)
	in(&p.CircuitBreakers.MaxPendingRequests, cb.MaxPendingRequests, "circuit_breakers.max_pending_requests", &e)
	in(&p.CircuitBreakers.MaxRequests, cb.MaxRequests, "circuit_breakers.max_requests", &e)
	in(&p.CircuitBreakers.MaxRetries, cb.MaxRetries, "circuit_breakers.max_retries", &e)
	if o := w.OutlierDetection; o != nil {
		p.OutlierDetection = &OutlierDetection{}
		in(&p.OutlierDetection.Consecutive5xx, o.Consecutive5xx, "outlier_detection.consecutive_5xx", &e)
		in(&p.OutlierDetection.Interval, o.Interval, "outlier_detection.interval", &e)
		in(&p.OutlierDetection.BaseEjectionTime, o.BaseEjectionTime, "outlier_detection.base_ejection_time", &e)
		in(&p.OutlierDetection.MaxEjectionPercent, o.MaxEjectionPercent, "outlier_detection.max_ejection_percent", &e)
	}
	p.Explicit = e
	return p
}

func wirePolicy(p Policy) policyJSON {
	e := p.Explicit
	w := policyJSON{
		Protocol: p.Protocol, Plaintext: p.Plaintext, AllowedCallers: callersJSON{p.AllowedCallers},
		LoadBalancing: p.LoadBalancing, HashOn: p.HashOn,
		Port: out(p.Port, "port", e), SecurePort: out(p.SecurePort, "secure_port", e),
		Timeouts: timeoutsJSON{
			Connect: out(p.Timeouts.Connect, "timeouts.connect", e),
			Request: out(p.Timeouts.Request, "timeouts.request", e),
			Idle:    out(p.Timeouts.Idle, "timeouts.idle", e),
		},
		Retries: retriesJSON{
			Attempts:   out(p.Retries.Attempts, "retries.attempts", e),
			On:         p.Retries.On,
			PerTry:     out(p.Retries.PerTry, "retries.per_try_timeout", e),
			BudgetPerc: out(p.Retries.BudgetPerc, "retries.budget_percent", e),
		},
		CircuitBreakers: breakersJSON{
			MaxConnections:     out(p.CircuitBreakers.MaxConnections, "circuit_breakers.max_connections", e),
			MaxPendingRequests: out(p.CircuitBreakers.MaxPendingRequests, "circuit_breakers.max_pending_requests", e),
			MaxRequests:        out(p.CircuitBreakers.MaxRequests, "circuit_breakers.max_requests", e),
			MaxRetries:         out(p.CircuitBreakers.MaxRetries, "circuit_breakers.max_retries", e),
		},
	}
	if o := p.OutlierDetection; o != nil {
		w.OutlierDetection = &outlierJSON{
			Consecutive5xx:     out(o.Consecutive5xx, "outlier_detection.consecutive_5xx", e),
			Interval:           out(o.Interval, "outlier_detection.interval", e),
			BaseEjectionTime:   out(o.BaseEjectionTime, "outlier_detection.base_ejection_time", e),
			MaxEjectionPercent: out(o.MaxEjectionPercent, "outlier_detection.max_ejection_percent", e),
		}
	}
	return w
}

// in copies a given wire value into the model and records its path.
func in[T comparable](dst *T, src *T, path string, explicit *[]string) {
	if src != nil {
		*dst = *src
		*explicit = append(*explicit, path)
	}
}

// out is a model value on the wire: left out when it is zero, unless its
// path is explicit.
func out[T comparable](v T, path string, explicit []string) *T {
	var zero T
	if v == zero && !slices.Contains(explicit, path) {
		return nil
	}
	return &v
}
