// Package names builds and parses every name xspace-mesh puts on the wire:
// VIP names, cluster names, secret names and SPIFFE identities. No other
// package formats or splits these strings.
package names

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

const (
	// PlainSuffix marks the plaintext cluster of a VIP ("payments.vip").
	PlainSuffix = ".vip"
	// SecureSuffix marks the mutual-TLS cluster of a VIP ("payments.svip").
	SecureSuffix = ".svip"

	// IdentitySecret is the SDS secret holding the requesting sidecar's own certificate.
	IdentitySecret = "xspace/identity"
	// TrustBundleSecret is the SDS secret holding the mesh's trust bundle.
	TrustBundleSecret = "xspace/trust-bundle"

	// NodeServiceKey is the node metadata field in which the control plane
	// records the service a stream authenticated as. Whatever a client puts
	// there itself is overwritten.
	NodeServiceKey = "xspace.authenticated_service"

	spiffePrefix = "spiffe://xspace/svc/"
	maxVIPLen    = 63
)

// ErrInvalidVIP is returned (wrapped) for a string that is not a valid VIP name.
var ErrInvalidVIP = errors.New("invalid VIP name")

// ValidateVIP reports whether s is a VIP name: a DNS label of 1 to 63
// characters, lower-case letters, digits and '-', not starting or ending with '-'.
func ValidateVIP(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty; use a DNS label such as \"payments\"", ErrInvalidVIP)
	case len(s) > maxVIPLen:
		return fmt.Errorf("%w: %d characters, at most %d allowed", ErrInvalidVIP, len(s), maxVIPLen)
	case s[0] == '-' || s[len(s)-1] == '-':
		return fmt.Errorf("%w: %q starts or ends with '-'", ErrInvalidVIP, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("%w: %q contains %q; only lower-case letters, digits and '-' are allowed",
				ErrInvalidVIP, s, string(rune(c)))
		}
	}
	return nil
}

// ValidateHostname reports whether s is a DNS host name: dot-separated
// labels of letters, digits and '-' (not at a label's ends), at most 253
// characters.
func ValidateHostname(s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("%q is not a host name: 1 to 253 characters", s)
	}
	for label := range strings.SplitSeq(strings.ToLower(s), ".") {
		if err := ValidateVIP(label); err != nil {
			return fmt.Errorf("%q is not a host name: label %q: %w", s, label, err)
		}
	}
	return nil
}

// Cluster returns the cluster name of a VIP: "<vip>.vip", or "<vip>.svip" when secure.
func Cluster(vip string, secure bool) string {
	if secure {
		return vip + SecureSuffix
	}
	return vip + PlainSuffix
}

// ParseCluster splits a cluster name into its VIP and whether it is the
// secure cluster. ok is false for any name that is not "<vip>.vip" or
// "<vip>.svip" with a valid VIP.
func ParseCluster(name string) (vip string, secure bool, ok bool) {
	switch {
	case strings.HasSuffix(name, SecureSuffix):
		vip, secure = strings.TrimSuffix(name, SecureSuffix), true
	case strings.HasSuffix(name, PlainSuffix):
		vip = strings.TrimSuffix(name, PlainSuffix)
	default:
		return "", false, false
	}
	if ValidateVIP(vip) != nil {
		return "", false, false
	}
	return vip, secure, true
}

// ownPrefix starts the names of the mesh's own resources (sidecar.go),
// which are DNS labels as VIP names are.
const ownPrefix = "xspace-"

// ReservedPrefix starts the names the control plane keeps for itself.
const ReservedPrefix = ownPrefix

// ControlPlane is the service name of meshd's own serving certificate,
// which the certificate source issues alongside the services' identities.
// It is Reserved: no token names it, so no stream is served its key.
const ControlPlane = ReservedPrefix + "meshd"

// Reserved reports whether a service name belongs to the control plane.
func Reserved(service string) bool { return strings.HasPrefix(service, ReservedPrefix) }

// APIListeners returns the names of a VIP's API listeners, the listener
// names proxyless gRPC clients ask for when they dial "xds:///<vip>.vip"
// and "xds:///<vip>": the cluster name, and the bare VIP name unless it
// starts with "xspace-", where it could be one of a sidecar's own
// listeners ("xspace-outbound-15001").
func APIListeners(vip string) []string {
	if strings.HasPrefix(vip, ownPrefix) {
		return []string{Cluster(vip, false)}
	}
	return []string{vip, Cluster(vip, false)}
}

// ParseResource returns the VIP a resource name belongs to, and whether
// it is the VIP's secure cluster: a cluster name (ParseCluster), which also
// names the VIP's endpoints, route configuration and API listener, the
// bare name of its other API listener (APIListeners), or the name of its
// sidecars' inbound route (InboundRoute), which, serving callers over
// mutual TLS, counts as secure. ok is false for any other name.
func ParseResource(name string) (vip string, secure bool, ok bool) {
	if vip, secure, ok := ParseCluster(name); ok {
		return vip, secure, true
	}
	if vip, _, ok := ParseInboundRoute(name); ok {
		return vip, true, true
	}
	if ValidateVIP(name) != nil || strings.HasPrefix(name, ownPrefix) {
		return "", false, false
	}
	return name, false, true
}

// ClusterForAuthority maps a request authority (Host header) to the cluster
// a sidecar routes it to: the port is stripped; "payments" and
// "payments.vip" map to "payments.vip", "payments.svip" to "payments.svip".
func ClusterForAuthority(authority string) (string, bool) {
	host := authority
	if h, _, err := net.SplitHostPort(authority); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	if _, _, ok := ParseCluster(host); ok {
		return host, true
	}
	if ValidateVIP(host) == nil {
		return Cluster(host, false), true
	}
	return "", false
}

// SPIFFE returns the identity URI of a service's certificates.
func SPIFFE(service string) string { return spiffePrefix + service }

// ParseSPIFFE returns the service named by a SPIFFE identity URI.
func ParseSPIFFE(uri string) (string, bool) {
	svc, ok := strings.CutPrefix(uri, spiffePrefix)
	if !ok || ValidateVIP(svc) != nil {
		return "", false
	}
	return svc, true
}
