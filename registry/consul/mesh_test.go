package consul

import (
	"context"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"

	"github.com/prisma-systems/xspace-mesh/controlplane"
	"github.com/prisma-systems/xspace-mesh/controlplane/cptest"
	"github.com/prisma-systems/xspace-mesh/discovery"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

const (
	cds = resource.ClusterType
	eds = resource.EndpointType
)

// mesh is a real control plane on a real Consul: the Consul store,
// discovery, the xDS cache and server on loopback, and a connection to it.
// It follows xds/server's test harness, with Consul as the registry.
type mesh struct {
	*env
	disc  *discovery.Discovery
	cache *cache.Cache
	conn  *grpc.ClientConn
}

func newMesh(tb testing.TB, opts Options) *mesh {
	tb.Helper()
	return newMeshOn(tb, newEnv(tb, opts))
}

// newMeshOn makes a control plane on the store of e.
func newMeshOn(tb testing.TB, e *env) *mesh {
	tb.Helper()
	r := cptest.Start(tb, controlplane.Options{
		Source: e.s, Registerer: e.reg,
		Discovery: discovery.Options{RetryInterval: 50 * time.Millisecond, MaxRetryInterval: 500 * time.Millisecond},
		Server:    server.Options{AdmissionRate: 1e6, AdmissionBurst: 1e6},
	})
	disc, conn := r.Discovery, r.Conn
	return &mesh{env: e, disc: disc, cache: r.Cache, conn: conn}
}

// deltaClient behaves like Envoy's on-demand CDS over delta ADS: it ACKs
// every response it receives.
type deltaClient struct {
	tb     testing.TB
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	resps  chan *discoveryv3.DeltaDiscoveryResponse
	nodeID string
	sent   bool
}

// stream opens a delta ADS stream to the control plane, ended with the test.
func (m *mesh) stream(tb testing.TB) discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(m.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return stream
}

func (m *mesh) delta(tb testing.TB, nodeID string) *deltaClient {
	tb.Helper()
	stream := m.stream(tb)
	c := &deltaClient{tb: tb, stream: stream, nodeID: nodeID, resps: make(chan *discoveryv3.DeltaDiscoveryResponse, 64)}
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

func (c *deltaClient) send(req *discoveryv3.DeltaDiscoveryRequest) {
	c.tb.Helper()
	if !c.sent {
		req.Node = &corev3.Node{Id: c.nodeID, Cluster: "orders"}
		c.sent = true
	}
	if err := c.stream.Send(req); err != nil {
		c.tb.Fatalf("send: %v", err)
	}
}

func (c *deltaClient) subscribe(typeURL string, names ...string) {
	c.tb.Helper()
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

// recvWithin waits up to timeout for the next response and ACKs it.
func (c *deltaClient) recvWithin(timeout time.Duration) *discoveryv3.DeltaDiscoveryResponse {
	c.tb.Helper()
	select {
	case r, ok := <-c.resps:
		if !ok {
			c.tb.Fatal("stream closed")
		}
		c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
		return r
	case <-time.After(timeout):
		c.tb.Fatalf("no response within %s", timeout)
	}
	return nil
}

func (c *deltaClient) recv() *discoveryv3.DeltaDiscoveryResponse {
	c.tb.Helper()
	return c.recvWithin(10 * time.Second)
}

// quiet asserts that nothing arrives for d.
func (c *deltaClient) quiet(d time.Duration) {
	c.tb.Helper()
	select {
	case r := <-c.resps:
		c.tb.Fatalf("unexpected response: type %s resources %v removed %v", r.GetTypeUrl(), resourceNames(r), r.GetRemovedResources())
	case <-time.After(d):
	}
}

// resolve subscribes to a cluster and its endpoints and returns the endpoints.
func (c *deltaClient) resolve(cluster string) *endpointv3.ClusterLoadAssignment {
	c.tb.Helper()
	c.subscribe(cds, cluster)
	if r := c.recv(); !slices.Equal(resourceNames(r), []string{cluster}) {
		c.tb.Fatalf("CDS %s: resources %v removed %v", cluster, resourceNames(r), r.GetRemovedResources())
	}
	c.subscribe(eds, cluster)
	return decodeCLA(c.tb, c.recv(), cluster)
}

func resourceNames(r *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.GetResources() {
		out = append(out, res.GetName())
	}
	return out
}

func decodeCLA(tb testing.TB, r *discoveryv3.DeltaDiscoveryResponse, cluster string) *endpointv3.ClusterLoadAssignment {
	tb.Helper()
	if r.GetTypeUrl() != eds || !slices.Equal(resourceNames(r), []string{cluster}) {
		tb.Fatalf("want the endpoints of %s, got type %s resources %v removed %v",
			cluster, r.GetTypeUrl(), resourceNames(r), r.GetRemovedResources())
	}
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := r.GetResources()[0].GetResource().UnmarshalTo(cla); err != nil {
		tb.Fatal(err)
	}
	return cla
}

// addresses lists a ClusterLoadAssignment's endpoint addresses, sorted.
func addresses(cla *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	slices.Sort(out)
	return out
}
