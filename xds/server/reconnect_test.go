package server_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
)

// TestReconnectResubscribes: a proxy that reconnects sends every cluster it
// holds with initial_resource_versions. All of them resolve; unchanged ones
// are not sent again, changed ones are, and vanished ones are removed.
func TestReconnectResubscribes(t *testing.T) {
	m := newMesh(t)
	for _, v := range []string{"a", "b", "c"} {
		m.register(t, v, v+"1", "10.0.0.1", registry.StatusUp)
	}
	c := m.delta(t, "orders-1")
	c.subscribe(cds, "a.vip", "b.vip", "c.vip")
	held := versions(c.recv())
	c.subscribe(eds, "a.vip", "b.vip", "c.vip")
	heldEDS := versions(c.recv())
	if len(held) != 3 || len(heldEDS) != 3 {
		t.Fatalf("first connection got %v and %v, want 3 clusters and 3 endpoints", held, heldEDS)
	}
	c.cancel()

	// While the proxy is away, b's policy changes and c disappears.
	if _, err := m.store.PutVIP(context.Background(), registry.VIP{Name: "b", Policy: registry.Policy{Protocol: registry.HTTP2}}); err != nil {
		t.Fatal(err)
	}
	if err := m.store.Deregister(context.Background(), "c", "c1"); err != nil {
		t.Fatal(err)
	}
	if err := m.store.DeleteVIP(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	m.sync(t) // the reconnect is answered from what discovery published

	c2 := m.delta(t, "orders-1")
	c2.send(deltaReq{typeURL: cds, subscribe: slices.Sorted(maps.Keys(held)), initial: held})
	r := c2.recv()
	if got := resourceNames(r); !slices.Equal(got, []string{"b.vip"}) {
		t.Fatalf("reconnect sent %v, want only the changed b.vip", got)
	}
	if !slices.Equal(r.GetRemovedResources(), []string{"c.vip"}) {
		t.Fatalf("reconnect removed %v, want [c.vip]", r.GetRemovedResources())
	}
	// Envoy warms the changed b.vip until it receives b's endpoints again,
	// so they are sent even though no instance of b changed.
	c2.send(deltaReq{typeURL: eds, subscribe: slices.Sorted(maps.Keys(heldEDS)), initial: heldEDS})
	r = c2.recv()
	if got := resourceNames(r); !slices.Equal(got, []string{"b.vip"}) || !slices.Equal(r.GetRemovedResources(), []string{"c.vip"}) {
		t.Fatalf("reconnect EDS: resources %v removed %v; want [b.vip] and [c.vip]", got, r.GetRemovedResources())
	}
	c2.nothingMore()
	// a.vip is held again: its changes reach the new stream.
	m.register(t, "a", "a2", "10.0.0.2", registry.StatusUp)
	if r := c2.recv(); r.GetTypeUrl() != eds || !slices.Equal(resourceNames(r), []string{"a.vip"}) {
		t.Fatalf("after reconnect: got %s %v", r.GetTypeUrl(), resourceNames(r))
	}
}

// TestNACK: a rejected response is logged and counted, and not sent again
// in a loop; the next change is sent.
func TestNACK(t *testing.T) {
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	c := m.delta(t, "orders-1")
	c.subscribe(eds, "payments.vip")
	r := <-c.resps
	c.send(deltaReq{typeURL: eds, nonce: r.GetNonce(), nack: "endpoint rejected: test"})
	c.nothingMore()
	if got := metricValue(t, m.reg, "xspace_xds_nacks_total", "type", "eds"); got != 1 {
		t.Fatalf("nacks = %v, want 1", got)
	}
	m.register(t, "payments", "p2", "10.0.0.2", registry.StatusUp)
	if r := c.recv(); len(r.GetResources()) != 1 {
		t.Fatalf("after NACK, the next change was not sent: %v", r)
	}
}

// TestStreamCloseReleasesAndGraceForgets: references follow streams, and a
// VIP no stream holds is forgotten after the grace period.
func TestStreamCloseReleasesAndGraceForgets(t *testing.T) {
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	c := m.delta(t, "orders-1")
	c.subscribe(cds, "payments.vip")
	c.recv()
	c.subscribe(eds, "payments.vip")
	c.recv()
	if w := watched(m, "payments"); w == nil || w.References != 2 {
		t.Fatalf("watched payments = %+v, want 2 subscribers (CDS and EDS)", w)
	}
	if got := m.srv.Proxies(); len(got) != 1 || got[0].NodeID != "orders-1" || got[0].Service != "orders" ||
		!slices.Equal(got[0].Clusters, []string{"payments.vip"}) {
		t.Fatalf("proxies = %+v", got)
	}
	c.cancel()
	await.True(t, "payments held by no stream", func() bool { w := watched(m, "payments"); return w != nil && w.References == 0 })
	if len(m.srv.Proxies()) != 0 {
		t.Fatalf("closed stream still listed: %+v", m.srv.Proxies())
	}
	// Within the grace period the VIP stays; after it, it goes.
	m.disc.ForgetIdle()
	if watched(m, "payments") == nil {
		t.Fatal("VIP forgotten before its grace period")
	}
	m.skew.Store(int64(6 * time.Minute))
	m.disc.ForgetIdle()
	if watched(m, "payments") != nil {
		t.Fatal("VIP still watched after the grace period")
	}
	if _, ok := m.cache.Version(cache.Item{TypeURL: cds, Name: "payments.vip"}); ok {
		t.Fatal("forgotten VIP's cluster still cached")
	}
}

// TestStateOfTheWorld: proxyless gRPC clients and Envoy without delta get
// full-state answers for the names they ask for.
func TestStateOfTheWorld(t *testing.T) {
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(m.conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	send := func(version, nonce string, names ...string) {
		err := stream.Send(&discoveryv3.DiscoveryRequest{
			Node: &corev3.Node{Id: "grpc-1", Cluster: "orders"}, TypeUrl: cds,
			ResourceNames: names, VersionInfo: version, ResponseNonce: nonce,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	send("", "", "payments.vip", "ghost.vip")
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetResources()) != 1 || r.GetVersionInfo() == "" {
		t.Fatalf("sotw response: %d resources, version %q; want payments.vip only", len(r.GetResources()), r.GetVersionInfo())
	}
	send(r.GetVersionInfo(), r.GetNonce(), "payments.vip", "ghost.vip")
	m.register(t, "ghost", "g1", "10.0.0.9", registry.StatusUp)
	r, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetResources()) != 2 {
		t.Fatalf("after ghost appeared: %d resources, want 2", len(r.GetResources()))
	}
}

func watched(m *mesh, name string) *struct{ References int } {
	for _, w := range m.disc.Watched() {
		if w.Name == name {
			return &struct{ References int }{w.References}
		}
	}
	return nil
}
