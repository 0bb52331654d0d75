// Package translate turns registry model values into Envoy xDS resources.
//
// Every function here is pure: no network, clock, logger or randomness, and
// its output is sorted, so the same model value always yields the same proto
// (and, marshalled deterministically, the same bytes). Inputs need not be
// normalized: each entry point applies the registry defaults itself, so a
// partial policy (one read from Consul KV, say) still yields full config.
package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// httpProtocolOptionsKey is the typed_extension_protocol_options key under
// which Envoy's router looks for upstream HTTP protocol options.
const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// Cluster returns the plaintext cluster "<vip>.vip" (names.Cluster(v.Name, false)) for a VIP.
//
// The cluster is of type EDS and takes its endpoints over ADS from the
// ClusterLoadAssignment of the same name. It carries the policy that Envoy
// applies per cluster: connect timeout, load-balancing policy, circuit
// breakers with a retry budget, outlier detection, the upstream HTTP protocol
// and the idle timeout of upstream connections.
//
// Retry attempts, retry conditions, the per-try timeout and the request
// timeout are route-level settings in Envoy (RouteAction.retry_policy and
// RouteAction.timeout), so they are not part of the Cluster; they belong to
// the routes. Only the retry budget, which bounds concurrent retries to this
// cluster, lives here. Whether the plaintext cluster is served at all
// (policy.plaintext) is discovery's decision; Cluster translates regardless.
func Cluster(v registry.VIP) *clusterv3.Cluster {
	return cluster(v.Name, v.Policy.Normalize(), false)
}

func cluster(vip string, p registry.Policy, secure bool) *clusterv3.Cluster {
	name := names.Cluster(vip, secure)
	return &clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:              edsConfig(name),
		ConnectTimeout:                duration(p.Timeouts.Connect),
		LbPolicy:                      lbPolicy(p.LoadBalancing),
		CircuitBreakers:               circuitBreakers(p.CircuitBreakers, p.Retries),
		OutlierDetection:              outlierDetection(p.OutlierDetection),
		TypedExtensionProtocolOptions: protocolOptions(p.Protocol, p.Timeouts),
	}
}

// edsConfig subscribes the cluster to its endpoints over the same ADS stream
// that delivered the cluster, by the cluster's own name.
func edsConfig(name string) *clusterv3.Cluster_EdsClusterConfig {
	return &clusterv3.Cluster_EdsClusterConfig{
		EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		},
		ServiceName: name,
	}
}

// lbPolicy maps a model load-balancing policy to Envoy's. ring_hash and
// maglev hash on the route's hash_policy; without one Envoy picks hosts as if
// at random, so routes for such VIPs should set one. A value the registry
// would have rejected falls back to the default, round robin (best effort:
// this function has no error to return).
func lbPolicy(lb registry.LoadBalancing) clusterv3.Cluster_LbPolicy {
	switch lb {
	case registry.LeastRequest:
		return clusterv3.Cluster_LEAST_REQUEST
	case registry.Random:
		return clusterv3.Cluster_RANDOM
	case registry.RingHash:
		return clusterv3.Cluster_RING_HASH
	case registry.Maglev:
		return clusterv3.Cluster_MAGLEV
	default:
		return clusterv3.Cluster_ROUND_ROBIN
	}
}

// circuitBreakers returns one DEFAULT-priority threshold (the priority every
// route uses unless it asks for HIGH) with a retry budget.
//
// Envoy's docs on Thresholds.retry_budget: "If this field is set, the retry
// budget will override any configured retry circuit breaker", i.e. max_retries
// is ignored once a budget exists. A budget scales with load (budget_percent
// of active plus pending requests may be retries), which a fixed max_retries
// cannot, so the budget wins. The policy's max_retries is not dropped: it
// becomes the budget's min_retry_concurrency, the number of concurrent retries
// always allowed however little traffic there is (Envoy's default for both is
// 3). The threshold's own max_retries is left unset because Envoy would ignore
// it, and a config dump showing it would mislead whoever reads it.
func circuitBreakers(cb registry.CircuitBreakers, r registry.Retries) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{
		Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority:           corev3.RoutingPriority_DEFAULT,
			MaxConnections:     u32(cb.MaxConnections),
			MaxPendingRequests: u32(cb.MaxPendingRequests),
			MaxRequests:        u32(cb.MaxRequests),
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
				BudgetPercent:       &typev3.Percent{Value: r.BudgetPerc},
				MinRetryConcurrency: u32(cb.MaxRetries),
			},
		}},
	}
}

// outlierDetection returns nil, which turns outlier detection off, when the
// policy has none. Fields Envoy has and the policy does not (success-rate
// ejection, gateway-failure ejection, ...) keep Envoy's defaults.
func outlierDetection(o *registry.OutlierDetection) *clusterv3.OutlierDetection {
	if o == nil {
		return nil
	}
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:    u32(o.Consecutive5xx),
		Interval:           duration(o.Interval),
		BaseEjectionTime:   duration(o.BaseEjectionTime),
		MaxEjectionPercent: u32(o.MaxEjectionPercent),
	}
}

// protocolOptions pins the upstream HTTP protocol (no ALPN negotiation on a
// plaintext cluster) and sets how long an idle upstream connection lives.
func protocolOptions(proto registry.Protocol, t registry.Timeouts) map[string]*anypb.Any {
	opts := &httpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: duration(t.Idle)},
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: explicitHTTPConfig(proto),
		},
	}
	return map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(opts)}
}

// explicitHTTPConfig speaks HTTP/2 to http2 and grpc VIPs and HTTP/1.1 to the
// rest; an unknown protocol falls back to the default, HTTP/1.1.
func explicitHTTPConfig(proto registry.Protocol) *httpv3.HttpProtocolOptions_ExplicitHttpConfig {
	switch proto {
	case registry.HTTP2, registry.GRPC:
		return &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		}
	default:
		return &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
				HttpProtocolOptions: &corev3.Http1ProtocolOptions{},
			},
		}
	}
}
