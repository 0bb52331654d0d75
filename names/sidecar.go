package names

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Names of what a sidecar's outbound and inbound listeners are made of.
const (
	// OutboundRoute is the route configuration of every sidecar's outbound
	// listener: platform defaults, and the VIPs whose policy has its own.
	OutboundRoute = "xspace-outbound"
	// XDSCluster is the static cluster, written by the bootstrap, that
	// reaches meshd's xDS server.
	XDSCluster = "xspace-xds"

	// ClusterHeader carries, inside a sidecar, the cluster a request's
	// authority maps to (ClusterForAuthority); the outbound route takes its
	// cluster from it. VIPHeader carries the bare VIP name, which the VIP's
	// own route, if any, matches. Both are set by the sidecar, overwriting
	// whatever the application sent, and removed before the request is
	// forwarded upstream.
	ClusterHeader = "x-xspace-cluster"
	VIPHeader     = "x-xspace-vip"

	// Node metadata keys the bootstrap writes: the sidecar's ports.
	NodeOutboundPortKey = "xspace.outbound_port"
	NodeInboundPortKey  = "xspace.inbound_port"
	NodeAppPortKey      = "xspace.app_port"
)

// OutboundListener names a sidecar's outbound listener on a port.
func OutboundListener(port uint32) string { return "xspace-outbound-" + itoa(port) }

// InboundListener names a sidecar's inbound (mutual TLS) listener on a
// port, forwarding to its application's port.
func InboundListener(port, appPort uint32) string {
	return "xspace-inbound-" + itoa(port) + "-to-" + itoa(appPort)
}

// LocalAppCluster names the cluster that reaches a sidecar's own
// application on 127.0.0.1:port. Bootstraps already written carry it, so
// it keeps naming the port.
func LocalAppCluster(port uint32) string { return "xspace-app-" + itoa(port) }

// inboundRoutePrefix starts the names of inbound route configurations.
// What follows it starts with a digit, unlike an inbound listener's name
// ("xspace-inbound-8443-to-8080"), so the two never read alike.
const inboundRoutePrefix = "xspace-inbound-route-"

// InboundRoute names the route configuration of a service's inbound
// listeners that forward to appPort: who may call the service
// (allowed_callers), and its application's cluster (LocalAppCluster). It
// says the app port because the application's cluster does, and the
// service because the callers do: a change of one service's callers
// reaches only its own sidecars.
func InboundRoute(service string, appPort uint32) string {
	return inboundRoutePrefix + itoa(appPort) + "-" + service
}

// ParseInboundRoute splits an InboundRoute name into its service and app
// port; ok is false for any other name.
func ParseInboundRoute(name string) (service string, appPort uint32, ok bool) {
	rest, ok := strings.CutPrefix(name, inboundRoutePrefix)
	if !ok {
		return "", 0, false
	}
	port, service, ok := strings.Cut(rest, "-")
	if !ok || ValidateVIP(service) != nil {
		return "", 0, false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || itoa(uint32(n)) != port {
		return "", 0, false
	}
	return service, uint32(n), true
}

func itoa(port uint32) string { return strconv.FormatUint(uint64(port), 10) }

// SidecarPorts is an Envoy sidecar's port layout, as its bootstrap writes it
// into node metadata (NodeOutboundPortKey, NodeInboundPortKey,
// NodeAppPortKey). Zero means unset.
type SidecarPorts struct {
	Outbound, Inbound, App uint32
}

// Check is the contract of a port layout, the same for meshctl bootstrap,
// which writes it, and meshd, which reads it from a connecting sidecar:
// every port is 1 to 65535; the outbound port is set whenever another is
// (every sidecar has one); the inbound and app ports come together (the
// inbound listener forwards to the app port); no two are the same.
func (p SidecarPorts) Check() error {
	ports := []struct {
		name string
		port uint32
	}{{"outbound", p.Outbound}, {"inbound", p.Inbound}, {"app", p.App}}
	for _, f := range ports {
		if f.port > 65535 {
			return fmt.Errorf("the %s port %d is not a port between 1 and 65535", f.name, f.port)
		}
	}
	switch {
	case p.Outbound == 0 && (p.Inbound != 0 || p.App != 0):
		return errors.New("the outbound port is missing: every sidecar has one")
	case p.Inbound != 0 && p.App == 0:
		return errors.New("an inbound port needs the app port that inbound requests are forwarded to")
	case p.Inbound == 0 && p.App != 0:
		return errors.New("an app port is only used with an inbound port; set both or neither")
	}
	for i, a := range ports {
		for _, b := range ports[i+1:] {
			if a.port != 0 && a.port == b.port {
				return fmt.Errorf("the %s and %s ports are both %d; use distinct ports", a.name, b.name, a.port)
			}
		}
	}
	return nil
}
