package registry

import (
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prisma-systems/xspace-mesh/names"
)

// Limits enforced by Validate.
const (
	MaxWeight        = 1000
	MaxInstanceIDLen = 128
	MaxMetadataKeys  = 64
	MaxMetadataLen   = 512
	MinTTL           = Duration(time.Second)
	MaxTTL           = Duration(24 * time.Hour)
	maxZoneLen       = 64
	maxTimeout       = Duration(time.Hour)
)

// ValidationError says which field of a VIP or instance is wrong and why.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Message }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// retryConditions are the Envoy x-envoy-retry-on (and gRPC) conditions a VIP may use.
var retryConditions = []string{
	"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
	"retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers", "http3-post-connect-failure",
	"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
}

// Validate checks a VIP; the error is a *ValidationError naming the field.
func (v VIP) Validate() error {
	if err := names.ValidateVIP(v.Name); err != nil {
		return invalid("name", "%v", err)
	}
	return v.Policy.Validate()
}

// Validate checks a policy. Zero values are allowed and mean "default",
// unless Explicit names them: see ZeroMeans and refusedZeros.
func (p Policy) Validate() error {
	if err := p.validZeros(); err != nil {
		return err
	}
	switch p.Protocol {
	case "", HTTP1, HTTP2, GRPC:
	default:
		return invalid("policy.protocol", "%q is not a protocol; use http1, http2 or grpc", p.Protocol)
	}
	switch p.LoadBalancing {
	case "", RoundRobin, LeastRequest, Random, RingHash, Maglev:
	default:
		return invalid("policy.load_balancing", "%q is not a policy; use round_robin, least_request, random, ring_hash or maglev", p.LoadBalancing)
	}
	if err := p.validCallers(); err != nil {
		return err
	}
	if err := validPort("policy.port", p.Port, true); err != nil {
		return err
	}
	if err := validPort("policy.secure_port", p.SecurePort, true); err != nil {
		return err
	}
	for field, d := range map[string]Duration{
		"policy.timeouts.connect": p.Timeouts.Connect, "policy.timeouts.request": p.Timeouts.Request,
		"policy.timeouts.idle": p.Timeouts.Idle, "policy.retries.per_try_timeout": p.Retries.PerTry,
	} {
		if d < 0 || d > maxTimeout {
			return invalid(field, "%s is out of range; use a duration between 0s and 1h", d.D())
		}
	}
	if p.Retries.Attempts > 10 {
		return invalid("policy.retries.attempts", "%d retries is too many; at most 10", p.Retries.Attempts)
	}
	for _, c := range p.Retries.On {
		if !slices.Contains(retryConditions, c) {
			return invalid("policy.retries.on", "%q is not an Envoy retry condition; use one of %v", c, retryConditions)
		}
	}
	if b := p.Retries.BudgetPerc; math.IsNaN(b) || b < 0 || b > 100 {
		return invalid("policy.retries.budget_percent", "%v is not a percentage between 0 and 100", p.Retries.BudgetPerc)
	}
	if o := p.OutlierDetection; o != nil {
		if o.MaxEjectionPercent > 100 {
			return invalid("policy.outlier_detection.max_ejection_percent", "%d is not a percentage between 0 and 100", o.MaxEjectionPercent)
		}
		if o.Interval < 0 || o.BaseEjectionTime < 0 {
			return invalid("policy.outlier_detection", "durations must not be negative")
		}
	}
	return p.validHashing()
}

// zeroCheck is a field where an explicit 0 is refused, and what to write instead.
type zeroCheck struct {
	path   string
	isZero bool
	hint   string
}

// validZeros refuses an explicit 0 where 0 would break the VIP, saying what
// to write instead.
func (p Policy) validZeros() error {
	breakerHint := "0 would refuse every request; use at least 1, or leave it out for %d"
	checks := []zeroCheck{
		{"timeouts.connect", p.Timeouts.Connect == 0, fmt.Sprintf(
			"0s would fail every connection at once; use a duration such as 250ms, or leave it out for %s", DefaultConnectTimeout.D())},
		{"circuit_breakers.max_connections", p.CircuitBreakers.MaxConnections == 0, fmt.Sprintf(breakerHint, DefaultMaxConnections)},
		{"circuit_breakers.max_pending_requests", p.CircuitBreakers.MaxPendingRequests == 0, fmt.Sprintf(breakerHint, DefaultMaxPendingRequests)},
		{"circuit_breakers.max_requests", p.CircuitBreakers.MaxRequests == 0, fmt.Sprintf(breakerHint, DefaultMaxRequests)},
	}
	if o := p.OutlierDetection; o != nil {
		checks = append(checks,
			zeroCheck{"outlier_detection.interval", o.Interval == 0, fmt.Sprintf(
				"0s is not an interval; use e.g. 10s, or leave it out for %s", DefaultEjectionInterval.D())},
			zeroCheck{"outlier_detection.base_ejection_time", o.BaseEjectionTime == 0, fmt.Sprintf(
				"0s would eject hosts for no time; use e.g. 30s, or leave it out for %s (to eject no host, set max_ejection_percent: 0)",
				DefaultBaseEjectionTime.D())},
		)
	}
	for _, c := range checks {
		if c.isZero && slices.Contains(p.Explicit, c.path) {
			return invalid("policy."+c.path, "%s", c.hint)
		}
	}
	return nil
}

// Validate checks an instance as a client registers it; the error is a
// *ValidationError naming the field.
func (i Instance) Validate() error {
	if err := names.ValidateVIP(i.VIP); err != nil {
		return invalid("vip", "%v", err)
	}
	if err := validInstanceID(i.ID); err != nil {
		return err
	}
	if err := validAddress(i.Address); err != nil {
		return err
	}
	if err := validPort("port", i.Port, false); err != nil {
		return err
	}
	if err := validPort("secure_port", i.SecurePort, true); err != nil {
		return err
	}
	if i.Weight > MaxWeight {
		return invalid("weight", "%d is out of range; use 1 to %d", i.Weight, MaxWeight)
	}
	if err := validStatus(i.Status, true); err != nil {
		return err
	}
	if len(i.Zone) > maxZoneLen {
		return invalid("zone", "%d characters, at most %d allowed", len(i.Zone), maxZoneLen)
	}
	if err := validText("zone", i.Zone); err != nil {
		return err
	}
	if i.TTL != 0 && (i.TTL < MinTTL || i.TTL > MaxTTL) {
		return invalid("ttl", "%s is out of range; use %s to %s", i.TTL.D(), MinTTL.D(), MaxTTL.D())
	}
	return validMetadata(i.Metadata)
}

// ReservedMetadataPrefix starts the metadata keys the mesh keeps for itself
// (the Consul registry stores an instance's id, zone and status under it).
const ReservedMetadataPrefix = "xspace-"

func validMetadata(md map[string]string) error {
	if len(md) > MaxMetadataKeys {
		return invalid("metadata", "%d keys, at most %d allowed", len(md), MaxMetadataKeys)
	}
	for _, k := range slices.Sorted(maps.Keys(md)) {
		v := md[k]
		switch {
		case k == "" || len(k) > MaxMetadataLen || len(v) > MaxMetadataLen:
			return invalid("metadata", "keys must be non-empty and keys and values at most %d bytes", MaxMetadataLen)
		case strings.HasPrefix(strings.ToLower(k), ReservedMetadataPrefix):
			return invalid("metadata", "key %q: the %s prefix is reserved for the mesh's own keys; choose another key", k, ReservedMetadataPrefix)
		}
		if err := validText("metadata", k); err != nil {
			return err
		}
		if err := validText("metadata."+k, v); err != nil {
			return err
		}
	}
	return nil
}

// validText refuses text that is not valid UTF-8 or holds a control
// character (NUL, newline, tab, DEL, ...): such text would reach logs,
// tables and Envoy's metadata as something other than what it looks like.
func validText(field, s string) error {
	if !utf8.ValidString(s) {
		return invalid(field, "%q is not valid UTF-8; send text in UTF-8", s)
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		return invalid(field, "%q holds the control character %U at byte %d; use printable characters only", s, []rune(s[i:])[0], i)
	}
	return nil
}

// validAddress accepts an IP address an instance can be reached at, in its
// one written form: an IPv4 address as such, not mapped into IPv6.
func validAddress(s string) error {
	addr, err := netip.ParseAddr(s)
	if err != nil || addr.Zone() != "" {
		return invalid("address", "%q is not an IP address; use the instance's IPv4 or IPv6 address, e.g. 10.0.0.12", s)
	}
	if un := addr.Unmap(); un.IsUnspecified() || un.IsMulticast() || un == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return invalid("address", "%s cannot receive traffic; use the instance's own address", addr)
	}
	if addr.Is4In6() {
		return invalid("address", "%s is an IPv4 address mapped into IPv6; write it as %s", s, addr.Unmap())
	}
	return nil
}

// ValidateStatus checks a status as a client sets it.
func ValidateStatus(s Status) error { return validStatus(s, false) }

func validStatus(s Status, allowEmpty bool) error {
	switch s {
	case StatusUp, StatusStarting, StatusDown, StatusOutOfService, StatusDraining:
		return nil
	case "":
		if allowEmpty {
			return nil
		}
	}
	return invalid("status", "%q is not a status; use UP, STARTING, DOWN, OUT_OF_SERVICE or DRAINING", s)
}

func validInstanceID(id string) error {
	if id == "" || len(id) > MaxInstanceIDLen {
		return invalid("id", "must be 1 to %d characters", MaxInstanceIDLen)
	}
	if id == "." || id == ".." {
		return invalid("id", "%q names a path segment in a URL, not an instance; use letters or digits as well, e.g. web-1", id)
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':'
		if !ok {
			return invalid("id", "%q contains %q; use letters, digits, '-', '_', '.' or ':'", id, c)
		}
	}
	return nil
}

// ValidateInstanceID checks an instance id as it appears in a URL.
func ValidateInstanceID(id string) error { return validInstanceID(id) }

func validPort(field string, p uint32, optional bool) error {
	if p == 0 && optional {
		return nil
	}
	if p == 0 || p > 65535 {
		return invalid(field, "%d is not a port; use 1 to 65535", p)
	}
	return nil
}
