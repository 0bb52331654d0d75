package ops

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/controlplane"
	"github.com/prisma-systems/xspace-mesh/controlplane/cptest"
	"github.com/prisma-systems/xspace-mesh/discovery"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
)

func newServer(t *testing.T, ready bool) (*httptest.Server, *embedded.Store, *discovery.Discovery) {
	t.Helper()
	srv, store, disc, _ := newServerWithXDS(t, ready)
	return srv, store, disc
}

// newServerWithXDS is newServer with the xDS server serving on loopback; it
// also returns a connection to it.
func newServerWithXDS(t *testing.T, ready bool) (*httptest.Server, *embedded.Store, *discovery.Discovery, *grpc.ClientConn) {
	t.Helper()
	reg := prometheus.NewRegistry()
	store, err := embedded.Open(t.TempDir(), embedded.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	cp := cptest.Start(t, controlplane.Options{Source: store, Registerer: reg})
	disc, xds, conn := cp.Discovery, cp.Server, cp.Conn
	h := Handler(Deps{
		Access: api.Access{Open: true},
		API:    api.NewHandler(store, nil), Gatherer: reg, Store: store, Proxies: xds, VIPs: disc,
		Config: map[string]string{"data_dir": "x"},
		Checks: map[string]func() Check{
			"registry": func() Check { return Check{OK: true, Detail: store.Health()} },
			"xds":      func() Check { return Check{OK: ready} },
		},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, store, disc, conn
}

func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadyz(t *testing.T) {
	for _, ready := range []bool{true, false} {
		srv, _, _ := newServer(t, ready)
		code, body := get(t, "GET", srv.URL+"/readyz")
		want := http.StatusOK
		if !ready {
			want = http.StatusServiceUnavailable
		}
		if code != want || !strings.Contains(body, `"self_preservation":false`) {
			t.Fatalf("ready=%v: %d %s", ready, code, body)
		}
	}
}

// TestDebugVIPsMergesRegistryAndDiscovery: /debug/vips lists registered
// and watched VIPs, and counts as one subscriber each client holding any
// of a VIP's names: a proxyless gRPC client holds four (listener, route,
// cluster, endpoints) and an Envoy sidecar two, on one stream each.
func TestDebugVIPsMergesRegistryAndDiscovery(t *testing.T) {
	srv, store, _, conn := newServerWithXDS(t, true)
	ctx := t.Context()
	for _, in := range []registry.Instance{
		{VIP: "payments", ID: "p1", Address: "10.0.0.1", Port: 80},
		{VIP: "payments", ID: "p2", Address: "10.0.0.2", Port: 80, Status: registry.StatusDown},
	} {
		if _, err := store.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	proxyless := openStream(t, conn, "orders-grpc")
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		proxyless.hold(t, typ, "payments.vip")
	}
	proxyless.hold(t, resource.ListenerType, "payments.vip", "payments")
	sidecar := openStream(t, conn, "orders-1")
	sidecar.hold(t, resource.ClusterType, "payments.vip", "ghost.vip")
	sidecar.hold(t, resource.EndpointType, "payments.vip")

	code, body := get(t, "GET", srv.URL+api.VIPStatsPath)
	var got api.VIPStatList
	if err := json.Unmarshal([]byte(body), &got); err != nil || code != 200 {
		t.Fatalf("%d %s %v", code, body, err)
	}
	want := []api.VIPStat{
		{Name: "ghost", Watched: true, Subscribers: 1},
		{Name: "payments", Instances: 2, Routable: 1, Subscribers: 2, Watched: true},
	}
	if len(got.VIPs) != 2 || got.VIPs[0] != want[0] || got.VIPs[1] != want[1] {
		t.Fatalf("debug vips = %+v, want %+v", got.VIPs, want)
	}
}

// sotwStream is a state-of-the-world ADS stream, as gRPC clients open.
type sotwStream struct {
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
}

func openStream(t *testing.T, conn *grpc.ClientConn, nodeID string) *sotwStream {
	t.Helper()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return &sotwStream{stream: stream, node: &corev3.Node{Id: nodeID, Cluster: "orders"}}
}

// hold subscribes to names of a type and waits for the answer, which comes
// once the server holds them.
func (s *sotwStream) hold(t *testing.T, typeURL string, names ...string) {
	t.Helper()
	req := &discoveryv3.DiscoveryRequest{Node: s.node, TypeUrl: typeURL, ResourceNames: names}
	s.node = nil
	if err := s.stream.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := s.stream.Recv()
	if err != nil || resp.GetTypeUrl() != typeURL {
		t.Fatalf("subscribe %s %v: %v, %v", typeURL, names, resp.GetTypeUrl(), err)
	}
	if err := s.stream.Send(&discoveryv3.DiscoveryRequest{
		TypeUrl: typeURL, ResourceNames: names, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
	}); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsAreJSON(t *testing.T) {
	srv, _, _ := newServer(t, true)
	tests := []struct {
		method, path string
		code         int
		errCode      string
	}{
		{"GET", "/nope", 404, api.CodeNotFound},
		{"POST", "/debug/vips", 405, api.CodeMethodNotAllowed},
		{"DELETE", "/readyz", 405, api.CodeMethodNotAllowed},
		{"GET", "/v1/vips/NOPE", 400, api.CodeInvalidArgument},
	}
	for _, tt := range tests {
		code, body := get(t, tt.method, srv.URL+tt.path)
		var e struct{ Error api.Error }
		if code != tt.code || json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != tt.errCode {
			t.Errorf("%s %s: %d %s; want %d with code %s", tt.method, tt.path, code, body, tt.code, tt.errCode)
		}
	}
	if code, body := get(t, "GET", srv.URL+"/metrics"); code != 200 || !strings.Contains(body, "xspace_registry_vips") {
		t.Fatalf("metrics: %d", code)
	}
	if code, body := get(t, "GET", srv.URL+api.ProxiesPath); code != 200 || !strings.Contains(body, `"proxies":[]`) {
		t.Fatalf("proxies: %d %s", code, body)
	}
}
