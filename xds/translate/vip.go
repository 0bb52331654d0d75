package translate

import (
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// Resource is one resource a VIP yields: a message, its encoding (made
// from a ClusterTemplate), or, with neither, a tombstone: the name is known
// not to exist, and clients holding it are told so.
type Resource struct {
	TypeURL string
	Name    string
	Msg     proto.Message
	// Encoded, when set instead of Msg, is the message's deterministic
	// encoding (proto.MarshalOptions{Deterministic: true}).
	Encoded []byte
	// Independent says it does not depend on the resources before it in
	// its set: it starts a new chain of dependencies (see Set).
	Independent bool
}

// Tombstone reports whether r says its name does not exist.
func (r Resource) Tombstone() bool { return r.Msg == nil && r.Encoded == nil }

// Set is resources to publish in one step, each after the ones it depends
// on: a ClusterLoadAssignment after its Cluster, a route configuration
// after the listeners that name it. A resource depends on every one before
// it in its set, back to the nearest Independent one. Err, if set, says
// what could not be translated (a generated resource that does not
// validate); the resources listed are still to be published, and, where
// Err left none, the resources the set would have had keep their previous
// versions.
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

// Part is a part of what a VIP yields, built once a client asks for it:
// an Envoy sidecar asks for a cluster, then its endpoints, a proxyless
// gRPC client for the API listeners and route, then the plaintext cluster
// and its endpoints. Parts combine with |.
type Part uint8

const (
	// SecureClusterPart is the mutual-TLS cluster "<vip>.svip".
	SecureClusterPart Part = 1 << iota
	// SecureEndpointsPart is its ClusterLoadAssignment; it comes with
	// SecureClusterPart, on which it depends.
	SecureEndpointsPart
	// PlainClusterPart is the plaintext cluster "<vip>.vip".
	PlainClusterPart
	// PlainEndpointsPart is its ClusterLoadAssignment; it comes with
	// PlainClusterPart.
	PlainEndpointsPart
	// ProxylessPart is the API listeners and route configuration of proxyless
	// gRPC. It comes with PlainClusterPart: where the plaintext cluster does
	// not validate, neither is published.
	ProxylessPart
	// AllParts is everything a VIP yields.
	AllParts = SecureClusterPart | SecureEndpointsPart | PlainClusterPart | PlainEndpointsPart | ProxylessPart
)

// WithDependencies adds to parts the parts they come with.
func (parts Part) WithDependencies() Part {
	if parts&SecureEndpointsPart != 0 {
		parts |= SecureClusterPart
	}
	if parts&(PlainEndpointsPart|ProxylessPart) != 0 {
		parts |= PlainClusterPart
	}
	return parts
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
// The listeners and route go first in the plaintext set, and the cluster
// after them starts a chain of its own (Independent): a version covers the
// resources its resource depends on, the listeners and route must not be
// sent again on every endpoint change, and a cluster's version must not
// depend on which other parts were built (VIPParts). The policy is
// normalized once, here.
func VIP(name string, svc registry.Service, found bool) Yield {
	return VIPParts(name, svc, found, AllParts, nil)
}

// VIPParts is VIP restricted to some of its parts, with the parts they
// come with: the sets and resources of VIP that belong to them, in the
// same order, which publish with the same versions. OwnRoute is set
// whatever the parts. With templates, clusters are encoded from their
// policy's template rather than built: the same bytes, for a fraction of
// the work.
func VIPParts(name string, svc registry.Service, found bool, parts Part, templates Templates) Yield {
	parts = parts.WithDependencies()
	if !found {
		var y Yield
		if parts&PlainClusterPart != 0 {
			plain := tombstones(names.Cluster(name, false), parts&PlainEndpointsPart != 0)
			if parts&ProxylessPart != 0 {
				plain = append(proxylessResources(name, nil), plain...)
			}
			y.Sets = append(y.Sets, Set{Resources: plain})
		}
		if parts&SecureClusterPart != 0 {
			y.Sets = append(y.Sets, Set{Resources: tombstones(names.Cluster(name, true), parts&SecureEndpointsPart != 0)})
		}
		return y
	}
	var tmpl *ClusterTemplate
	if templates != nil {
		tmpl = templates.Template(svc.VIP.Policy)
	} else {
		tmpl = &ClusterTemplate{policy: svc.VIP.Policy.Normalize()}
	}
	var y Yield
	if parts&SecureClusterPart != 0 {
		y.Sets = append(y.Sets, clusterSet(name, svc, tmpl, true, parts&SecureEndpointsPart != 0))
	}
	if hasOwnRoute(tmpl.policy) {
		// A copy: the template's policy is shared.
		y.OwnRoute = registry.VIP{Name: name, Policy: tmpl.policy.Clone()}
	}
	if parts&PlainClusterPart != 0 {
		y.Sets = append(y.Sets, plainSet(name, svc, tmpl, parts))
	}
	return y
}

// plainSet is the plaintext set of a VIP that exists: its proxyless gRPC
// resources first, if asked for, then its plaintext cluster (with its
// endpoints, if asked for).
func plainSet(name string, svc registry.Service, tmpl *ClusterTemplate, parts Part) Set {
	p := tmpl.policy
	plain := names.Cluster(name, false)
	if !p.PlaintextAllowed() {
		set := Set{Resources: tombstones(plain, parts&PlainEndpointsPart != 0)}
		if parts&ProxylessPart != 0 {
			set.Resources = append(proxylessResources(name, nil), set.Resources...)
		}
		return set
	}
	set := clusterSet(name, svc, tmpl, false, parts&PlainEndpointsPart != 0)
	if set.Err != nil || parts&ProxylessPart == 0 {
		return set
	}
	var grpc []Resource
	if p.Protocol == registry.GRPC {
		route := routeConfiguration(name, p)
		if err := route.Validate(); err != nil {
			set.Err = fmt.Errorf("gRPC route of %s: %w", plain, err)
			return set
		}
		grpc = proxylessResources(name, route)
	} else {
		grpc = proxylessResources(name, nil)
	}
	set.Resources[0].Independent = true
	set.Resources = append(grpc, set.Resources...)
	return set
}

// clusterSet is a VIP's cluster, then, withEndpoints, its endpoints; or
// nothing if either does not validate.
func clusterSet(name string, svc registry.Service, tmpl *ClusterTemplate, secure, withEndpoints bool) Set {
	c, err := tmpl.resource(name, secure)
	if err != nil {
		return Set{Err: err}
	}
	set := Set{Resources: []Resource{c}}
	if withEndpoints {
		cla := clusterLoadAssignment(svc, secure)
		if err := cla.Validate(); err != nil {
			return Set{Err: err}
		}
		set.Resources = append(set.Resources, Resource{TypeURL: resource.EndpointType, Name: cla.GetClusterName(), Msg: cla})
	}
	return set
}

// validator is a generated Envoy message.
type validator interface {
	proto.Message
	Validate() error
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

// tombstones are those of a cluster and, withEndpoints, its endpoints.
func tombstones(cluster string, withEndpoints bool) []Resource {
	out := []Resource{{TypeURL: resource.ClusterType, Name: cluster}}
	if withEndpoints {
		out = append(out, Resource{TypeURL: resource.EndpointType, Name: cluster})
	}
	return out
}

// Owned lists, without messages, every resource a VIP's resources are
// published under: what to remove when it is no longer watched.
func Owned(vip string) []Resource {
	var out []Resource
	for _, secure := range []bool{false, true} {
		out = append(out, tombstones(names.Cluster(vip, secure), true)...)
	}
	for _, r := range proxylessResources(vip, nil) {
		out = append(out, Resource{TypeURL: r.TypeURL, Name: r.Name})
	}
	return out
}
