package translate

import (
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// RouteConfiguration returns the route configuration "<vip>.vip"
// (names.Cluster(v.Name, false)) that a VIP's API listeners name: one
// virtual host that sends every call to the VIP's plaintext cluster with
// what of the VIP's policy gRPC clients apply per call. Only proxyless gRPC
// clients receive it (Envoy sidecars route with OutboundRouteConfiguration),
// so it says things the way gRPC reads them:
//
//   - The request timeout is max_stream_duration (gRFC A31): gRPC ignores
//     RouteAction.timeout. It bounds a call from its start, streaming calls
//     included, and never extends the application's own deadline. A request
//     timeout of 0 sets none.
//   - The retry policy lists only the conditions gRPC honours (gRFC A44,
//     registry.GRPCRetryConditions), at most registry.MaxGRPCRetries
//     retries; with none of those conditions, or no retries, there is no
//     retry policy (num_retries 0 is invalid for gRPC). gRPC has no
//     per_try_timeout.
//   - ring_hash and maglev VIPs hash what grpcHashPolicy says.
//
// The virtual host's domains are the VIP name and the cluster name, each
// also with any port. gRPC picks the virtual host whose domains match the
// authority of the target it dialled ("payments.vip" for
// "xds:///payments.vip", "payments" for "xds:///payments"), preferring an
// exact match to a port wildcard.
func RouteConfiguration(v registry.VIP) *routev3.RouteConfiguration {
	return routeConfiguration(v.Name, v.Policy.Normalize())
}

// routeConfiguration is RouteConfiguration of a normalized policy.
func routeConfiguration(vip string, p registry.Policy) *routev3.RouteConfiguration {
	action := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: names.Cluster(vip, false)},
		RetryPolicy:      grpcRetryPolicy(p.Retries),
		HashPolicy:       grpcHashPolicy(p),
	}
	if p.Timeouts.Request > 0 {
		action.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: duration(p.Timeouts.Request)}
	}
	rc := UnservedRouteConfiguration(vip)
	rc.VirtualHosts[0].Routes = []*routev3.Route{{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: ""}},
		Action: &routev3.Route_Route{Route: action},
	}}
	return rc
}

// UnservedRouteConfiguration is the route configuration "<vip>.vip" of a
// VIP that proxyless gRPC clients are not served: one that does not exist,
// is not a gRPC VIP, or serves mutual TLS only. Its virtual host matches
// the VIP's names and has no routes, so a client fails each call at once
// with UNAVAILABLE (grpc-go: "no matched route was found"; grpc-js: "Failed
// to route call"), even a call that waits for ready, instead of waiting for
// its does-not-exist timer or the call's deadline (see cache.CreateWatch).
// When the VIP becomes served, RouteConfiguration replaces it under the same
// name and the same clients' calls succeed.
func UnservedRouteConfiguration(vip string) *routev3.RouteConfiguration {
	name := names.Cluster(vip, false)
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: []string{vip, vip + ":*", name, name + ":*"},
		}},
	}
}

// retryPolicy maps a normalized retry policy to a route's, for Envoy:
// attempts are the retries after the first try, conditions are joined as
// Envoy's x-envoy-retry-on header would list them.
func retryPolicy(r registry.Retries) *routev3.RetryPolicy {
	rp := &routev3.RetryPolicy{
		RetryOn:    strings.Join(r.On, ","),
		NumRetries: u32(r.Attempts),
	}
	if r.PerTry.D() > 0 {
		rp.PerTryTimeout = duration(r.PerTry)
	}
	return rp
}

// grpcRetryPolicy maps a normalized retry policy to what gRPC clients
// apply (see RouteConfiguration); nil when they would not retry.
func grpcRetryPolicy(r registry.Retries) *routev3.RetryPolicy {
	on := r.ProxylessRetryConditions()
	if r.Attempts == 0 || len(on) == 0 {
		return nil
	}
	return &routev3.RetryPolicy{
		RetryOn:    strings.Join(on, ","),
		NumRetries: u32(min(r.Attempts, registry.MaxGRPCRetries)),
	}
}
