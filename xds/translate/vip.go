package translate

import (
	"errors"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// Resource is one resource a VIP yields: a message, or, with a nil Msg, a
// tombstone: the name is known not to exist, and clients holding it are
// told so.
type Resource struct {
	TypeURL string
	Name    string
	Msg     proto.Message
}

// Set is resources to publish in one step, each after the ones it depends
// on: a ClusterLoadAssignment after its Cluster, a route configuration
// after the listeners that name it. Err, if set, says what could not be
// translated (a generated resource that does not validate); the resources
// listed are still to be published, and, where Err left none, the
// resources the set would have had keep their previous versions.
type Set struct {
	Resources []Resource
	Err       error
}

// Yield is everything one VIP yields.
type Yield struct {
	Sets []Set
	// OwnRoute is the VIP, with its normalized policy, when sidecars need a
	// route of its own in their outbound routes (HasOwnRoute); the zero
	// VIP otherwise, and for a VIP that does not exist.
	OwnRoute registry.VIP
}

// VIP translates one VIP, as the registry has it when found, and as a VIP
// that does not exist otherwise, into the exact resources and tombstones
// it yields under the names it owns (Owned):
//
//   - its mutual-TLS cluster "<vip>.svip" and endpoints;
//   - its plaintext cluster "<vip>.vip" and endpoints, when its policy
//     allows plaintext, and tombstones of them otherwise;
//   - the API listeners and route configuration of proxyless gRPC, served
//     (RouteConfiguration) to a gRPC VIP that allows plaintext, unserved
//     (UnservedRouteConfiguration) to any other VIP, so that a gRPC client
//     dialling it fails at once rather than waiting for a timer.
//
// The listeners and route go first in the plaintext set: an item's
// version covers the items before it, and they must not be sent again on
// every endpoint change. The policy is normalized once, here.
func VIP(name string, svc registry.Service, found bool) Yield {
	if !found {
		return Yield{Sets: []Set{
			{Resources: append(proxylessResources(name, nil), tombstones(names.Cluster(name, false))...)},
			{Resources: tombstones(names.Cluster(name, true))},
		}}
	}
	p := svc.VIP.Policy.Normalize()
	y := Yield{Sets: []Set{pair(secureCluster(name, p), clusterLoadAssignment(svc, true))}}
	if hasOwnRoute(p) {
		y.OwnRoute = registry.VIP{Name: name, Policy: p}
	}
	plain := names.Cluster(name, false)
	if !p.PlaintextAllowed() {
		y.Sets = append(y.Sets, Set{Resources: append(proxylessResources(name, nil), tombstones(plain)...)})
		return y
	}
	var grpc []Resource
	var grpcErr error
	if p.Protocol == registry.GRPC {
		route := routeConfiguration(name, p)
		if grpcErr = route.Validate(); grpcErr == nil {
			grpc = proxylessResources(name, route)
		}
	} else {
		grpc = proxylessResources(name, nil)
	}
	set := pair(cluster(name, p, false), clusterLoadAssignment(svc, false))
	if set.Err == nil {
		set.Resources = append(grpc, set.Resources...)
		if grpcErr != nil {
			set.Err = fmt.Errorf("gRPC route of %s: %w", plain, grpcErr)
		}
	}
	y.Sets = append(y.Sets, set)
	return y
}

// validator is a generated Envoy message.
type validator interface {
	proto.Message
	Validate() error
}

// pair is a cluster and its endpoints, or nothing if either does not
// validate.
func pair(cluster, cla validator) Set {
	for _, m := range []validator{cluster, cla} {
		if err := m.Validate(); err != nil {
			return Set{Err: err}
		}
	}
	return Set{Resources: []Resource{
		{TypeURL: resource.ClusterType, Name: publishedName(cluster), Msg: cluster},
		{TypeURL: resource.EndpointType, Name: publishedName(cla), Msg: cla},
	}}
}

// proxylessResources are a VIP's API listeners, then its route
// configuration: route, or, when nil, the unserved one.
func proxylessResources(vip string, route validator) []Resource {
	if route == nil {
		route = UnservedRouteConfiguration(vip)
	}
	var out []Resource
	for _, l := range APIListeners(vip) {
		out = append(out, Resource{TypeURL: resource.ListenerType, Name: l.GetName(), Msg: l})
	}
	return append(out, Resource{TypeURL: resource.RouteType, Name: names.Cluster(vip, false), Msg: route})
}

// tombstones are those of a cluster and its endpoints.
func tombstones(cluster string) []Resource {
	return []Resource{{TypeURL: resource.ClusterType, Name: cluster}, {TypeURL: resource.EndpointType, Name: cluster}}
}

// Owned lists, without messages, every resource a VIP's resources are
// published under: what to remove when it is no longer watched.
func Owned(vip string) []Resource {
	var out []Resource
	for _, secure := range []bool{false, true} {
		out = append(out, tombstones(names.Cluster(vip, secure))...)
	}
	for _, r := range proxylessResources(vip, nil) {
		out = append(out, Resource{TypeURL: r.TypeURL, Name: r.Name})
	}
	return out
}

// publishedName is the name a generated message is published under.
func publishedName(m proto.Message) string {
	switch m := m.(type) {
	case interface{ GetClusterName() string }:
		return m.GetClusterName()
	case interface{ GetName() string }:
		return m.GetName()
	}
	panic(errors.New("translate: a resource without a name"))
}
