// Package registry holds the model that flows from a service registry to the
// rest of the control plane: VIPs with their policy, and instances. The values
// are plain and serialisable; no Envoy type appears here. Stores (the embedded
// one in registry/embedded, Consul later) implement Store and return these values.
package registry

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Protocol is the application protocol a VIP's instances speak.
type Protocol string

// Protocols a VIP may declare.
const (
	HTTP1 Protocol = "http1"
	HTTP2 Protocol = "http2"
	GRPC  Protocol = "grpc"
)

// LoadBalancing is the load-balancing policy Envoy applies to a VIP's endpoints.
type LoadBalancing string

// Load-balancing policies a VIP may declare.
const (
	RoundRobin   LoadBalancing = "round_robin"
	LeastRequest LoadBalancing = "least_request"
	Random       LoadBalancing = "random"
	RingHash     LoadBalancing = "ring_hash"
	Maglev       LoadBalancing = "maglev"
)

// Status is an instance's state, as in Eureka.
type Status string

// Instance statuses. Only UP instances receive new traffic; DRAINING ones
// finish what they have.
const (
	StatusUp           Status = "UP"
	StatusStarting     Status = "STARTING"
	StatusDown         Status = "DOWN"
	StatusOutOfService Status = "OUT_OF_SERVICE"
	StatusDraining     Status = "DRAINING"
)

// Routable reports whether an instance with status s receives new
// traffic: only UP. This is the one meaning of "routable" in meshd.
func (s Status) Routable() bool { return s == StatusUp }

// Published reports whether an instance with status s is sent to proxies
// at all: the routable ones, and DRAINING ones, which proxies keep for the
// requests they already have but pick for no new one.
func (s Status) Published() bool { return s.Routable() || s == StatusDraining }

// Lease is the state of an instance's lease, in a registry that keeps leases
// itself (see Leaser).
type Lease string

// Lease states.
const (
	// LeaseOK: renewed since the registry started, within its TTL.
	LeaseOK Lease = "ok"
	// LeaseGrace: restored from disk when the registry started and not
	// renewed since; it expires when its first lease runs out.
	LeaseGrace Lease = "grace"
	// LeaseOverdue: its TTL has passed without a renewal; it expires at the
	// next sweep unless self-preservation holds it.
	LeaseOverdue Lease = "overdue"
)

// VIP is a named service and the policy every sidecar applies when calling it.
type VIP struct {
	Name   string `json:"name"`
	Policy Policy `json:"policy"`
}

// Policy is what a service owner sets for their VIP. A zero value means
// "use the default", which Normalize fills in, unless Explicit names the
// field: then it is a 0 given on purpose (see wire.go), which Normalize keeps
// where 0 means something (ZeroMeans) and Validate refuses elsewhere.
type Policy struct {
	Protocol Protocol `json:"protocol,omitempty"`
	// Port and SecurePort are the VIP's well-known ports, informational for
	// callers; each instance registers the ports it actually listens on.
	Port       uint32 `json:"port,omitempty"`
	SecurePort uint32 `json:"secure_port,omitempty"`
	// Plaintext says whether the plaintext cluster <vip>.vip is served at all.
	// nil means true.
	Plaintext *bool `json:"plaintext,omitempty"`
	// AllowedCallers names the services whose sidecars may call the VIP
	// over mutual TLS (its instances' sidecars enforce it; see callers.go):
	// nil lets any mesh identity in, an empty list nobody.
	AllowedCallers *[]string     `json:"allowed_callers,omitempty"`
	LoadBalancing  LoadBalancing `json:"load_balancing,omitempty"`
	// HashOn is what ring_hash and maglev hash; required with them, refused
	// with any other policy.
	HashOn           *HashOn           `json:"hash_on,omitempty"`
	Timeouts         Timeouts          `json:"timeouts"`
	Retries          Retries           `json:"retries"`
	CircuitBreakers  CircuitBreakers   `json:"circuit_breakers"`
	OutlierDetection *OutlierDetection `json:"outlier_detection,omitempty"`
	// Explicit lists the optional numbers given explicitly, by their path
	// below policy ("retries.attempts"). Decoding JSON or YAML fills it; Go
	// callers add a path to say "this 0 is meant". Normalize keeps only the
	// paths whose field holds a meaningful 0.
	Explicit []string `json:"-"`
}

// Timeouts bound connection and request time.
type Timeouts struct {
	Connect Duration `json:"connect,omitempty"`
	// Request is the overall timeout of one request, retries included.
	Request Duration `json:"request,omitempty"`
	// Idle closes upstream connections idle this long.
	Idle Duration `json:"idle,omitempty"`
}

// Retries is the route-level retry policy callers apply to this VIP.
type Retries struct {
	// Attempts is the number of retries after the first try; 0 means the default.
	Attempts uint32 `json:"attempts,omitempty"`
	// On lists Envoy retry conditions, e.g. "connect-failure", "5xx".
	On         []string `json:"on,omitempty"`
	PerTry     Duration `json:"per_try_timeout,omitempty"`
	BudgetPerc float64  `json:"budget_percent,omitempty"`
}

// CircuitBreakers are Envoy's default-priority thresholds for the VIP's cluster.
type CircuitBreakers struct {
	MaxConnections     uint32 `json:"max_connections,omitempty"`
	MaxPendingRequests uint32 `json:"max_pending_requests,omitempty"`
	MaxRequests        uint32 `json:"max_requests,omitempty"`
	MaxRetries         uint32 `json:"max_retries,omitempty"`
}

// OutlierDetection ejects misbehaving endpoints. nil turns it off.
type OutlierDetection struct {
	Consecutive5xx     uint32   `json:"consecutive_5xx,omitempty"`
	Interval           Duration `json:"interval,omitempty"`
	BaseEjectionTime   Duration `json:"base_ejection_time,omitempty"`
	MaxEjectionPercent uint32   `json:"max_ejection_percent,omitempty"`
}

// Instance is one registered process serving a VIP.
type Instance struct {
	ID         string            `json:"id"`
	VIP        string            `json:"vip"`
	Address    string            `json:"address"`
	Port       uint32            `json:"port"`
	SecurePort uint32            `json:"secure_port,omitempty"`
	Zone       string            `json:"zone,omitempty"`
	Weight     uint32            `json:"weight,omitempty"`
	Status     Status            `json:"status"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// TTL is the lease: the instance expires when no heartbeat arrives for this long.
	TTL Duration `json:"ttl,omitempty"`
	// RegisteredAt and RenewedAt are set by the store.
	RegisteredAt time.Time `json:"registered_at,omitzero"`
	RenewedAt    time.Time `json:"renewed_at,omitzero"`
}

// Service is one VIP as a registry sees it at one moment: the unit that
// discovery translates into a Cluster and a ClusterLoadAssignment.
type Service struct {
	VIP VIP `json:"vip"`
	// Instances are sorted by ID.
	Instances []Instance `json:"instances"`
}

// Duration is a time.Duration that reads and writes as a Go duration string
// ("250ms", "1m30s") in JSON and YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string such as "1.5s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"250ms\" or \"2s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: use a number with a unit, such as \"250ms\" or \"2s\"", s)
	}
	*d = Duration(v)
	return nil
}

// IsZero reports whether p is the zero Policy, every field left out (a
// non-nil empty list is not left out). Most VIPs have it; a check on the
// path of every lookup, it names each field rather than reflecting.
func (p Policy) IsZero() bool {
	return p.Protocol == "" && p.Port == 0 && p.SecurePort == 0 && p.Plaintext == nil &&
		p.AllowedCallers == nil && p.LoadBalancing == "" && p.HashOn == nil && p.Timeouts == (Timeouts{}) &&
		p.Retries.Attempts == 0 && p.Retries.On == nil && p.Retries.PerTry == 0 && p.Retries.BudgetPerc == 0 &&
		p.CircuitBreakers == (CircuitBreakers{}) && p.OutlierDetection == nil && p.Explicit == nil
}

// Clone returns a deep copy of p: the copy shares no pointer or slice with
// p, so a store can hand it out without callers reaching into its state.
func (p Policy) Clone() Policy {
	if p.Plaintext != nil {
		b := *p.Plaintext
		p.Plaintext = &b
	}
	if p.OutlierDetection != nil {
		o := *p.OutlierDetection
		p.OutlierDetection = &o
	}
	if p.HashOn != nil {
		h := *p.HashOn
		if h.Cookie != nil {
			c := *h.Cookie
			if c.TTL != nil {
				ttl := *c.TTL
				c.TTL = &ttl
			}
			h.Cookie = &c
		}
		p.HashOn = &h
	}
	if p.AllowedCallers != nil {
		c := slices.Clone(*p.AllowedCallers)
		p.AllowedCallers = &c
	}
	p.Retries.On = slices.Clone(p.Retries.On)
	p.Explicit = slices.Clone(p.Explicit)
	return p
}
