package server_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

const (
	lds = resource.ListenerType
	rds = resource.RouteType
)

// sidecarNode gives a delta client the node metadata meshctl bootstrap writes.
func sidecarNode(c *deltaClient, fields map[string]any) {
	md, err := structpb.NewStruct(fields)
	if err != nil {
		c.tb.Fatal(err)
	}
	c.node.Metadata = md
}

// recvTypes receives until one response of each type arrived, and returns
// the last of each.
func (c *deltaClient) recvTypes(typeURLs ...string) map[string]*discoveryv3.DeltaDiscoveryResponse {
	c.tb.Helper()
	got := map[string]*discoveryv3.DeltaDiscoveryResponse{}
	for len(got) < len(typeURLs) {
		r := c.recv()
		if !slices.Contains(typeURLs, r.GetTypeUrl()) {
			c.tb.Fatalf("unexpected %s response: %v removed %v", r.GetTypeUrl(), resourceNames(r), r.GetRemovedResources())
		}
		got[r.GetTypeUrl()] = r
	}
	return got
}

// TestEnvoySidecar follows what an Envoy sidecar with meshctl's bootstrap
// does on its ADS stream: wildcard listeners (its own, from its node
// metadata), the outbound route configuration those listeners name, then
// VIPs on demand (its bootstrap has no cds_config: its application's
// cluster is static). A VIP with its own retry policy gets its own route
// in every sidecar's outbound routes.
func TestEnvoySidecar(t *testing.T) {
	kr := testKeyring(t, time.Now())
	m := newMeshWith(t, func(o *server.Options) { o.Authenticator = kr })
	tok, err := kr.Issue("orders", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := m.deltaAs(t, "orders-1", "orders", tok)
	sidecarNode(c, map[string]any{
		names.NodeOutboundPortKey: 15001, names.NodeInboundPortKey: "8443", names.NodeAppPortKey: 8080,
	})

	// Envoy's first listener request names nothing: wildcard.
	c.subscribe(lds)
	r := c.recv()
	if got := resourceNames(r); !slices.Equal(got, []string{"xspace-inbound-8443-to-8080", "xspace-outbound-15001"}) {
		t.Fatalf("wildcard listeners = %v; want the sidecar's inbound and outbound listeners", got)
	}
	var out listenerv3.Listener
	if err := r.GetResources()[1].GetResource().UnmarshalTo(&out); err != nil {
		t.Fatal(err)
	}
	var hcm hcmv3.HttpConnectionManager
	if err := out.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	if out.GetAddress().GetSocketAddress().GetPortValue() != 15001 || hcm.GetRds().GetRouteConfigName() != names.OutboundRoute {
		t.Fatalf("outbound listener on %v routes by %q", out.GetAddress(), hcm.GetRds().GetRouteConfigName())
	}
	c.subscribe(rds, names.OutboundRoute)
	if routes := outboundRoutes(t, c.recv()); len(routes) != 1 || routes[0].GetMatch().GetHeaders() != nil {
		t.Fatalf("outbound routes with no VIP watched = %v; want the default route only", routes)
	}

	// A VIP at the defaults adds no route; one with its own retries does.
	ctx := context.Background()
	m.register(t, "catalog", "catalog-1", "10.0.0.1", registry.StatusUp)
	c.subscribe(cds, "catalog.vip")
	if got := resourceNames(c.recv()); !slices.Equal(got, []string{"catalog.vip"}) {
		t.Fatalf("on-demand cluster = %v", got)
	}
	c.nothingMore()
	if _, err := m.store.PutVIP(ctx, registry.VIP{Name: "payments", Policy: registry.Policy{
		Retries: registry.Retries{Attempts: 4, On: []string{"5xx"}},
	}}); err != nil {
		t.Fatal(err)
	}
	m.register(t, "payments", "payments-1", "10.0.0.2", registry.StatusUp)
	c.subscribe(cds, "payments.vip")
	got := c.recvTypes(cds, rds)
	routes := outboundRoutes(t, got[rds])
	if len(routes) != 2 || routes[0].GetMatch().GetHeaders()[0].GetStringMatch().GetExact() != "payments" ||
		routes[0].GetRoute().GetRetryPolicy().GetNumRetries().GetValue() != 4 || routes[0].GetRoute().GetRetryPolicy().GetRetryOn() != "5xx" {
		t.Fatalf("outbound routes after payments was resolved = %v; want payments' own route first", routes)
	}
	if routes[1].GetRoute().GetRetryPolicy().GetNumRetries().GetValue() != registry.DefaultRetryAttempts {
		t.Fatalf("default route = %v; want the platform defaults", routes[1])
	}

	// Its policy going back to the defaults takes the route away.
	if _, err := m.store.PutVIP(ctx, registry.VIP{Name: "payments"}); err != nil {
		t.Fatal(err)
	}
	for {
		r := c.recv()
		if r.GetTypeUrl() == rds {
			if routes := outboundRoutes(t, r); len(routes) != 1 {
				t.Fatalf("outbound routes after payments' policy was reset = %v; want the default only", routes)
			}
			break
		}
	}
}

func outboundRoutes(t *testing.T, r *discoveryv3.DeltaDiscoveryResponse) []*routev3.Route {
	t.Helper()
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != names.OutboundRoute {
		t.Fatalf("route response %v; want %s", resourceNames(r), names.OutboundRoute)
	}
	var rc routev3.RouteConfiguration
	if err := r.GetResources()[0].GetResource().UnmarshalTo(&rc); err != nil {
		t.Fatal(err)
	}
	return rc.GetVirtualHosts()[0].GetRoutes()
}

// TestSidecarNodeMetadataIsChecked: a stream whose sidecar metadata is
// malformed is refused, with the key and the fix in the message.
func TestSidecarNodeMetadataIsChecked(t *testing.T) {
	m := newMesh(t)
	for _, tc := range []struct {
		fields map[string]any
		want   string
	}{
		{map[string]any{names.NodeOutboundPortKey: 70000}, names.NodeOutboundPortKey + ": 70000 is not a port"},
		{map[string]any{names.NodeOutboundPortKey: "http"}, `"http" is not a port number`},
		{map[string]any{names.NodeOutboundPortKey: 15001, names.NodeInboundPortKey: 8443}, "an inbound port needs the app port"},
		{map[string]any{names.NodeInboundPortKey: 8443, names.NodeAppPortKey: 8080}, "the outbound port is missing"},
		// An unauthenticated stream gets no identity for the inbound listener.
		{map[string]any{names.NodeOutboundPortKey: 15001, names.NodeInboundPortKey: 8443, names.NodeAppPortKey: 8080}, "needs an authenticated stream"},
	} {
		c := m.delta(t, "bad-1")
		sidecarNode(c, tc.fields)
		err := streamError(t, c)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("metadata %v: %v; want InvalidArgument saying %q", tc.fields, err, tc.want)
		}
	}
}

// TestSidecarReconnectKeepsListeners: a sidecar reconnecting with the
// versions of the listeners it holds is sent none of them again (one empty
// first answer, which a wildcard waits for), and the route configuration
// it holds is not re-sent either (no answer at all).
func TestSidecarReconnectKeepsListeners(t *testing.T) {
	kr := testKeyring(t, time.Now())
	m := newMeshWith(t, func(o *server.Options) { o.Authenticator = kr })
	tok, err := kr.Issue("orders", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]any{names.NodeOutboundPortKey: 15001, names.NodeInboundPortKey: 8443, names.NodeAppPortKey: 8080}
	c := m.deltaAs(t, "orders-1", "orders", tok)
	sidecarNode(c, meta)
	c.subscribe(lds)
	listeners := versions(c.recv())
	c.subscribe(rds, names.OutboundRoute)
	routes := versions(c.recv())
	if len(listeners) != 2 || len(routes) != 1 {
		t.Fatalf("first connection got listeners %v routes %v", listeners, routes)
	}
	c.cancel()

	c2 := m.deltaAs(t, "orders-1", "orders", tok)
	sidecarNode(c2, meta)
	for _, held := range []struct {
		typeURL   string
		subscribe []string
		initial   map[string]string
	}{{lds, nil, listeners}} {
		c2.send(deltaReq{typeURL: held.typeURL, subscribe: held.subscribe, initial: held.initial})
		r := c2.recv()
		if len(r.GetResources()) != 0 || len(r.GetRemovedResources()) != 0 {
			t.Fatalf("reconnect %s: sent %v removed %v; want nothing it already has", held.typeURL, resourceNames(r), r.GetRemovedResources())
		}
	}
	c2.send(deltaReq{typeURL: rds, subscribe: []string{names.OutboundRoute}, initial: routes})
	c2.nothingMore()
}
