package translate

import (
	"cmp"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/prisma-systems/xspace-mesh/internal/envoyproto"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// metadataNamespace is the filter_metadata key under which every endpoint
// carries what the mesh knows about it.
const metadataNamespace = "xspace"

// ClusterLoadAssignment returns the endpoints of "<vip>.vip" for a VIP's instances.
//
// Instances are grouped into one LocalityLbEndpoints per zone (the empty zone
// is a locality of its own), localities sorted by zone and endpoints by
// instance id. Only UP and DRAINING instances are sent (registry.Status.Published).
// Each locality's load_balancing_weight is the sum of its endpoints' weights:
// gRPC's xDS client ignores a locality without a weight (so it would find no
// endpoints at all) and splits traffic between localities by these weights
// before it picks an endpoint within one; Envoy uses them only with locality
// weighted load balancing, which mesh clusters do not enable.
// A VIP with no published instance yields an assignment with no endpoints,
// which is valid: Envoy answers 503 "no healthy upstream" rather than waiting.
func ClusterLoadAssignment(svc registry.Service) *endpointv3.ClusterLoadAssignment {
	return clusterLoadAssignment(svc, false)
}

// SecureClusterLoadAssignment returns the endpoints of "<vip>.svip": the
// same instances as ClusterLoadAssignment, at their secure ports. An
// instance that registered no secure port is not part of the secure cluster.
func SecureClusterLoadAssignment(svc registry.Service) *endpointv3.ClusterLoadAssignment {
	return clusterLoadAssignment(svc, true)
}

func clusterLoadAssignment(svc registry.Service, secure bool) *endpointv3.ClusterLoadAssignment {
	published := make([]registry.Instance, 0, len(svc.Instances))
	for _, inst := range svc.Instances {
		inst = inst.Normalize()
		if secure {
			if inst.SecurePort == 0 {
				continue
			}
			inst.Port = inst.SecurePort
		}
		if inst.Status.Published() {
			published = append(published, inst)
		}
	}
	// Sort by zone, then id, so each locality's endpoints come out in id
	// order. Address and port break ties between duplicate ids, so even
	// malformed input translates deterministically.
	slices.SortFunc(published, func(a, b registry.Instance) int {
		return cmp.Or(cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.ID, b.ID),
			cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
	})

	cla := &endpointv3.ClusterLoadAssignment{ClusterName: names.Cluster(svc.VIP.Name, secure)}
	var locality *endpointv3.LocalityLbEndpoints
	for _, inst := range published {
		if locality == nil || locality.GetLocality().GetZone() != inst.Zone {
			locality = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: inst.Zone}}
			cla.Endpoints = append(cla.Endpoints, locality)
		}
		locality.LbEndpoints = append(locality.LbEndpoints, lbEndpoint(inst))
		locality.LoadBalancingWeight = u32(locality.GetLoadBalancingWeight().GetValue() + inst.Weight)
	}
	return cla
}

// Only instances whose status is Published are sent to Envoy at all;
// healthStatus says as what.
//
// UP is HEALTHY. DRAINING is sent as DRAINING so that Envoy stops picking the
// host for new requests while the instance finishes what it has (Envoy
// interprets DRAINING as UNHEALTHY for load balancing).
//
// STARTING, DOWN and OUT_OF_SERVICE are left out entirely rather than sent as
// UNHEALTHY. Envoy's panic threshold (50% by default) makes unhealthy hosts
// routable: "if the percentage of available hosts in the cluster becomes too
// low, Envoy will disregard health status and balance either amongst all hosts
// or no hosts" (https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/panic_threshold).
// Sent as UNHEALTHY, a fleet mid-deploy (many STARTING) or an outage (many
// DOWN) would tip the cluster into panic and send live traffic to instances
// that are known not to serve, and they would also count in the denominator
// that decides panic. Left out, they are neither counted nor ever picked.
// DRAINING hosts do stay in that denominator: if more than half a VIP's
// instances drain at once, Envoy panics and new requests reach them too, which
// still beats failing those requests while the instances can still serve.

// healthStatus maps a published instance status to the EDS health status.
func healthStatus(s registry.Status) corev3.HealthStatus {
	if s == registry.StatusDraining {
		return corev3.HealthStatus_DRAINING
	}
	return corev3.HealthStatus_HEALTHY
}

// lbEndpoint returns the endpoint of a normalized, published instance. The hostname is
// the instance id, for stats and the admin page; it is not used for routing,
// but a route with auto_host_rewrite would put it in the Host header, so
// routes to mesh clusters must not set auto_host_rewrite. The instance's own
// metadata is not sent: only the mesh's instance_id, under "xspace".
func lbEndpoint(inst registry.Instance) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address:  envoyproto.SocketAddress(inst.Address, inst.Port),
			Hostname: inst.ID,
		}},
		HealthStatus:        healthStatus(inst.Status),
		LoadBalancingWeight: u32(inst.Weight),
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			metadataNamespace: stringStruct("instance_id", inst.ID),
		}},
	}
}
