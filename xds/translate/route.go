package translate

import (
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// RouteConfiguration returns the route configuration "<vip>.vip"
// (names.Cluster(v.Name, false)) named by APIListener: one virtual host that
// sends every request to the VIP's plaintext cluster with the VIP's request
// timeout, retry policy and, for ring_hash and maglev, what to hash
// (grpcHashPolicy).
//
// The virtual host's domains are the VIP name and the cluster name, each
// also with any port. gRPC picks the virtual host whose domains match the
// authority of the target it dialled ("payments.vip" for
// "xds:///payments.vip"), preferring an exact match to a port wildcard.
//
// gRPC understands only the gRPC retry conditions in retry_on (cancelled,
// deadline-exceeded, internal, resource-exhausted, unavailable) and ignores
// the rest; Envoy understands both kinds. gRPC ignores per_try_timeout.
func RouteConfiguration(v registry.VIP) *routev3.RouteConfiguration {
	p := v.Policy.Normalize()
	name := names.Cluster(v.Name, false)
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: []string{v.Name, v.Name + ":*", name, name + ":*"},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: ""}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name},
					Timeout:          duration(p.Timeouts.Request),
					RetryPolicy:      retryPolicy(p.Retries),
					HashPolicy:       grpcHashPolicy(p),
				}},
			}},
		}},
	}
}

// retryPolicy maps a normalized retry policy to a route's: attempts are the
// retries after the first try, conditions are joined as Envoy's
// x-envoy-retry-on header would list them.
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
