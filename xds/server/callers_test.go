package server_test

import (
	"context"
	"slices"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

// inboundSidecar connects a sidecar of service with an inbound listener
// forwarding to appPort, takes its listeners and routes as Envoy does, and
// returns the stream and the inbound route it was first sent.
func inboundSidecar(t *testing.T, m *mesh, service, tok string, appPort int) (*deltaClient, *routev3.RouteConfiguration) {
	t.Helper()
	c := m.deltaAs(t, service+"-1", service, tok)
	sidecarNode(c, map[string]any{names.NodeOutboundPortKey: 15001, names.NodeInboundPortKey: 8443, names.NodeAppPortKey: appPort})
	c.subscribe(lds)
	r := c.recv()
	i := slices.Index(resourceNames(r), names.InboundListener(8443, uint32(appPort)))
	if i < 0 {
		t.Fatalf("%s: wildcard listeners = %v; want its inbound listener", service, resourceNames(r))
	}
	var in listenerv3.Listener
	if err := r.GetResources()[i].GetResource().UnmarshalTo(&in); err != nil {
		t.Fatal(err)
	}
	var hcm hcmv3.HttpConnectionManager
	if err := in.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	want := names.InboundRoute(service, uint32(appPort))
	if got := hcm.GetRds().GetRouteConfigName(); got != want {
		t.Fatalf("%s's inbound listener takes route %q; want %q", service, got, want)
	}
	c.subscribe(rds, names.OutboundRoute, want)
	routes := map[string]*routev3.RouteConfiguration{}
	for len(routes) < 2 {
		for _, res := range c.recv().GetResources() {
			routes[res.GetName()] = decodeRoute(t, res)
		}
	}
	return c, routes[want]
}

func decodeRoute(t *testing.T, r *discoveryv3.Resource) *routev3.RouteConfiguration {
	t.Helper()
	var rc routev3.RouteConfiguration
	if err := r.GetResource().UnmarshalTo(&rc); err != nil {
		t.Fatal(err)
	}
	return &rc
}

// callers reads who an inbound route lets in: nil for any mesh identity
// (no RBACPerRoute), else the principals its RBACPerRoute allows (none
// for a deny-all).
func callers(t *testing.T, rc *routev3.RouteConfiguration) []string {
	t.Helper()
	cfg := rc.GetVirtualHosts()[0].GetRoutes()[0].GetTypedPerFilterConfig()["envoy.filters.http.rbac"]
	if cfg == nil {
		return nil
	}
	var per rbacv3.RBACPerRoute
	if err := cfg.UnmarshalTo(&per); err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, p := range per.GetRbac().GetRules().GetPolicies() {
		for _, pr := range p.GetPrincipals() {
			if id := pr.GetAuthenticated().GetPrincipalName().GetExact(); id != "" && per.GetRbac().GetRules().GetAction() == 0 {
				out = append(out, id)
			}
		}
	}
	return out
}

// TestAllowedCallersReachOnlyTheirSidecars: a sidecar's inbound listener
// takes its service's inbound route, which says who may call it; a change
// of one VIP's allowed_callers is pushed to that VIP's sidecars, as that
// route only, and a sidecar of another service is sent nothing.
func TestAllowedCallersReachOnlyTheirSidecars(t *testing.T) {
	kr := testKeyring(t, time.Now())
	m := newMeshWith(t, func(o *server.Options) { o.Authenticator = kr })
	issue := func(service string) string {
		tok, err := kr.Issue(service, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// ledger is not registered yet: its sidecar's route lets any mesh
	// identity in, as a policy without allowed_callers does.
	ledger, route := inboundSidecar(t, m, "ledger", issue("ledger"), 8080)
	if got := callers(t, route); got != nil {
		t.Fatalf("inbound route of an unregistered VIP allows %v; want any mesh identity", got)
	}
	web, webRoute := inboundSidecar(t, m, "web", issue("web"), 9090)
	if webRoute.GetName() != names.InboundRoute("web", 9090) {
		t.Fatalf("web's inbound route is %s", webRoute.GetName())
	}

	ctx := context.Background()
	for _, tc := range []struct {
		allowed *[]string
		want    []string
	}{
		{&[]string{"web", "orders"}, []string{names.SPIFFE("orders"), names.SPIFFE("web")}},
		{&[]string{}, []string{}},
		{nil, nil},
	} {
		if _, err := m.store.PutVIP(ctx, registry.VIP{Name: "ledger", Policy: registry.Policy{AllowedCallers: tc.allowed}}); err != nil {
			t.Fatal(err)
		}
		r := ledger.recv()
		if r.GetTypeUrl() != rds || !slices.Equal(resourceNames(r), []string{names.InboundRoute("ledger", 8080)}) {
			t.Fatalf("allowed_callers %v: ledger's sidecar was sent %s %v; want its inbound route only", tc.allowed, r.GetTypeUrl(), resourceNames(r))
		}
		got := callers(t, decodeRoute(t, r.GetResources()[0]))
		if !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Fatalf("allowed_callers %v: route allows %v; want %v", tc.allowed, got, tc.want)
		}
		ledger.nothingMore()
		web.nothingMore()
	}
}

// TestInboundRouteOfAnotherService: a stream that did not authenticate as
// a service is told its inbound route does not exist, and meshd builds
// none for it (each app port would otherwise cost one more route), while
// the service's own stream gets it.
func TestInboundRouteOfAnotherService(t *testing.T) {
	kr := testKeyring(t, time.Now())
	m := newMeshWith(t, func(o *server.Options) { o.Authenticator = kr })
	if _, err := m.store.PutVIP(context.Background(), registry.VIP{Name: "ledger"}); err != nil {
		t.Fatal(err)
	}
	tok, err := kr.Issue("web", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	route := names.InboundRoute("ledger", 7777)
	web := m.deltaAs(t, "web-1", "web", tok)
	web.subscribe(rds, route)
	if r := web.recv(); len(r.GetResources()) != 0 || !slices.Equal(r.GetRemovedResources(), []string{route}) {
		t.Fatalf("web subscribing to %s: sent %v removed %v; want it removed", route, resourceNames(r), r.GetRemovedResources())
	}
	web.nothingMore()
	if _, ok := m.cache.Version(cache.Item{TypeURL: rds, Name: route}); ok {
		t.Fatalf("%s was built for web", route)
	}
	tok, err = kr.Issue("ledger", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ledger := m.deltaAs(t, "ledger-1", "ledger", tok)
	ledger.subscribe(rds, route)
	if r := ledger.recv(); !slices.Equal(resourceNames(r), []string{route}) {
		t.Fatalf("ledger subscribing to %s: sent %v removed %v; want it", route, resourceNames(r), r.GetRemovedResources())
	}
}
