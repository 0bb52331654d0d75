package bootstrap

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/internal/envoyproto"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

// Defaults of an Envoy sidecar's bootstrap.
const (
	DefaultOutboundPort = 15001
	DefaultAdminPort    = 15000
)

// MinEnvoyVersion is the oldest Envoy release meshd serves. Until 1.36,
// on-demand CDS over ADS registered interest only for the first name an
// on-demand filter asked for (od_cds_api_impl.cc, requestOnDemandUpdate;
// envoyproxy/envoy issue #30305): every later unknown VIP waited the full
// on-demand timeout for its 503. 1.36.0 subscribes each name on its own
// (PR #41174, on by default: runtime_features.cc, odcds_over_ads_fix).
// The release the e2e suite runs is pinned in e2e/.env.
const MinEnvoyVersion = "1.36.0"

// EnvoyOptions describe one Envoy sidecar: one instance of one service.
type EnvoyOptions struct {
	// XDS is meshd's xDS address, host:port; a host name is resolved by DNS.
	XDS string
	// Service is the sidecar's own service (its node cluster); the token,
	// if any, must be for the same service.
	Service string
	// NodeID identifies this instance; it must be unique in the fleet.
	NodeID string
	// OutboundPort is where the application sends its requests, on
	// 127.0.0.1 (default 15001).
	OutboundPort uint32
	// InboundPort is the mutual-TLS port other sidecars call: the
	// instance's registered secure port. 0: no inbound listener.
	InboundPort uint32
	// AppPort is the application's own port on 127.0.0.1, where inbound
	// requests go. Required with InboundPort.
	AppPort uint32
	// AdminPort is Envoy's admin interface, on 127.0.0.1 only (default 15000).
	AdminPort uint32
	// Token is the service's bearer token (meshctl token issue). Without
	// one, meshd must allow unauthenticated streams, and .svip clusters
	// get no certificate.
	Token string
	// CAFile is the path, where Envoy runs, of the PEM trust bundle that
	// validates meshd's serving certificate. Set: Envoy speaks TLS to
	// meshd and accepts only a certificate naming the control plane
	// (names.SPIFFE(names.ControlPlane)). Empty: plaintext, for a meshd on
	// loopback.
	CAFile string
}

// Envoy returns the YAML bootstrap of an Envoy sidecar (Envoy >=
// MinEnvoyVersion):
//   - node id and cluster (the service), with the sidecar's ports in the
//     node metadata, from which meshd builds its listeners;
//   - delta ADS to meshd for listeners, clusters (on demand), endpoints,
//     routes and secrets, with the token in the gRPC initial metadata,
//     reconnect backoff from 0.5s to 30s, and HTTP/2 keepalive pings that
//     notice a dead control-plane connection within about 40s;
//   - listeners over ADS and no cds_config: on-demand CDS is the only
//     cluster subscription on the stream, as in Envoy's own tests of it
//     without cds_config (test/extensions/filters/http/on_demand/
//     odcds_integration_test.cc, NoCdsConfigOnDemand..., v1.36.0 to
//     v1.39.0), so no wildcard CDS watcher competes for meshd's
//     "not found" answers;
//   - the application's own cluster (127.0.0.1:AppPort, which the inbound
//     listener forwards to) as a static cluster;
//   - with CAFile, TLS to meshd (see xdsTLS);
//   - the admin interface on 127.0.0.1 only.
//
// Nothing in it names a VIP.
func Envoy(o EnvoyOptions) ([]byte, error) {
	if o.OutboundPort == 0 {
		o.OutboundPort = DefaultOutboundPort
	}
	if o.AdminPort == 0 {
		o.AdminPort = DefaultAdminPort
	}
	host, port, err := o.check()
	if err != nil {
		return nil, err
	}
	meta := map[string]any{names.NodeOutboundPortKey: o.OutboundPort}
	if o.InboundPort != 0 {
		meta[names.NodeInboundPortKey] = o.InboundPort
		meta[names.NodeAppPortKey] = o.AppPort
	}
	md, err := structpb.NewStruct(meta)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: node metadata: %w", err)
	}
	grpc := &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
			ClusterName: names.XDSCluster,
			// Reconnect backoff of the xDS stream (EnvoyGrpc.retry_policy,
			// Envoy >= 1.26): Envoy's documented default, written out so
			// that whoever reads the bootstrap sees it.
			RetryPolicy: &corev3.RetryPolicy{RetryBackOff: &corev3.BackoffStrategy{
				BaseInterval: durationpb.New(500 * time.Millisecond),
				MaxInterval:  durationpb.New(30 * time.Second),
			}},
		}},
	}
	if o.Token != "" {
		grpc.InitialMetadata = []*corev3.HeaderValue{{Key: "authorization", Value: "Bearer " + o.Token}}
	}
	ads := &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: o.NodeID, Cluster: o.Service, Metadata: md},
		Admin: &bootstrapv3.Admin{
			Address: envoyproto.SocketAddress("127.0.0.1", o.AdminPort),
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   corev3.ApiConfigSource_DELTA_GRPC,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices:              []*corev3.GrpcService{grpc},
			},
			// A wildcard subscription over ADS, answered with this
			// sidecar's own listeners. No cds_config: see above.
			LdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*clusterv3.Cluster{xdsCluster(host, port, o.CAFile)},
		},
	}
	if o.InboundPort != 0 {
		b.StaticResources.Clusters = append(b.StaticResources.Clusters, translate.LocalAppCluster(o.AppPort))
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: encode: %w", err)
	}
	// protojson output is not stable byte for byte; round-trip it through
	// encoding/json for a stable, sorted rendering.
	var v any
	if err := json.Unmarshal(j, &v); err != nil {
		return nil, fmt.Errorf("bootstrap: encode: %w", err)
	}
	y, err := yaml.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: encode: %w", err)
	}
	header := fmt.Sprintf("# Envoy sidecar bootstrap of %s (node %s), written by meshctl bootstrap.\n"+
		"# Everything else comes from meshd over delta ADS; regenerate this file rather than editing it.\n", o.Service, o.NodeID)
	return append([]byte(header), y...), nil
}

// check validates the options and splits the xDS address.
func (o EnvoyOptions) check() (string, uint32, error) {
	if err := names.ValidateVIP(o.Service); err != nil {
		return "", 0, fmt.Errorf("%w: service: %w", ErrInvalid, err)
	}
	if o.NodeID == "" || strings.ContainsFunc(o.NodeID, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", 0, fmt.Errorf("%w: node id %q: give each instance a unique id without spaces, such as %s-1", ErrInvalid, o.NodeID, o.Service)
	}
	host, portStr, err := net.SplitHostPort(o.XDS)
	if err != nil || host == "" {
		return "", 0, fmt.Errorf("%w: xDS address %q: use host:port such as 127.0.0.1:18000", ErrInvalid, o.XDS)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("%w: xDS address %q: the port must be between 1 and 65535", ErrInvalid, o.XDS)
	}
	if err := (names.SidecarPorts{Outbound: o.OutboundPort, Inbound: o.InboundPort, App: o.AppPort}).Check(); err != nil {
		return "", 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	switch o.AdminPort {
	case 0:
	case o.OutboundPort, o.InboundPort, o.AppPort:
		return "", 0, fmt.Errorf("%w: the admin port %d is also a sidecar port; use distinct ports", ErrInvalid, o.AdminPort)
	default:
		if o.AdminPort > 65535 {
			return "", 0, fmt.Errorf("%w: the admin port %d is not a port between 1 and 65535", ErrInvalid, o.AdminPort)
		}
	}
	if strings.ContainsFunc(o.CAFile, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", 0, fmt.Errorf("%w: the CA file path %q contains control characters", ErrInvalid, o.CAFile)
	}
	if strings.ContainsAny(o.Token, " \t\r\n") {
		return "", 0, fmt.Errorf("%w: the token contains white space; pass the output of meshctl token issue as is", ErrInvalid)
	}
	return host, uint32(port), nil
}

// xdsCluster reaches meshd over HTTP/2 (gRPC), resolving a host name by
// DNS (IPv4 first, as meshd listens on 127.0.0.1 by default), with
// keepalive pings every 30s that give up after 10s, over TLS when caFile
// is set. "localhost" is 127.0.0.1.
func xdsCluster(host string, port uint32, caFile string) *clusterv3.Cluster {
	if host == "localhost" {
		host = "127.0.0.1"
	}
	discovery := clusterv3.Cluster_STRICT_DNS
	if _, err := netip.ParseAddr(host); err == nil {
		discovery = clusterv3.Cluster_STATIC
	}
	opts := &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
				ConnectionKeepalive: &corev3.KeepaliveSettings{
					Interval: durationpb.New(30 * time.Second),
					Timeout:  durationpb.New(10 * time.Second),
				},
			}},
		}},
	}
	c := &clusterv3.Cluster{
		Name:                 names.XDSCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: discovery},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: names.XDSCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: envoyproto.SocketAddress(host, port)}},
			}}}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": envoyproto.Any(opts),
		},
	}
	if discovery == clusterv3.Cluster_STRICT_DNS {
		c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
	}
	if caFile != "" {
		c.TransportSocket = &corev3.TransportSocket{
			Name:       "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: envoyproto.Any(xdsTLS(host, caFile))},
		}
	}
	return c
}

// xdsTLS is the TLS Envoy speaks to meshd: meshd's certificate must chain
// to the bundle in caFile and carry the control plane's URI SAN, whatever
// name or address meshd is reached by (its DNS and IP SANs are for clients
// that match those). ALPN offers h2: grpc-go servers refuse TLS clients
// that negotiate no ALPN (since grpc-go 1.67, credentials/tls.go,
// GRPC_ENFORCE_ALPN_ENABLED), and Envoy offers none unless told
// (alpn_protocols, envoy/extensions/transport_sockets/tls/v3/common.proto).
// SNI is the host when it is a name. Envoy reads caFile when it loads the
// bootstrap: after the bundle changes, restart Envoy (hot restart keeps
// connections), which is why a CA rotation publishes a bundle holding the
// old and the new CA first.
func xdsTLS(host, caFile string) *tlsv3.UpstreamTlsContext {
	ctx := &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols: []string{"h2"},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: caFile}},
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: names.SPIFFE(names.ControlPlane)}},
				}},
			}},
		},
	}
	if _, err := netip.ParseAddr(host); err != nil {
		ctx.Sni = host
	}
	return ctx
}
