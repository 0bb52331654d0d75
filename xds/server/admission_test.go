package server

import (
	"context"
	"net"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/prisma-systems/xspace-mesh/discovery"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
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
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	c := cache.New(Types...)
	disc := discovery.New(m.store, c, discovery.Options{})
	srv := New(ctx, c, disc, Options{AdmissionRate: 1e-6, AdmissionBurst: 1})
	g := grpc.NewServer()
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	limited := &mesh{conn: conn}

	first := limited.delta(t, "n1")
	first.subscribe(cds, "payments.vip")
	if r := first.recv(); len(r.GetResources()) != 1 {
		t.Fatalf("first stream not served: %v", r)
	}
	second := limited.delta(t, "n2")
	second.subscribe(cds, "payments.vip")
	second.quiet() // waiting for admission, not answered
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
