package sidecar

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	ondemandv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/on_demand/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
)

func node(t *testing.T, fields map[string]any) *corev3.Node {
	t.Helper()
	md, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Node{Id: "n", Metadata: md}
}

func TestFromNode(t *testing.T) {
	for _, tc := range []struct {
		fields map[string]any
		want   Ports
		err    string
	}{
		{nil, Ports{}, ""},
		{map[string]any{names.NodeOutboundPortKey: 15001}, Ports{Outbound: 15001}, ""},
		{map[string]any{names.NodeOutboundPortKey: "15001", names.NodeInboundPortKey: 8443.0, names.NodeAppPortKey: "8080", names.NodeServiceKey: "api"}, Ports{15001, 8443, 8080}, ""},
		{map[string]any{names.NodeOutboundPortKey: 15001, names.NodeInboundPortKey: 8443, names.NodeAppPortKey: 8080}, Ports{}, "needs an authenticated stream"},
		{map[string]any{names.NodeOutboundPortKey: 8080.5}, Ports{}, "8080.5 is not a port"},
		{map[string]any{names.NodeOutboundPortKey: 0}, Ports{}, "0 is not a port"},
		{map[string]any{names.NodeOutboundPortKey: true}, Ports{}, "want a port number"},
		{map[string]any{names.NodeOutboundPortKey: "-1"}, Ports{}, "not a port number"},
		{map[string]any{names.NodeOutboundPortKey: 15001, names.NodeInboundPortKey: 15001, names.NodeAppPortKey: 8080}, Ports{}, "use distinct ports"},
		{map[string]any{names.NodeAppPortKey: 8080}, Ports{}, "is missing"},
	} {
		got, err := FromNode(node(t, tc.fields))
		if tc.err == "" && (err != nil || got != tc.want) {
			t.Errorf("FromNode(%v) = %+v, %v; want %+v", tc.fields, got, err, tc.want)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("FromNode(%v) error %v; want one saying %q", tc.fields, err, tc.err)
		}
	}
}

// TestPrepare: a sidecar's listeners are published once per port layout
// and service, the inbound one in its service's scope, naming its
// service's inbound route; the wildcard names match what was published,
// and its application's cluster is not among them (it is in the sidecar's
// bootstrap).
func TestPrepare(t *testing.T) {
	service := func(n *corev3.Node) string { return n.GetMetadata().GetFields()[names.NodeServiceKey].GetStringValue() }
	c := cache.New([]string{resource.ListenerType, resource.ClusterType}, cache.WithScope(resource.ListenerType, service))
	counting := &countingPublisher{c: c}
	s := New(counting, 7*time.Second)
	n := node(t, map[string]any{names.NodeOutboundPortKey: 15001, names.NodeInboundPortKey: 8443, names.NodeAppPortKey: 8080, names.NodeServiceKey: "api"})
	for range 3 {
		if err := s.Prepare(n); err != nil {
			t.Fatal(err)
		}
	}
	if counting.updates != 2 {
		t.Fatalf("%d updates for one layout prepared three times; want 2 (two listeners), once", counting.updates)
	}
	got, want := Listeners(n), []string{"xspace-outbound-15001", "xspace-inbound-8443-to-8080"}
	if !slices.Equal(got, want) {
		t.Errorf("wildcard listeners = %v; want %v", got, want)
	}
	if _, ok := c.Version(cache.Item{TypeURL: resource.ListenerType, Name: got[0]}); !ok {
		t.Errorf("listener %s is not published for every sidecar", got[0])
	}
	// Another service with the same layout gets its own inbound listener,
	// under the same name.
	web := node(t, map[string]any{names.NodeOutboundPortKey: 15001, names.NodeInboundPortKey: 8443, names.NodeAppPortKey: 8080, names.NodeServiceKey: "web"})
	if err := s.Prepare(web); err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{"api", "web"} {
		if _, ok := c.Version(cache.Item{TypeURL: resource.ListenerType, Name: got[1], Scope: svc}); !ok {
			t.Errorf("listener %s is not published for %s", got[1], svc)
		}
		if rds := counting.inboundRoute(t, svc); rds != names.InboundRoute(svc, 8080) {
			t.Errorf("%s's inbound listener takes route %q, want %q", svc, rds, names.InboundRoute(svc, 8080))
		}
	}
	if _, ok := c.Version(cache.Item{TypeURL: resource.ListenerType, Name: got[1]}); ok {
		t.Errorf("inbound listener %s is published for every service", got[1])
	}
	if _, ok := c.Version(cache.Item{TypeURL: resource.ClusterType, Name: names.LocalAppCluster(8080)}); ok {
		t.Error("the application's cluster was published; it belongs in the bootstrap")
	}
	if got := counting.odcdsTimeout(t); got != 7*time.Second {
		t.Errorf("outbound listener's on-demand timeout = %s, want the 7s given", got)
	}
	if got := Listeners(node(t, nil)); got != nil {
		t.Errorf("a node that is no sidecar has wildcard listeners %v", got)
	}
	if err := s.Prepare(node(t, map[string]any{names.NodeOutboundPortKey: "x"})); err == nil {
		t.Error("Prepare accepted a malformed port")
	}
	// Layouts beyond MaxLayouts are refused, not kept.
	for port := range MaxLayouts + 1 {
		err := s.Prepare(node(t, map[string]any{names.NodeOutboundPortKey: 20000 + port}))
		if port < MaxLayouts-1 && err != nil {
			t.Fatalf("layout %d: %v", port, err)
		}
		if port == MaxLayouts && (err == nil || !strings.Contains(err.Error(), "distinct port layouts")) {
			t.Fatalf("layout %d beyond the limit: %v; want it refused", port, err)
		}
	}
}

type countingPublisher struct {
	c         *cache.Cache
	updates   int
	published []cache.Item
}

// odcdsTimeout reads the on-demand timeout of the outbound listener on
// port 15001 it published.
func (p *countingPublisher) odcdsTimeout(t *testing.T) time.Duration {
	t.Helper()
	for _, it := range p.published {
		l, ok := it.Msg.(*listenerv3.Listener)
		if !ok || it.Name != names.OutboundListener(15001) {
			continue
		}
		var hcm hcmv3.HttpConnectionManager
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		for _, f := range hcm.GetHttpFilters() {
			var od ondemandv3.OnDemand
			if f.GetTypedConfig().UnmarshalTo(&od) == nil {
				return od.GetOdcds().GetTimeout().AsDuration()
			}
		}
	}
	t.Fatal("no outbound listener with an on-demand filter was published")
	return 0
}

// inboundRoute reads the route configuration name of the inbound
// listener it published for a service.
func (p *countingPublisher) inboundRoute(t *testing.T, service string) string {
	t.Helper()
	for _, it := range p.published {
		l, ok := it.Msg.(*listenerv3.Listener)
		if !ok || it.Scope != service {
			continue
		}
		var hcm hcmv3.HttpConnectionManager
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		return hcm.GetRds().GetRouteConfigName()
	}
	t.Fatalf("no inbound listener was published for %s", service)
	return ""
}

func (p *countingPublisher) Update(items ...cache.Item) error {
	p.updates++
	p.published = append(p.published, items...)
	return p.c.Update(items...)
}
