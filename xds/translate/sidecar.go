package translate

import (
	_ "embed"
	"slices"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	luav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/lua/v3"
	ondemandv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/on_demand/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/prisma-systems/xspace-mesh/internal/envoyproto"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// authorityLua maps a request's authority to its cluster; see the file.
//
//go:embed authority.lua
var authorityLua string

// DefaultODCDSTimeout is how long a sidecar holds a request while it asks
// for a cluster it lacks (the on-demand filter's odcds.timeout), unless
// meshd is configured otherwise (xds.odcds_timeout). meshd answers "not
// found" at once, so it matters when meshd is unreachable, and for a name
// the sidecar was told is absent: Envoy does not ask for such a name again
// (source/common/upstream/od_cds_api_impl.cc, v1.36.0 to v1.39.0: "already
// subscribed to, skipping"), so a request for it waits this long unless
// meshd pushes the cluster meanwhile. It is Envoy's default
// (on_demand.proto, OnDemandCds.timeout).
const DefaultODCDSTimeout = 5 * time.Second

// FetchTimeout is the initial_fetch_timeout of the routes and secrets a
// sidecar's listeners and clusters wait for. While any cluster is warming,
// Envoy holds back every other cluster request on the ADS stream
// (source/common/upstream/cluster_manager_impl.cc, updateClusterCounts,
// v1.36.0 to v1.39.0), and a .svip cluster warms until its secrets arrive:
// with Envoy's default of 15 s, one missing secret would make every other
// first lookup of the sidecar time out. meshd's xds.odcds_timeout is kept
// above it.
const FetchTimeout = 2 * time.Second

// OutboundListener returns a sidecar's outbound listener on
// 127.0.0.1:port, which the application reaches as its HTTP proxy or by
// Host header; a request for a cluster the sidecar lacks waits at most
// odcdsTimeout for it. Its HTTP connection manager runs, in order:
//
//  1. Envoy's Lua filter with authority.lua, which maps the authority to a
//     cluster name in a request header, with clear_route_cache set so that
//     routing sees the header (the field exists from Envoy 1.34 and
//     defaults to true; it is written out rather than relied on:
//     https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/http/lua/v3/lua.proto).
//  2. Envoy's on-demand filter with ODCDS over the ADS stream: when the
//     route's cluster_header names a cluster the sidecar lacks, the request
//     waits while Envoy asks for it over delta xDS, one name per request
//     (https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/on_demand_updates_filter).
//  3. The router, with routes from RDS (OutboundRouteConfiguration).
//
// A cluster meshd says does not exist fails at once with 503
// (cluster_not_found_response_code), and local_reply_config gives that,
// and the sidecar's other 503s, a body a person can read
// (https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/local_reply).
func OutboundListener(port uint32, odcdsTimeout time.Duration) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "xspace_outbound",
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    fetchSource(),
			RouteConfigName: names.OutboundRoute,
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			httpFilter("envoy.filters.http.lua", &luav3.Lua{
				DefaultSourceCode: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: authorityLua}},
				ClearRouteCache:   wrapperspb.Bool(true),
			}),
			// resources_locator stays empty: with an ADS source Envoy then
			// subscribes each name on its own (on_demand_update.cc,
			// createDecodeHeadersBehavior, v1.36.0 to v1.39.0).
			httpFilter("envoy.filters.http.on_demand", &ondemandv3.OnDemand{Odcds: &ondemandv3.OnDemandCds{
				Source:  adsSource(),
				Timeout: durationpb.New(odcdsTimeout),
			}}),
			httpFilter(routerFilter, &routerv3.Router{}),
		},
		LocalReplyConfig: &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{unavailableReply()}},
	}
	return &listenerv3.Listener{
		Name:    names.OutboundListener(port),
		Address: envoyproto.SocketAddress("127.0.0.1", port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{networkFilter(hcm)},
		}},
	}
}

// unavailableBody is the body of the sidecar's own 503s. Envoy's response
// code details say why: cluster_not_found (meshd knows no such VIP),
// no_healthy_upstream, upstream overflow and so on.
const unavailableBody = "xspace: no route to %REQ(:authority)% (cluster %REQ(" + names.ClusterHeader + ")%): %RESPONSE_CODE_DETAILS%\n" +
	"hint: cluster_not_found means the mesh knows no VIP of that name (meshctl vip list); " +
	"no_healthy_upstream means the VIP has no UP instance (meshctl instance list <vip>)\n"

// unavailableReply rewrites the body of the 503s the sidecar answers itself
// (local replies only; an upstream's 503 passes untouched) so that a person
// reads what happened. It matches the status code rather than the response
// flag: response_flag_filter accepts "NC" only in recent Envoy versions.
func unavailableReply() *hcmv3.ResponseMapper {
	return &hcmv3.ResponseMapper{
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
			StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{
				Op:    accesslogv3.ComparisonFilter_EQ,
				Value: &corev3.RuntimeUInt32{DefaultValue: 503, RuntimeKey: "xspace.local_reply.unavailable_status"},
			}},
		}},
		BodyFormatOverride: &corev3.SubstitutionFormatString{
			Format:      &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: unavailableBody}}},
			ContentType: "text/plain",
		},
	}
}

// OutboundRouteConfiguration returns the route configuration every
// sidecar's outbound listener uses: one virtual host, in which each VIP
// of vips whose policy has its own route (HasOwnRoute) gets a route
// matching its x-xspace-vip header, and a last route carries the platform
// defaults (the policy of a VIP nobody configured) for every other VIP.
// Every route takes its cluster from the x-xspace-cluster header, as the
// on-demand filter requires; a VIP's route serves both its clusters.
// VIPs are sorted by name, so the same set always yields the same bytes.
func OutboundRouteConfiguration(vips []registry.VIP) *routev3.RouteConfiguration {
	own := slices.Clone(vips)
	own = slices.DeleteFunc(own, func(v registry.VIP) bool { return !HasOwnRoute(v) })
	slices.SortFunc(own, func(a, b registry.VIP) int { return strings.Compare(a.Name, b.Name) })
	routes := make([]*routev3.Route, 0, len(own)+1)
	for _, v := range own {
		routes = append(routes, outboundRoute(v.Policy.Normalize(), &routev3.HeaderMatcher{
			Name:                 names.VIPHeader,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v.Name}}},
		}))
	}
	routes = append(routes, outboundRoute(registry.Policy{}.Normalize(), nil))
	return &routev3.RouteConfiguration{
		Name: names.OutboundRoute,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    names.OutboundRoute,
			Domains: []string{"*"},
			Routes:  routes,
			// Removed by the router as it forwards, after the route has
			// taken its cluster from them.
			RequestHeadersToRemove: []string{names.ClusterHeader, names.VIPHeader},
		}},
		// Routes name no cluster of their own; the header does.
		ValidateClusters: wrapperspb.Bool(false),
	}
}

// HasOwnRoute reports whether a VIP's route-level policy (request timeout,
// retries, what its load balancing hashes) differs from the platform
// defaults, so that sidecars need a route of its own to apply it.
func HasOwnRoute(v registry.VIP) bool { return hasOwnRoute(v.Policy.Normalize()) }

// defaultPolicy is the platform defaults, normalized.
var defaultPolicy = registry.Policy{}.Normalize()

// hasOwnRoute is HasOwnRoute of a normalized policy. It runs at every
// lookup of a VIP, so it compares without allocating.
func hasOwnRoute(p registry.Policy) bool {
	d := defaultPolicy
	return p.LoadBalancing.Hashed() || p.Timeouts.Request != d.Timeouts.Request || p.Retries.Attempts != d.Retries.Attempts ||
		p.Retries.PerTry != d.Retries.PerTry || !sameSet(p.Retries.On, d.Retries.On)
}

// sameSet reports whether a and b hold the same strings as many times
// each, in any order: retry conditions are a set, whose order means
// nothing to Envoy.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, s := range a {
		if count(a, s) != count(b, s) {
			return false
		}
	}
	return true
}

func count(list []string, s string) int {
	n := 0
	for _, e := range list {
		if e == s {
			n++
		}
	}
	return n
}

// outboundRoute routes by the cluster header with p's timeout, retries and
// hash policy; a retry prefers a host not tried yet.
func outboundRoute(p registry.Policy, vip *routev3.HeaderMatcher) *routev3.Route {
	rp := retryPolicy(p.Retries)
	rp.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{
		Name:       "envoy.retry_host_predicates.previous_hosts",
		ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: envoyproto.Any(&previoushostsv3.PreviousHostsPredicate{})},
	}}
	rp.HostSelectionRetryMaxAttempts = 3
	match := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if vip != nil {
		match.Headers = []*routev3.HeaderMatcher{vip}
	}
	return &routev3.Route{
		Match: match,
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier:            &routev3.RouteAction_ClusterHeader{ClusterHeader: names.ClusterHeader},
			ClusterNotFoundResponseCode: routev3.RouteAction_SERVICE_UNAVAILABLE,
			Timeout:                     duration(p.Timeouts.Request),
			RetryPolicy:                 rp,
			HashPolicy:                  hashPolicy(p),
		}},
	}
}

// InboundListener returns the inbound listener on 0.0.0.0:port of a
// sidecar of service: mutual TLS with the sidecar's own identity (SDS
// xspace/identity), a client certificate required, chaining to the trust
// bundle (SDS xspace/trust-bundle) and carrying a mesh identity
// (spiffe://xspace/svc/...). Envoy's RBAC filter lets in the callers the
// service's policy allows (see rbac.go), and the route, from RDS
// (InboundRouteConfiguration), sends requests to the application on
// 127.0.0.1:appPort, with the caller's identity in
// x-forwarded-client-cert (URI=spiffe://xspace/svc/<caller>); whatever the
// caller sent in that header is replaced.
func InboundListener(port, appPort uint32, service string) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:                  "xspace_inbound",
		CodecType:                   hcmv3.HttpConnectionManager_AUTO,
		ForwardClientCertDetails:    hcmv3.HttpConnectionManager_SANITIZE_SET,
		SetCurrentClientCertDetails: &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true},
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    fetchSource(),
			RouteConfigName: names.InboundRoute(service, appPort),
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			httpFilter(rbacFilter, inboundRBAC()),
			httpFilter(routerFilter, &routerv3.Router{}),
		},
	}
	tls := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  []string{"h2", "http/1.1"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(names.IdentitySecret)},
			ValidationContextType: peerValidation(&matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: names.SPIFFE("")},
			}),
		},
	}
	return &listenerv3.Listener{
		Name:    names.InboundListener(port, appPort),
		Address: envoyproto.SocketAddress("0.0.0.0", port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{networkFilter(hcm)},
			TransportSocket: &corev3.TransportSocket{
				Name:       "envoy.transport_sockets.tls",
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: envoyproto.Any(tls)},
			},
		}},
	}
}

// adsSource is a config source meaning "the same ADS stream".
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// fetchSource is adsSource for what an Envoy listener or cluster waits for
// before it is used, giving up after FetchTimeout.
func fetchSource() *corev3.ConfigSource {
	s := adsSource()
	s.InitialFetchTimeout = durationpb.New(FetchTimeout)
	return s
}

func httpFilter(name string, cfg proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: envoyproto.Any(cfg)}}
}

func networkFilter(hcm *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name:       "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: envoyproto.Any(hcm)},
	}
}

// LocalAppCluster returns the cluster of a sidecar's own application on
// 127.0.0.1:port, speaking whichever HTTP version the inbound request did.
func LocalAppCluster(port uint32) *clusterv3.Cluster {
	name := names.LocalAppCluster(port)
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: envoyproto.SocketAddress("127.0.0.1", port)}},
			}}}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			httpProtocolOptionsKey: envoyproto.Any(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
					UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
						HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
					},
				},
			}),
		},
	}
}
