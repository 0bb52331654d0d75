package server_test

import (
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

// TestStandaloneDeltaCDS: the cluster discovery service (not ADS) serves on
// demand too; the type URL is implicit.
func TestStandaloneDeltaCDS(t *testing.T) {
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	stream, err := clusterservice.NewClusterDiscoveryServiceClient(m.conn).DeltaClusters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: &corev3.Node{Id: "n1", Cluster: "orders"}, ResourceNamesSubscribe: []string{"payments.vip", "ghost.vip"},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := resourceNames(r); !slices.Equal(got, []string{"payments.vip"}) || !slices.Equal(r.GetRemovedResources(), []string{"ghost.vip"}) {
		t.Fatalf("standalone CDS: resources %v removed %v", got, r.GetRemovedResources())
	}
}

// TestAdmissionHoldsStreamsBeyondTheBudget: with a budget of one stream,
// a second stream waits instead of being served, and leaves no state behind
// when its proxy goes away.
func TestAdmissionHoldsStreamsBeyondTheBudget(t *testing.T) {
	m := newMeshWith(t, func(o *server.Options) { o.AdmissionRate, o.AdmissionBurst = 1e-6, 1 })
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	first := m.delta(t, "n1")
	first.subscribe(cds, "payments.vip")
	if r := first.recv(); len(r.GetResources()) != 1 {
		t.Fatalf("first stream not served: %v", r)
	}
	second := m.delta(t, "n2")
	second.subscribe(cds, "payments.vip")
	await.True(t, "one stream waiting for admission", func() bool { return metricValue(t, m.reg, "xspace_xds_admission_waiting_streams") == 1 })
	srv := m.srv
	if n := len(srv.Proxies()); n != 1 {
		t.Fatalf("%d streams admitted, want 1", n)
	}
	second.cancel()
	for range second.resps { // drained until the stream ends
		t.Fatal("a stream waiting for admission was answered")
	}
	if n := len(srv.Proxies()); n != 1 {
		t.Fatalf("after the waiting stream left: %d streams admitted, want 1", n)
	}
}
