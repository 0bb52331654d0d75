package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/prisma-systems/xspace-mesh/controlplane"
	"github.com/prisma-systems/xspace-mesh/controlplane/cptest"
	"github.com/prisma-systems/xspace-mesh/discovery"
	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/internal/promtest"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

// mesh is a real control plane on loopback: embedded registry, discovery,
// cache and xDS server, with a gRPC connection to it.
type mesh struct {
	store *embedded.Store
	disc  *discovery.Discovery
	cache *cache.Cache
	srv   *server.Server
	reg   *prometheus.Registry
	conn  *grpc.ClientConn
	addr  string
	// skew moves discovery's clock forward, for grace-period tests.
	skew *atomic.Int64
	// logs holds what the xDS server logged.
	logs *syncBuffer
	// edit adjusts the server's options; certs, when set, are where
	// identities come from; stop stops the control plane.
	edit  func(*server.Options)
	certs discovery.Certificates
	stop  func()
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (m *mesh) now() time.Time { return time.Now().Add(time.Duration(m.skew.Load())) }

func newMesh(tb testing.TB) *mesh { return newMeshWith(tb, nil) }

// newMeshWith is newMesh with server options adjusted by edit.
func newMeshWith(tb testing.TB, edit func(*server.Options)) *mesh {
	return newMeshCerts(tb, edit, nil)
}

// newMeshCerts is newMeshWith whose identities come from certs.
func newMeshCerts(tb testing.TB, edit func(*server.Options), certs discovery.Certificates) *mesh {
	tb.Helper()
	reg := prometheus.NewRegistry()
	store, err := embedded.Open(tb.TempDir(), embedded.Options{Registerer: reg})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = store.Close() })
	m := &mesh{store: store, skew: new(atomic.Int64), logs: &syncBuffer{}, edit: edit, certs: certs}
	m.serve(tb, reg)
	return m
}

// serve starts a control plane, as meshd assembles it (controlplane.New),
// on m's store with its metrics on reg, serving on a new loopback port, and
// connects to it.
func (m *mesh) serve(tb testing.TB, reg *prometheus.Registry) {
	tb.Helper()
	// Admission is wide open: tests and benchmarks open many streams from
	// one address; the tests of admission set what they test.
	opts := server.Options{AdmissionRate: 1e6, AdmissionBurst: 1e6, MaxStreamsPerPeer: 1 << 20}
	if m.edit != nil {
		m.edit(&opts)
	}
	r := cptest.Start(tb, controlplane.Options{
		Source: m.store, Certificates: m.certs, Registerer: reg,
		Logger:    slog.New(slog.NewTextHandler(m.logs, nil)),
		Discovery: discovery.Options{Now: m.now},
		Server:    opts,
	})
	m.stop = r.Stop
	m.disc, m.cache, m.srv, m.reg, m.conn, m.addr = r.Discovery, r.Cache, r.Server, reg, r.Conn, r.Addr
}

// restart stops the control plane, as a meshd that goes away, and starts a
// new one on the same registry, on another port, with a metrics registry of
// its own: a restarted meshd with nothing resolved.
func (m *mesh) restart(tb testing.TB) {
	tb.Helper()
	m.stop()
	m.serve(tb, prometheus.NewRegistry())
}

// sync returns once discovery has published every registry change made so
// far (discovery.Discovery.Sync).
func (m *mesh) sync(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), await.Timeout)
	defer cancel()
	if err := m.disc.Sync(ctx); err != nil {
		tb.Fatal(err)
	}
}

// register registers instance id of vip at addr. Its lease is the longest
// there is: no test here heartbeats, and one under the race detector on a
// loaded machine may outlast the default 30 s lease. The first instances
// to lapse would then expire before self-preservation engages, changing
// the endpoints the test checks.
func (m *mesh) register(tb testing.TB, vip, id, addr string, status registry.Status) {
	tb.Helper()
	_, err := m.store.Register(context.Background(), registry.Instance{
		VIP: vip, ID: id, Address: addr, Port: 8080, Status: status, Zone: "zone-a", TTL: registry.MaxTTL,
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// deltaClient behaves like Envoy's on-demand CDS over delta ADS.
type deltaClient struct {
	tb     testing.TB
	m      *mesh
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	resps  chan *discoveryv3.DeltaDiscoveryResponse
	node   *corev3.Node
	sent   bool
	cancel context.CancelFunc
}

func (m *mesh) delta(tb testing.TB, nodeID string) *deltaClient {
	tb.Helper()
	return m.deltaAs(tb, nodeID, "orders", "")
}

// deltaAs opens a delta stream for a node of service, presenting token tok
// (none when empty).
func (m *mesh) deltaAs(tb testing.TB, nodeID, service, tok string) *deltaClient {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	if tok != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(m.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	c := &deltaClient{
		tb: tb, m: m, stream: stream, cancel: cancel,
		resps: make(chan *discoveryv3.DeltaDiscoveryResponse, 64),
		node:  &corev3.Node{Id: nodeID, Cluster: service},
	}
	go func() {
		defer close(c.resps)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			c.resps <- r
		}
	}()
	return c
}

type deltaReq struct {
	typeURL   string
	subscribe []string
	drop      []string
	initial   map[string]string
	nonce     string
	nack      string
}

func (c *deltaClient) send(r deltaReq) {
	c.tb.Helper()
	req := &discoveryv3.DeltaDiscoveryRequest{
		TypeUrl:                  r.typeURL,
		ResourceNamesSubscribe:   r.subscribe,
		ResourceNamesUnsubscribe: r.drop,
		InitialResourceVersions:  r.initial,
		ResponseNonce:            r.nonce,
	}
	if r.nack != "" {
		req.ErrorDetail = &statuspb.Status{Message: r.nack}
	}
	if !c.sent {
		req.Node = c.node
		c.sent = true
	}
	if err := c.stream.Send(req); err != nil {
		c.tb.Fatalf("send: %v", err)
	}
}

func (c *deltaClient) subscribe(typeURL string, names ...string) {
	c.tb.Helper()
	c.send(deltaReq{typeURL: typeURL, subscribe: names})
}

// recv waits for the next response and ACKs it, as Envoy does.
func (c *deltaClient) recv() *discoveryv3.DeltaDiscoveryResponse {
	c.tb.Helper()
	select {
	case r, ok := <-c.resps:
		if !ok {
			c.tb.Fatal("stream closed")
		}
		c.send(deltaReq{typeURL: r.GetTypeUrl(), nonce: r.GetNonce()})
		return r
	case <-time.After(5 * time.Second):
		c.tb.Fatal("no response within 5s")
	}
	return nil
}

// barrier returns once the server has handled every request sent so far:
// it processes a stream's requests in order, and answers a subscription to
// an unknown name at once.
func (c *deltaClient) barrier() {
	c.tb.Helper()
	c.subscribe(cds, "barrier.vip")
	if r := c.recv(); !slices.Equal(r.GetRemovedResources(), []string{"barrier.vip"}) {
		c.tb.Fatalf("barrier: got resources %v removed %v", resourceNames(r), r.GetRemovedResources())
	}
}

// nothingMore asserts that the stream was sent nothing beyond what the
// test received. Once discovery has published every registry change made
// so far (sync) and the server has handled every request sent so far
// (barrier; go-control-plane's delta server sends the responses waiting in
// its watches before it handles a request: pkg/server/delta/v3/server.go,
// processAll), anything those made the server send arrives before the
// barrier's answer.
func (c *deltaClient) nothingMore() {
	c.tb.Helper()
	c.m.sync(c.tb)
	c.barrier()
}

func resourceNames(r *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.GetResources() {
		out = append(out, res.GetName())
	}
	return out
}

func versions(r *discoveryv3.DeltaDiscoveryResponse) map[string]string {
	out := map[string]string{}
	for _, res := range r.GetResources() {
		out[res.GetName()] = res.GetVersion()
	}
	return out
}

func decodeCluster(tb testing.TB, r *discoveryv3.Resource) *clusterv3.Cluster {
	tb.Helper()
	c := &clusterv3.Cluster{}
	if err := r.GetResource().UnmarshalTo(c); err != nil {
		tb.Fatal(err)
	}
	return c
}

func decodeCLA(tb testing.TB, r *discoveryv3.Resource) *endpointv3.ClusterLoadAssignment {
	tb.Helper()
	c := &endpointv3.ClusterLoadAssignment{}
	if err := r.GetResource().UnmarshalTo(c); err != nil {
		tb.Fatal(err)
	}
	return c
}

const (
	cds = resource.ClusterType
	eds = resource.EndpointType
)

// metricValue reads one sample of a metric from a registry (0 when absent);
// labels are name, value pairs that must all match.
func metricValue(tb testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	tb.Helper()
	v, _ := promtest.Value(tb, reg, name, labels...)
	return v
}
