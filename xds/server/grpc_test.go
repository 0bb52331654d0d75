package server_test

import (
	"context"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// The resources proxyless gRPC clients receive, seen on a delta stream,
// which shows what is sent and what is not. proxyless_test.go runs the
// real clients.

// decodeRoutes returns the route configurations of a response by name.
func decodeRoutes(tb testing.TB, r *discoveryv3.DeltaDiscoveryResponse) map[string]*routev3.RouteConfiguration {
	tb.Helper()
	out := map[string]*routev3.RouteConfiguration{}
	for _, res := range r.GetResources() {
		rc := &routev3.RouteConfiguration{}
		if err := res.GetResource().UnmarshalTo(rc); err != nil {
			tb.Fatal(err)
		}
		out[res.GetName()] = rc
	}
	return out
}

// routeCount is the number of routes of a VIP's route configuration: 1
// while proxyless gRPC clients are served, 0 while they are not.
func routeCount(rc *routev3.RouteConfiguration) int {
	if len(rc.GetVirtualHosts()) != 1 {
		return -1
	}
	return len(rc.GetVirtualHosts()[0].GetRoutes())
}

// TestAPIListenerFollowsTheVIP: a VIP's two API listeners ("payments.vip"
// and "payments") and its route are served on demand; an endpoint change
// sends neither again; when the VIP stops being a gRPC VIP its route loses
// its routes (gRPC clients then fail calls at once) and the listeners stay
// as they are; when it is one again the route comes back.
func TestAPIListenerFollowsTheVIP(t *testing.T) {
	m := newMesh(t)
	put := func(p registry.Protocol) {
		t.Helper()
		_, err := m.store.PutVIP(context.Background(), registry.VIP{Name: "payments", Policy: registry.Policy{Protocol: p}})
		if err != nil {
			t.Fatal(err)
		}
	}
	put(registry.GRPC)
	c := m.delta(t, "orders-1")
	c.subscribe(lds, "payments.vip", "payments")
	if r := c.recv(); r.GetTypeUrl() != lds || !slices.Equal(resourceNames(r), []string{"payments", "payments.vip"}) {
		t.Fatalf("listeners: got %s %v, want payments and payments.vip", r.GetTypeUrl(), resourceNames(r))
	}
	c.subscribe(rds, "payments.vip")
	r := c.recv()
	if rc := decodeRoutes(t, r)["payments.vip"]; r.GetTypeUrl() != rds || routeCount(rc) != 1 {
		t.Fatalf("route: got %s %v, want payments.vip with one route", r.GetTypeUrl(), rc)
	}
	// An endpoint change rebuilds the cluster's endpoints, not the listeners or route.
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	c.nothingMore()

	for _, step := range []struct {
		protocol registry.Protocol
		routes   int
	}{{registry.HTTP2, 0}, {registry.GRPC, 1}} {
		put(step.protocol)
		r := c.recv()
		if rc := decodeRoutes(t, r)["payments.vip"]; r.GetTypeUrl() != rds || routeCount(rc) != step.routes {
			t.Fatalf("%s VIP: got %s %v removed %v, want route payments.vip with %d routes",
				step.protocol, r.GetTypeUrl(), resourceNames(r), r.GetRemovedResources(), step.routes)
		}
		c.nothingMore() // the listeners did not change
	}
}

// TestUnknownTargetIsAnswered: a proxyless gRPC client asking for a VIP
// that does not exist gets its API listener and a route with no routes,
// so that it fails calls at once rather than after its 15 s
// does-not-exist timer; when the VIP appears, the same route is pushed
// with its route. A name that is not a VIP's gets nothing, and the bare
// name of a sidecar's own listener is never taken for a VIP.
func TestUnknownTargetIsAnswered(t *testing.T) {
	m := newMesh(t)
	c := m.delta(t, "orders-1")
	c.subscribe(lds, "ghost")
	r := c.recv()
	if !slices.Equal(resourceNames(r), []string{"ghost"}) {
		t.Fatalf("listener ghost: got %v removed %v, want the listener", resourceNames(r), r.GetRemovedResources())
	}
	l := &listenerv3.Listener{}
	if err := r.GetResources()[0].GetResource().UnmarshalTo(l); err != nil || l.GetApiListener() == nil {
		t.Fatalf("listener ghost: %v, %v; want an API listener", l, err)
	}
	c.subscribe(rds, "ghost.vip")
	if rc := decodeRoutes(t, c.recv())["ghost.vip"]; routeCount(rc) != 0 {
		t.Fatalf("route ghost.vip = %v, want a virtual host with no routes", rc)
	}

	if _, err := m.store.PutVIP(context.Background(), registry.VIP{Name: "ghost", Policy: registry.Policy{Protocol: registry.GRPC}}); err != nil {
		t.Fatal(err)
	}
	if rc := decodeRoutes(t, c.recv())["ghost.vip"]; routeCount(rc) != 1 {
		t.Fatalf("route ghost.vip after the VIP appeared = %v, want its route", rc)
	}

	c.subscribe(lds, "xspace-outbound-15001", "no.such.name")
	if r := c.recv(); len(r.GetResources()) != 0 || !slices.Equal(r.GetRemovedResources(), []string{"no.such.name", "xspace-outbound-15001"}) {
		t.Fatalf("got %v removed %v, want both not found", resourceNames(r), r.GetRemovedResources())
	}
}
