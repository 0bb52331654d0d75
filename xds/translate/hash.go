package translate

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// grpcChannelID is the filter state key gRPC clients fill with a value
// unique to each channel (gRFC A42), their stand-in for the caller's
// address.
const grpcChannelID = "io.grpc.channel_id"

// hashPolicy is what a hashing VIP's route hashes for an Envoy sidecar
// (RouteAction.hash_policy): without one, ring_hash and maglev hash a
// random number per request (Envoy's thread_aware_lb_impl.cc, v1.36.0 to
// v1.39.0: "random_.random()" when the context has no hash), which balances
// at random. nil for a policy that does not hash.
func hashPolicy(p registry.Policy) []*routev3.RouteAction_HashPolicy {
	h := p.HashOn
	if !p.LoadBalancing.Hashed() || h == nil {
		return nil
	}
	switch {
	case h.Header != "":
		return []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h.Header},
		}}}
	case h.Cookie != nil:
		c := &routev3.RouteAction_HashPolicy_Cookie{Name: h.Cookie.Name, Path: h.Cookie.Path}
		if h.Cookie.TTL != nil {
			// Present: Envoy sets the cookie when a request lacks it (a
			// ttl of 0 makes it a session cookie); absent: it never does.
			c.Ttl = duration(*h.Cookie.TTL)
		}
		return []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}}}
	default:
		return []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true},
		}}}
	}
}

// grpcHashPolicy is what a hashing VIP's route hashes for a proxyless gRPC
// client, which honours only a header and its channel ID (gRFC A42): a
// header as for Envoy, the caller's address as its channel (one client,
// one instance). Validate refuses cookies for gRPC VIPs.
func grpcHashPolicy(p registry.Policy) []*routev3.RouteAction_HashPolicy {
	h := p.HashOn
	if !p.LoadBalancing.Hashed() || h == nil || h.Cookie != nil {
		return nil
	}
	if h.Header != "" {
		return hashPolicy(p)
	}
	return []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{
		FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: grpcChannelID},
	}}}
}
