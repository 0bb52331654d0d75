package server_test

import (
	"context"
	"slices"
	"testing"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// TestOnDemandLifecycle walks the path an Envoy sidecar takes with on-demand
// CDS over delta ADS.
func TestOnDemandLifecycle(t *testing.T) {
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	c := m.delta(t, "orders-1")

	// An unknown name is answered at once as removed, not left to time out.
	c.subscribe(cds, "ghost.vip")
	r := c.recv()
	if len(r.GetResources()) != 0 || !slices.Equal(r.GetRemovedResources(), []string{"ghost.vip"}) {
		t.Fatalf("unknown name: resources %v removed %v; want removed [ghost.vip]", resourceNames(r), r.GetRemovedResources())
	}
	c.nothingMore() // the ACK must not trigger the same answer again

	// A registered VIP: Cluster first, then its endpoints on EDS.
	c.subscribe(cds, "payments.vip")
	r = c.recv()
	if got := resourceNames(r); !slices.Equal(got, []string{"payments.vip"}) || r.GetTypeUrl() != cds {
		t.Fatalf("subscribe payments.vip: got %s %v", r.GetTypeUrl(), got)
	}
	if cl := decodeCluster(t, r.GetResources()[0]); cl.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		t.Fatalf("cluster does not take its endpoints from ADS: %v", cl)
	}
	c.subscribe(eds, "payments.vip")
	r = c.recv()
	cla := decodeCLA(t, r.GetResources()[0])
	if n := len(cla.GetEndpoints()[0].GetLbEndpoints()); n != 1 {
		t.Fatalf("endpoints: got %d, want 1", n)
	}

	// The unknown name appears later: its subscriber receives it.
	m.register(t, "ghost", "g1", "10.0.0.9", registry.StatusUp)
	r = c.recv()
	if got := resourceNames(r); r.GetTypeUrl() != cds || !slices.Equal(got, []string{"ghost.vip"}) {
		t.Fatalf("late registration: got %s %v, want cluster ghost.vip", r.GetTypeUrl(), got)
	}

	// An instance change re-sends only the endpoints, not the cluster.
	m.register(t, "payments", "p2", "10.0.0.2", registry.StatusUp)
	r = c.recv()
	if r.GetTypeUrl() != eds || !slices.Equal(resourceNames(r), []string{"payments.vip"}) {
		t.Fatalf("instance change: got %s %v, want endpoints of payments.vip", r.GetTypeUrl(), resourceNames(r))
	}
	if n := len(decodeCLA(t, r.GetResources()[0]).GetEndpoints()[0].GetLbEndpoints()); n != 2 {
		t.Fatalf("after registering p2: %d endpoints, want 2", n)
	}
	c.nothingMore()

	// Unsubscribed: changes no longer reach this stream.
	c.send(deltaReq{typeURL: eds, drop: []string{"payments.vip"}})
	c.send(deltaReq{typeURL: cds, drop: []string{"payments.vip"}})
	c.barrier()
	m.register(t, "payments", "p3", "10.0.0.3", registry.StatusUp)
	c.nothingMore()
}

func TestNotServedNamesAreRemoved(t *testing.T) {
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	no := false
	if _, err := m.store.PutVIP(context.Background(), registry.VIP{Name: "vault", Policy: registry.Policy{Plaintext: &no}}); err != nil {
		t.Fatal(err)
	}
	c := m.delta(t, "orders-1")
	// Plaintext-forbidden VIPs have no .vip (their .svip is served); names
	// that are not clusters of a VIP do not exist.
	c.subscribe(cds, "payments.svip", "vault.vip", "vault.svip", "not-a-cluster", "UPPER.vip")
	r := c.recv()
	want := []string{"UPPER.vip", "not-a-cluster", "vault.vip"}
	if got := resourceNames(r); !slices.Equal(got, []string{"payments.svip", "vault.svip"}) || !slices.Equal(r.GetRemovedResources(), want) {
		t.Fatalf("got resources %v removed %v; want [payments.svip vault.svip] and removed %v", got, r.GetRemovedResources(), want)
	}
	if got := metricValue(t, m.reg, "xspace_discovery_lookups_total", "result", "not_found"); got != 3 {
		t.Fatalf("not_found lookups = %v, want 3", got)
	}
}
