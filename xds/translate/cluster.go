// Package translate turns registry model values into Envoy xDS resources.
//
// Every function here is pure: no network, clock, logger or randomness, and
// its output is sorted, so the same model value always yields the same proto
// (and, marshalled deterministically, the same bytes). Inputs need not be
// normalized: each entry point applies the registry defaults itself, so a
// partial policy (one read from Consul KV, say) still yields full config.
package translate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/prisma-systems/xspace-mesh/internal/envoyproto"
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
// The cluster of a gRPC VIP is served to Envoy sidecars and to proxyless
// gRPC clients (grpc-go, grpc-js-xds) alike, so every field in it is one
// both accept: where a gRPC client lacks what the policy asks for, the
// cluster says it twice, once for those that have it and once for those
// that do not, in ways Envoy and gRPC both define (a load-balancing policy
// list, gRFC A52; outlier detection with every field set, gRFC A50).
// Envoy gets what the policy says; what gRPC clients get instead is what
// registry.Policy.ProxylessNotes reports. The clusters of other VIPs are
// for Envoy only.
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
	c := clusterPolicy(p)
	setClusterNames(c, vip, p, secure)
	return c
}

// setClusterNames sets the fields of a VIP's cluster that name the VIP:
// its name and its endpoints' name (with the discovery type that goes with
// them), and a secure cluster's TLS transport socket. No other field
// depends on the VIP's name (ClusterTemplate relies on it).
func setClusterNames(c *clusterv3.Cluster, vip string, p registry.Policy, secure bool) {
	name := names.Cluster(vip, secure)
	c.Name = name
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.EdsClusterConfig = edsConfig(name)
	if secure {
		c.TransportSocket = upstreamTransportSocket(vip, p.Protocol)
	}
}

// clusterPolicy is a cluster's fields that depend on its VIP's policy
// only.
func clusterPolicy(p registry.Policy) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		ConnectTimeout:                duration(p.Timeouts.Connect),
		LbPolicy:                      lbPolicy(p.LoadBalancing),
		CircuitBreakers:               circuitBreakers(p.CircuitBreakers, p.Retries),
		OutlierDetection:              outlierDetection(p.OutlierDetection),
		TypedExtensionProtocolOptions: protocolOptions(p.Protocol, p.Timeouts),
	}
	if p.Protocol == registry.GRPC {
		// Proxyless gRPC clients may receive it (only its plaintext
		// cluster, but the two say the same).
		c.LbPolicy = lbPolicy(p.LoadBalancing.ProxylessFallback())
		c.LoadBalancingPolicy = loadBalancingPolicy(p.LoadBalancing)
		c.OutlierDetection = grpcOutlierDetection(p.OutlierDetection)
	}
	return c
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

// lbPolicy maps a model load-balancing policy to the lb_policy enum. A gRPC
// VIP's cluster passes it the proxyless fallback (round_robin or
// ring_hash), and the policy itself in load_balancing_policy, which
// supersedes it. ring_hash
// and maglev hash on the route's hash_policy; without one Envoy picks hosts
// as if at random, so routes for such VIPs should set one. A value the
// registry would have rejected falls back to the default, round robin (best
// effort: this function has no error to return).
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

// Names of the load-balancing policy extensions (Envoy's and gRPC's
// registries know them by their type URL; Envoy also checks the name).
const (
	roundRobinPolicy   = "envoy.load_balancing_policies.round_robin"
	leastRequestPolicy = "envoy.load_balancing_policies.least_request"
	randomPolicy       = "envoy.load_balancing_policies.random"
	ringHashPolicy     = "envoy.load_balancing_policies.ring_hash"
	maglevPolicy       = "envoy.load_balancing_policies.maglev"
	wrrLocalityPolicy  = "envoy.load_balancing_policies.wrr_locality"
)

// loadBalancingPolicy is nil for the policies every proxyless gRPC client
// implements (round_robin, ring_hash): lb_policy says it all. For the
// others it lists the policy, then the fallback of gRPC clients that lack
// it (registry.LoadBalancing.ProxylessFallback). Envoy and gRPC both take
// the first entry they implement (Envoy's configureLbPolicies, gRFC A52),
// and both let load_balancing_policy supersede lb_policy, which holds the
// fallback for clients older than A52. Envoy implements every entry, so it
// always uses the first, with the defaults the lb_policy enum has.
//
// The round-robin fallback is wrapped in wrr_locality, the policy gRPC
// clients build from lb_policy ROUND_ROBIN, so that it weighs zones as
// they do for a round_robin VIP. The ring-hash one names XX_HASH, which
// grpc-js-xds requires explicitly.
func loadBalancingPolicy(lb registry.LoadBalancing) *clusterv3.LoadBalancingPolicy {
	var first *clusterv3.LoadBalancingPolicy_Policy
	switch lb {
	case registry.LeastRequest:
		first = lbPolicyEntry(leastRequestPolicy, &leastrequestv3.LeastRequest{})
	case registry.Random:
		first = lbPolicyEntry(randomPolicy, &randomv3.Random{})
	case registry.Maglev:
		first = lbPolicyEntry(maglevPolicy, &maglevv3.Maglev{})
	default:
		return nil
	}
	fallback := lbPolicyEntry(ringHashPolicy, &ringhashv3.RingHash{HashFunction: ringhashv3.RingHash_XX_HASH})
	if lb.ProxylessFallback() == registry.RoundRobin {
		fallback = lbPolicyEntry(wrrLocalityPolicy, &wrrlocalityv3.WrrLocality{
			EndpointPickingPolicy: &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
				lbPolicyEntry(roundRobinPolicy, &roundrobinv3.RoundRobin{}),
			}},
		})
	}
	return &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{first, fallback}}
}

func lbPolicyEntry(name string, config proto.Message) *clusterv3.LoadBalancingPolicy_Policy {
	return &clusterv3.LoadBalancingPolicy_Policy{
		TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: name, TypedConfig: envoyproto.Any(config)},
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

// grpcOutlierDetection is outlierDetection for a gRPC VIP, whose cluster
// proxyless gRPC clients read too.
//
// Envoy ejects on the policy's consecutive_5xx. gRPC clients implement
// only success-rate and failure-percentage ejection (gRFC A50), and read
// every field of those: grpc-js-xds 1.14 turns an unset one into an
// undefined value, and its process dies at the first interval (a reduce of
// an empty array in its success-rate check). So every gRFC A50 field is
// set, to Envoy's own default where the policy says nothing, which changes
// nothing for Envoy: success rate on, for 5 hosts or more with 100 calls
// each in an interval; at most 300s, or base_ejection_time, of ejection.
//
// Failure-percentage ejection is on, the nearest thing gRPC clients have
// to consecutive 5xx: an instance that failed more than
// registry.GRPCOutlierThreshold percent (Envoy: that percent or more) of
// at least consecutive_5xx calls in one interval is ejected, when
// registry.GRPCOutlierMinHosts instances had that many calls (Envoy: has
// that many instances). Envoy sidecars calling the VIP apply it too, so
// every caller ejects alike. consecutive_5xx 0 turns it off with the
// consecutive-5xx check.
func grpcOutlierDetection(o *registry.OutlierDetection) *clusterv3.OutlierDetection {
	od := outlierDetection(o)
	if od == nil {
		return nil
	}
	enforce := uint32(100)
	if o.Consecutive5xx == 0 {
		enforce = 0
	}
	// Envoy: "the default value (300000ms or 300s) or base_ejection_time
	// value is applied, whatever is larger".
	od.MaxEjectionTime = duration(max(o.BaseEjectionTime, registry.Duration(300*time.Second)))
	od.EnforcingSuccessRate = u32(100)
	od.SuccessRateMinimumHosts = u32(5)
	od.SuccessRateRequestVolume = u32(100)
	od.SuccessRateStdevFactor = u32(1900)
	od.EnforcingFailurePercentage = u32(enforce)
	od.FailurePercentageThreshold = u32(registry.GRPCOutlierThreshold)
	od.FailurePercentageMinimumHosts = u32(registry.GRPCOutlierMinHosts)
	od.FailurePercentageRequestVolume = u32(max(o.Consecutive5xx, 1))
	return od
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
	return map[string]*anypb.Any{httpProtocolOptionsKey: envoyproto.Any(opts)}
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
