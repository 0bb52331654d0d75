package registry

import "time"

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

// Normalize returns p with every zero field set to its default. It is
// idempotent, and what a store keeps is always normalized, so what a service
// owner reads back is the policy in force.
func (p Policy) Normalize() Policy {
	if p.Protocol == "" {
		p.Protocol = DefaultProtocol
	}
	if p.Plaintext == nil {
		t := true
		p.Plaintext = &t
	}
	if p.LoadBalancing == "" {
		p.LoadBalancing = DefaultLoadBalancing
	}
	setDefault(&p.Timeouts.Connect, DefaultConnectTimeout)
	setDefault(&p.Timeouts.Request, DefaultRequestTimeout)
	setDefault(&p.Timeouts.Idle, DefaultIdleTimeout)
	setDefault(&p.Retries.Attempts, DefaultRetryAttempts)
	if len(p.Retries.On) == 0 {
		p.Retries.On = append([]string(nil), DefaultRetryOn...)
	}
	setDefault(&p.Retries.BudgetPerc, DefaultRetryBudgetPercent)
	setDefault(&p.CircuitBreakers.MaxConnections, DefaultMaxConnections)
	setDefault(&p.CircuitBreakers.MaxPendingRequests, DefaultMaxPendingRequests)
	setDefault(&p.CircuitBreakers.MaxRequests, DefaultMaxRequests)
	setDefault(&p.CircuitBreakers.MaxRetries, DefaultMaxRetries)
	if o := p.OutlierDetection; o != nil {
		n := *o
		setDefault(&n.Consecutive5xx, 5)
		setDefault(&n.Interval, Duration(10*time.Second))
		setDefault(&n.BaseEjectionTime, Duration(30*time.Second))
		setDefault(&n.MaxEjectionPercent, 50)
		p.OutlierDetection = &n
	}
	return p
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
