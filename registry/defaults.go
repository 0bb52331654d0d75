package registry

import (
	"slices"
	"time"
)

// Defaults applied by Normalize wherever a service owner left a field zero.
const (
	DefaultProtocol           = HTTP1
	DefaultLoadBalancing      = RoundRobin
	DefaultConnectTimeout     = Duration(time.Second)
	DefaultRequestTimeout     = Duration(15 * time.Second)
	DefaultIdleTimeout        = Duration(time.Hour)
	DefaultRetryAttempts      = 2
	DefaultRetryBudgetPercent = 20.0
	DefaultMaxConnections     = 1024
	DefaultMaxPendingRequests = 1024
	DefaultMaxRequests        = 1024
	DefaultMaxRetries         = 3
	DefaultWeight             = 1
	DefaultTTL                = Duration(30 * time.Second)
)

// DefaultRetryOn are the retry conditions used when a VIP names none: only
// failures where the request cannot have reached the application.
var DefaultRetryOn = []string{"connect-failure", "refused-stream", "reset"}

// Default outlier detection, for a VIP that turns it on.
const (
	DefaultConsecutive5xx     = 5
	DefaultEjectionInterval   = Duration(10 * time.Second)
	DefaultBaseEjectionTime   = Duration(30 * time.Second)
	DefaultMaxEjectionPercent = 50
)

// ZeroMeans says what an explicit 0 means for each optional number of a
// policy where it means something; Normalize keeps such a 0. An explicit 0
// elsewhere is either the default already (port, secure_port,
// per_try_timeout) or refused by Validate with a hint.
var ZeroMeans = map[string]string{
	"timeouts.request":                       "no request timeout",
	"timeouts.idle":                          "upstream connections are never closed for being idle",
	"retries.attempts":                       "no retries",
	"retries.budget_percent":                 "no retry budget: only circuit_breakers.max_retries retries at once",
	"circuit_breakers.max_retries":           "no retry is allowed regardless of the budget",
	"outlier_detection.consecutive_5xx":      "the consecutive-5xx check is off",
	"outlier_detection.max_ejection_percent": "no host is ever ejected",
}

// Normalize returns p with every zero field set to its default, except the
// meaningful zeros Explicit names. It is idempotent, and what a store keeps
// is always normalized, so what a service owner reads back is the policy in
// force. Its Explicit lists only the zeros it kept.
func (p Policy) Normalize() Policy {
	if p.Protocol == "" {
		p.Protocol = DefaultProtocol
	}
	if p.Plaintext == nil {
		t := true
		p.Plaintext = &t
	}
	p.AllowedCallers = normalCallers(p.AllowedCallers)
	if p.LoadBalancing == "" {
		p.LoadBalancing = DefaultLoadBalancing
	}
	if p.HashOn == nil && p.LoadBalancing.Hashed() {
		// Stored before hash_on existed (Validate refuses it now): hash on
		// the caller, the key that needs nothing of the requests.
		p.HashOn = &HashOn{SourceIP: true}
	}
	if len(p.Retries.On) == 0 {
		p.Retries.On = append([]string(nil), DefaultRetryOn...)
	}
	var kept []string
	fill(p, &kept, &p.Timeouts.Connect, DefaultConnectTimeout, "timeouts.connect")
	fill(p, &kept, &p.Timeouts.Request, DefaultRequestTimeout, "timeouts.request")
	fill(p, &kept, &p.Timeouts.Idle, DefaultIdleTimeout, "timeouts.idle")
	fill(p, &kept, &p.Retries.Attempts, DefaultRetryAttempts, "retries.attempts")
	fill(p, &kept, &p.Retries.BudgetPerc, DefaultRetryBudgetPercent, "retries.budget_percent")
	cb := &p.CircuitBreakers
	fill(p, &kept, &cb.MaxConnections, DefaultMaxConnections, "circuit_breakers.max_connections")
	fill(p, &kept, &cb.MaxPendingRequests, DefaultMaxPendingRequests, "circuit_breakers.max_pending_requests")
	fill(p, &kept, &cb.MaxRequests, DefaultMaxRequests, "circuit_breakers.max_requests")
	fill(p, &kept, &cb.MaxRetries, DefaultMaxRetries, "circuit_breakers.max_retries")
	if o := p.OutlierDetection; o != nil {
		n := *o
		fill(p, &kept, &n.Consecutive5xx, DefaultConsecutive5xx, "outlier_detection.consecutive_5xx")
		fill(p, &kept, &n.Interval, DefaultEjectionInterval, "outlier_detection.interval")
		fill(p, &kept, &n.BaseEjectionTime, DefaultBaseEjectionTime, "outlier_detection.base_ejection_time")
		fill(p, &kept, &n.MaxEjectionPercent, DefaultMaxEjectionPercent, "outlier_detection.max_ejection_percent")
		p.OutlierDetection = &n
	}
	p.Explicit = kept
	return p
}

// fill sets a zero field of p to def, unless it is a meaningful zero that
// p.Explicit names: then it records path in kept.
func fill[T comparable](p Policy, kept *[]string, field *T, def T, path string) {
	var zero T
	if *field != zero {
		return
	}
	if _, means := ZeroMeans[path]; means && slices.Contains(p.Explicit, path) {
		*kept = append(*kept, path)
		return
	}
	*field = def
}

// PlaintextAllowed reports whether the VIP's plaintext cluster is served.
func (p Policy) PlaintextAllowed() bool { return p.Plaintext == nil || *p.Plaintext }

// Normalize returns i with its weight, status and TTL defaulted.
func (i Instance) Normalize() Instance {
	setDefault(&i.Weight, DefaultWeight)
	if i.Status == "" {
		i.Status = StatusUp
	}
	setDefault(&i.TTL, DefaultTTL)
	return i
}

func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}
