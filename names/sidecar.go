package names

import "strconv"

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
// application on 127.0.0.1:port.
func LocalAppCluster(port uint32) string { return "xspace-app-" + itoa(port) }

func itoa(port uint32) string { return strconv.FormatUint(uint64(port), 10) }
