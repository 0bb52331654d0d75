package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/consul/consultest"
)

// TestTwoReplicasOnOneConsul runs two meshd processes on one Consul agent,
// writes through both, and checks that they serve identical resources with
// identical versions, so a proxy that reconnects to the other replica is
// not sent what it already has.
func TestTwoReplicasOnOneConsul(t *testing.T) {
	bin, err := consultest.Bin()
	if err != nil {
		t.Fatal(err)
	}
	if bin == "" {
		t.Skip(consultest.SkipMessage)
	}
	agent := consultest.Start(t, bin)
	meshdBin, _ := binaries(t)
	cfg := filepath.Join(t.TempDir(), "meshd.yaml")
	yml := fmt.Sprintf("registry:\n  type: consul\n  consul:\n    address: %s\n    kv_prefix: it/vips\n", agent.Addr)
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startMeshd(t, meshdBin, t.TempDir(), "--config", cfg)
	b := startMeshd(t, meshdBin, t.TempDir(), "--config", cfg)
	ctx := context.Background()
	ca, cb := api.NewClient(a.http, nil), api.NewClient(b.http, nil)

	if _, _, err := ca.PutVIP(ctx, registry.VIP{Name: "payments", Policy: registry.Policy{
		Protocol: registry.HTTP2, LoadBalancing: registry.LeastRequest,
	}}); err != nil {
		t.Fatal(err)
	}
	for i, c := range []*api.Client{ca, cb, ca} {
		id := fmt.Sprintf("p%d", i+1)
		reg := api.Registration{Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 8080, Zone: "z" + id, TTLSeconds: 3600}
		if _, err := c.Register(ctx, "payments", id, reg); err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	// Written through a, changed through b: both replicas share one registry.
	if _, err := cb.SetStatus(ctx, "payments", "p3", registry.StatusDraining); err != nil {
		t.Fatal(err)
	}

	ra, rb := resolve(t, a.xds, "payments.vip"), resolve(t, b.xds, "payments.vip")
	if !proto.Equal(ra.Cluster, rb.Cluster) || !proto.Equal(ra.Endpoints, rb.Endpoints) {
		t.Fatalf("replicas disagree:\n a: %v\n    %v\n b: %v\n    %v", ra.Cluster, ra.Endpoints, rb.Cluster, rb.Endpoints)
	}
	if n := len(ra.Endpoints.GetEndpoints()); n != 3 {
		t.Fatalf("endpoints in %d localities, want 3: %v", n, ra.Endpoints)
	}
	va, vb := versionsVia(t, a.xds), versionsVia(t, b.xds)
	if len(va) != 2 || fmt.Sprint(va) != fmt.Sprint(vb) {
		t.Fatalf("versions differ: a %v, b %v", va, vb)
	}
	for _, p := range []*process{a, b} {
		if ok, detail := readyz(t, p.http); !ok {
			t.Errorf("meshd at %s not ready on a reachable Consul: %s", p.http, detail)
		}
	}

	// Without Consul a replica is not ready, and says why; it is again
	// once Consul is back, without a restart.
	agent.Stop(t)
	waitReady(t, a.http, false, `"state":"degraded"`)
	agent.Restart(t)
	waitReady(t, a.http, true, `"state":"ok"`)
}

// waitReady waits until /readyz answers as wanted with a body containing detail.
func waitReady(t *testing.T, base string, want bool, detail string) {
	t.Helper()
	await.Within(t, 15*time.Second, fmt.Sprintf("/readyz ready %v with %s", want, detail), func() error {
		if ok, body := readyz(t, base); ok != want || !strings.Contains(body, detail) {
			return fmt.Errorf("ready %v with %s", ok, body)
		}
		return nil
	})
}

// versionsVia subscribes to payments.vip's Cluster and endpoints over delta
// ADS and returns the version of each, by type.
func versionsVia(t *testing.T, xdsAddr string) map[string]string {
	t.Helper()
	conn, ctx := xdsConn(t, xdsAddr)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	node := &corev3.Node{Id: "it-2", Cluster: "orders"}
	for _, typeURL := range []string{resource.ClusterType, resource.EndpointType} {
		req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNamesSubscribe: []string{"payments.vip"}}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		node = nil
		resp, err := stream.Recv()
		if err != nil || len(resp.GetResources()) != 1 {
			t.Fatalf("%s: %v, %v", typeURL, resp, err)
		}
		out[typeURL] = resp.GetResources()[0].GetVersion()
	}
	return out
}

// readyz returns whether /readyz answers 200, and its body.
func readyz(t *testing.T, base string) (bool, string) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK, string(b)
}
