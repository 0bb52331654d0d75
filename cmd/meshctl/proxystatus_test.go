package main

import (
	"encoding/json"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/internal/await"
)

// TestProxyStatus: a proxy that rejects the cluster meshd sent shows as
// NACKED for cds in meshctl proxy-status, and its own error text in
// proxy-status PROXY and -o json; no proxy connected says so.
func TestProxyStatus(t *testing.T) {
	p := startMeshd(t, "")
	if out := p.mustMeshctl(t, "proxy-status"); !strings.Contains(out, "No proxies found") {
		t.Errorf("no proxy: %q", out)
	}
	p.mustMeshctl(t, "instance", "register", "payments", "--id", "p1", "--address", "10.0.0.1", "--port", "8080")

	conn, err := grpc.NewClient(p.xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: &corev3.Node{Id: "orders-1", Cluster: "orders"}, TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"payments.vip"},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &statuspb.Status{Message: "cluster payments.vip: unsupported lb_policy"},
	}); err != nil {
		t.Fatal(err)
	}

	await.True(t, "proxy-status shows the NACK", func() bool {
		return strings.Contains(p.mustMeshctl(t, "proxy-status"), "orders-1  orders   delta     NACKED  -")
	})
	out := p.mustMeshctl(t, "proxy-status", "orders-1")
	if !strings.Contains(out, "cds   NACKED") || !strings.Contains(out, "cluster payments.vip: unsupported lb_policy") {
		t.Errorf("proxy-status orders-1:\n%s", out)
	}
	var proxies []api.ProxyInfo
	if err := json.Unmarshal([]byte(p.mustMeshctl(t, "proxy-status", "orders-1", "-o", "json")), &proxies); err != nil {
		t.Fatal(err)
	}
	if len(proxies) != 1 || len(proxies[0].Types) != 1 || proxies[0].Types[0].LastNACK == nil ||
		proxies[0].Types[0].LastNACK.Nonce != resp.GetNonce() || proxies[0].Types[0].SentNonce != resp.GetNonce() {
		t.Errorf("proxy-status -o json: %+v", proxies)
	}
	code, _, stderr := p.meshctl(t, "proxy-status", "ghost-1")
	if code != exitFailure || !strings.Contains(stderr, `no proxy "ghost-1" is connected`) {
		t.Errorf("unknown proxy: exit %d, stderr %q", code, stderr)
	}
}
