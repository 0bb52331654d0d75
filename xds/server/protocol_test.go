package server

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prisma-systems/xspace-mesh/registry"
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
	waitFor(t, func() bool { return len(m.srv.Proxies()) == 1 })
	if w := watched(m, "payments"); w == nil || w.Subscribers != 1 {
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
	c.quiet()
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

// TestHeldNamesAreBounded: a stream asking to hold more names of a type
// than MaxNamesPerType is ended with ResourceExhausted, and what it held
// before is released, not leaked.
func TestHeldNamesAreBounded(t *testing.T) {
	m := newMeshWith(t, func(o *Options) { o.MaxNamesPerType = 3 })
	m.register(t, "a", "a1", "10.0.0.1", registry.StatusUp)
	c := m.delta(t, "greedy-1")
	c.subscribe(cds, "a.vip", "b.vip")
	c.recv()
	c.subscribe(cds, "c.vip", "d.vip")
	if err := streamError(t, c); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "more than the 3 allowed") {
		t.Fatalf("over the limit: %v; want ResourceExhausted naming the limit", err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		held := 0
		for _, v := range m.disc.Watched() {
			held += v.Subscribers
		}
		if held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions still held 5s after the stream ended", held)
		}
	}
}
