package server_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

// TestDeltaAndSotwStreamsSideBySide: the delta and state-of-the-world
// servers number their streams independently; one closing must not touch
// the other's state.
func TestDeltaAndSotwStreamsSideBySide(t *testing.T) {
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	d := m.delta(t, "envoy-1")
	d.subscribe(cds, "payments.vip")
	d.recv()

	sotw, err := discoveryv3.NewAggregatedDiscoveryServiceClient(m.conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	err = sotw.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "grpc-1"}, TypeUrl: cds, ResourceNames: []string{"payments.vip"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sotw.Recv(); err != nil {
		t.Fatal(err)
	}
	if n := len(m.srv.Proxies()); n != 2 {
		t.Fatalf("%d proxies listed, want 2", n)
	}
	if err := sotw.CloseSend(); err != nil {
		t.Fatal(err)
	}
	await.True(t, "one proxy connected", func() bool { return len(m.srv.Proxies()) == 1 })
	if w := watched(m, "payments"); w == nil || w.References != 1 {
		t.Fatalf("after the sotw stream closed: %+v, want the delta stream's 1 subscriber", w)
	}
	// The delta stream lives on and keeps receiving changes.
	m.register(t, "payments", "p2", "10.0.0.2", registry.StatusUp)
	d.subscribe(eds, "payments.vip")
	if r := d.recv(); r.GetTypeUrl() != eds {
		t.Fatalf("delta stream after the sotw one closed: got %s", r.GetTypeUrl())
	}
}

// TestEnvoyWildcardFirstRequestIsAnswered: Envoy with a CDS config over ADS
// opens with an empty request and waits for an answer before it finishes
// initializing. It gets an empty one, never the world.
func TestEnvoyWildcardFirstRequestIsAnswered(t *testing.T) {
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	c := m.delta(t, "envoy-1")
	c.send(deltaReq{typeURL: cds})
	if r := c.recv(); len(r.GetResources()) != 0 {
		t.Fatalf("wildcard request was sent %v", resourceNames(r))
	}
	c.nothingMore()
	// On-demand subscriptions on the same stream still work.
	c.subscribe(cds, "payments.vip")
	if r := c.recv(); !slices.Equal(resourceNames(r), []string{"payments.vip"}) {
		t.Fatalf("on-demand after wildcard: %v", resourceNames(r))
	}
}

// TestAbsentNameAnsweredOnEverySubscription: every subscription to a missing name is answered, as
// Envoy's on-demand CDS asks again for each request that needs it.
func TestAbsentNameAnsweredOnEverySubscription(t *testing.T) {
	m := newMesh(t)
	c := m.delta(t, "envoy-1")
	for range 3 {
		c.barrier()
	}
}

// TestNACKIsLoggedWithItsDetail: the rejection and Envoy's reason appear in
// the log at error level.
func TestNACKIsLoggedWithItsDetail(t *testing.T) {
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	c := m.delta(t, "envoy-7")
	c.subscribe(eds, "payments.vip")
	r := <-c.resps
	c.send(deltaReq{typeURL: eds, nonce: r.GetNonce(), nack: "endpoint rejected: bad weight"})
	c.barrier()
	logs := m.logs.String()
	for _, want := range []string{"level=ERROR", "NACK", "node_id=envoy-7", "endpoint rejected: bad weight"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("log lacks %q:\n%s", want, logs)
		}
	}
}

// TestUnknownNamesAreBoundedPerStream: a stream that subscribes to more
// names that do not exist than MaxUnknownNames is not ended: the oldest of
// them are no longer tracked for it (released, so discovery forgets them),
// every name is still answered, and the names that exist keep their
// updates.
func TestUnknownNamesAreBoundedPerStream(t *testing.T) {
	m := newMeshWith(t, func(o *server.Options) { o.MaxUnknownNames = 3 })
	m.register(t, "a", "a1", "10.0.0.1", registry.StatusUp)
	c := m.delta(t, "typo-prone-1")
	c.subscribe(cds, "a.vip", "ghost-1.vip", "ghost-2.vip")
	c.recv()
	c.subscribe(eds, "a.vip")
	c.recv()
	for i := 3; i <= 6; i++ {
		name := fmt.Sprintf("ghost-%d.vip", i)
		c.subscribe(cds, name)
		if r := c.recv(); !slices.Equal(r.GetRemovedResources(), []string{name}) {
			t.Fatalf("%s: removed %v, want it answered as absent", name, r.GetRemovedResources())
		}
	}
	refs := map[string]int{}
	for _, v := range m.disc.Watched() {
		refs[v.Name] = v.References
	}
	want := map[string]int{"a": 2, "ghost-1": 0, "ghost-2": 0, "ghost-3": 0, "ghost-4": 1, "ghost-5": 1, "ghost-6": 1}
	if !maps.Equal(refs, want) {
		t.Fatalf("references per VIP = %v, want %v (the three newest unknown names and a)", refs, want)
	}
	if got := metricValue(t, m.reg, "xspace_xds_unknown_names_dropped_total", "type", "cds"); got != 3 {
		t.Fatalf("dropped = %v, want 3", got)
	}
	// The stream still receives changes of what exists.
	m.register(t, "a", "a2", "10.0.0.2", registry.StatusUp)
	if r := c.recv(); r.GetTypeUrl() != eds || !slices.Equal(resourceNames(r), []string{"a.vip"}) {
		t.Fatalf("after a change of a: %s %v, want its endpoints", r.GetTypeUrl(), resourceNames(r))
	}
}

// TestDroppedNameSubscribedAgainIsForgotten: a name the stream held, sent
// again in the request that makes the per-stream bound drop it (Envoy
// subscribes again to a name each time a request needs it), is forgotten
// all the way: its reference is given back, and when it appears later it
// is not pushed to the stream, as for every dropped name.
func TestDroppedNameSubscribedAgainIsForgotten(t *testing.T) {
	m := newMeshWith(t, func(o *server.Options) { o.MaxUnknownNames = 2 })
	m.register(t, "a", "a1", "10.0.0.1", registry.StatusUp)
	c := m.delta(t, "typo-prone-2")
	for _, name := range []string{"ghost-1.vip", "ghost-2.vip"} {
		c.subscribe(cds, name)
		c.recv()
	}
	c.subscribe(cds, "ghost-1.vip", "ghost-3.vip") // ghost-1 is the oldest
	if r := c.recv(); !slices.Equal(r.GetRemovedResources(), []string{"ghost-3.vip"}) || len(r.GetResources()) != 0 {
		t.Fatalf("got %v removed %v, want ghost-3.vip answered as absent", resourceNames(r), r.GetRemovedResources())
	}
	for _, v := range m.disc.Watched() {
		if v.Name == "ghost-1" && v.References != 0 {
			t.Fatalf("ghost-1 still has %d references", v.References)
		}
	}
	m.register(t, "ghost-1", "g1", "10.0.0.9", registry.StatusUp)
	m.sync(t)
	c.subscribe(cds, "a.vip")
	if r := c.recv(); !slices.Equal(resourceNames(r), []string{"a.vip"}) {
		t.Fatalf("after ghost-1 appeared, then a.vip was asked for: got %v, want a.vip alone", resourceNames(r))
	}
}

// TestClosedStreamsLeaveNoWatch: through go-control-plane's own delta
// server, streams that subscribe and unsubscribe names of every type, ask
// for what a wildcard means and have names dropped by the per-stream
// bound leave nothing in the cache's watch index once closed. The cache
// unindexes a closed stream's watch from its go-control-plane
// subscription (xds/cache/stream.go): a go-control-plane that made a new
// subscription, or a copy, would leave entries here.
func TestClosedStreamsLeaveNoWatch(t *testing.T) {
	m := newMeshWith(t, func(o *server.Options) { o.MaxUnknownNames = 2 })
	m.register(t, "a", "a1", "10.0.0.1", registry.StatusUp)
	m.register(t, "b", "b1", "10.0.0.2", registry.StatusUp)
	var clients []*deltaClient
	for i := range 3 {
		c := m.delta(t, fmt.Sprintf("sidecar-%d", i))
		sidecarNode(c, map[string]any{names.NodeOutboundPortKey: 15001})
		clients = append(clients, c)
		c.subscribe(lds, "*")
		c.recv()
		c.subscribe(cds, "a.vip", "b.vip", "ghost-1.vip")
		c.recv()
		c.subscribe(eds, "a.vip", "b.vip")
		c.recv()
		c.send(deltaReq{typeURL: cds, drop: []string{"b.vip", "never.vip"}})
		c.send(deltaReq{typeURL: eds, drop: []string{"b.vip"}})
		c.subscribe(cds, "ghost-1.vip", "ghost-2.vip", "ghost-3.vip") // drops ghost-1
		c.recv()
		c.send(deltaReq{typeURL: lds, drop: []string{"*"}})
	}
	clients[0].cancel()
	clients[1].cancel()
	await.True(t, "two of three streams closed", func() bool { return len(m.srv.Proxies()) == 1 })
	for _, typ := range []string{lds, cds, eds} {
		if m.cache.Indexed(typ) == 0 {
			t.Fatalf("%s: nothing indexed while a stream holds names of it", typ)
		}
	}
	clients[2].cancel()
	// A stream leaves /debug/proxies before the cache forgets its watches:
	// wait for the index itself. A watch left behind keeps it from emptying.
	await.True(t, "no name of any type indexed once every stream closed", func() bool {
		for _, typ := range []string{lds, rds, cds, eds, sds} {
			if m.cache.Indexed(typ) != 0 {
				return false
			}
		}
		return true
	})
}

// TestAppearedNameIsNotDroppedAsUnknown: a name that did not exist when
// subscribed but exists now is not what the per-stream bound drops.
func TestAppearedNameIsNotDroppedAsUnknown(t *testing.T) {
	m := newMeshWith(t, func(o *server.Options) { o.MaxUnknownNames = 1 })
	c := m.delta(t, "patient-1")
	c.subscribe(cds, "late.vip")
	c.recv()
	m.register(t, "late", "l1", "10.0.0.1", registry.StatusUp)
	if r := c.recv(); !slices.Equal(resourceNames(r), []string{"late.vip"}) {
		t.Fatalf("late.vip appeared, got %v", resourceNames(r))
	}
	c.subscribe(eds, "late.vip")
	c.recv()
	c.subscribe(cds, "ghost.vip")
	c.recv()
	if got := metricValue(t, m.reg, "xspace_xds_unknown_names_dropped_total", "type", "cds"); got != 0 {
		t.Fatalf("dropped = %v, want 0: late.vip exists now", got)
	}
	m.register(t, "late", "l2", "10.0.0.2", registry.StatusUp)
	if r := c.recv(); r.GetTypeUrl() != eds || !slices.Equal(resourceNames(r), []string{"late.vip"}) {
		t.Fatalf("late.vip changed: %s %v, want its endpoints", r.GetTypeUrl(), resourceNames(r))
	}
}
