package server_test

// Tests of what a hostile or careless xDS client can do to meshd (issue 8):
// each drives the server as such a client would and checks that the others
// are not hurt.

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

// TestRequestNodeIsNeverWrittenInto: the server binds a stream's node at
// its first request and gives every request its own copy; the node object
// the client's request carried (which go-control-plane hands to later
// node-less requests, and the cache reads under its lock) is not touched.
func TestRequestNodeIsNeverWrittenInto(t *testing.T) {
	now := time.Now()
	kr := testKeyring(t, now)
	m := newMeshWith(t, func(o *server.Options) { o.Authenticator, o.AllowUnauthenticated = kr, true })
	tok, _ := kr.Issue("orders", time.Hour)
	for _, tt := range []struct {
		name string
		md   metadata.MD
		want string // the authenticated service the bound node carries
	}{
		{"unauthenticated", nil, ""},
		{"authenticated", metadata.Pairs("authorization", "Bearer "+tok), "orders"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := metadata.NewIncomingContext(t.Context(), tt.md)
			id := int64(len(tt.name)) // distinct per case
			if err := m.srv.OnStreamOpen(ctx, id, resource.AnyType); err != nil {
				t.Fatal(err)
			}
			defer m.srv.OnStreamClosed(id, nil)
			node := &corev3.Node{Id: "grpc-1", Cluster: "orders", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
				names.NodeServiceKey: structpb.NewStringValue("payments"), // forged
				"team":               structpb.NewStringValue("checkout"),
			}}}
			sent := proto.Clone(node)
			for i, n := range []*corev3.Node{node, node, nil} { // go-control-plane re-sends the first node
				req := &discoveryv3.DiscoveryRequest{Node: n, TypeUrl: cds, ResourceNames: []string{"payments.vip"}}
				if err := m.srv.OnStreamRequest(id, req); err != nil {
					t.Fatal(err)
				}
				if req.Node == node {
					t.Fatalf("request %d was left the client's node object", i)
				}
				if got := server.AuthenticatedService(req.Node); got != tt.want {
					t.Fatalf("request %d: authenticated service %q, want %q", i, got, tt.want)
				}
				if got := req.Node.GetMetadata().GetFields()["team"].GetStringValue(); got != "checkout" {
					t.Fatalf("request %d: the client's metadata was lost: team = %q", i, got)
				}
			}
			if !proto.Equal(node, sent) {
				t.Fatalf("the client's node was written into:\nsent %v\nnow  %v", sent, node)
			}
		})
	}
}

// TestNodelessSotwRequestsDuringPublishes: a state-of-the-world client
// sends its node only once and ACKs every response without it, while the
// registry keeps changing what it holds, on every type the server serves.
// Under the race detector this is the crash of issue 8 (the server wrote
// into the node the cache was reading); the stream must also keep being
// served throughout.
func TestNodelessSotwRequestsDuringPublishes(t *testing.T) {
	kr := testKeyring(t, time.Now())
	m := newSecureMesh(t, kr, time.Hour)
	put := func(p registry.Protocol) {
		t.Helper()
		if _, err := m.store.PutVIP(t.Context(), registry.VIP{Name: "greeter", Policy: registry.Policy{Protocol: p}}); err != nil {
			t.Fatal(err)
		}
	}
	put(registry.GRPC)
	m.register(t, "greeter", "g0", "10.0.0.1", registry.StatusUp)
	tok, _ := kr.Issue("orders", time.Hour)
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(m.conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "grpc-1", Cluster: "orders", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		names.NodeOutboundPortKey: structpb.NewNumberValue(15001),
	}}}
	subs := map[string][]string{
		resource.ListenerType: {"*", "greeter.vip"}, resource.RouteType: {"greeter.vip"},
		resource.ClusterType: {"*", "greeter.vip"}, resource.EndpointType: {"greeter.vip"},
		resource.SecretType: {names.IdentitySecret, names.TrustBundleSecret},
	}
	first := true
	for _, typ := range server.Types {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typ, ResourceNames: subs[typ]}
		if first {
			req.Node, first = node, false
		}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	// ACK every response without a node, as gRPC clients do; report
	// cluster versions.
	clusters := make(chan string, 100)
	go func() {
		defer close(clusters)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			ack := &discoveryv3.DiscoveryRequest{
				TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce(), ResourceNames: subs[r.GetTypeUrl()],
			}
			if stream.Send(ack) != nil {
				return
			}
			if r.GetTypeUrl() == resource.ClusterType {
				clusters <- r.GetVersionInfo()
			}
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case v, ok := <-clusters:
			if !ok {
				t.Fatalf("%s: the stream ended", what)
			}
			return v
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no cluster response within 10s", what)
		}
		return ""
	}
	last := next("first answer")
	for i := range 40 {
		p := registry.HTTP1
		if i%2 == 1 {
			p = registry.GRPC
		}
		put(p) // changes the cluster, listener and route of greeter
		m.register(t, "greeter", "g0", fmt.Sprintf("10.0.0.%d", 2+i%5), registry.StatusUp)
		v := next("after a change")
		for v == last {
			v = next("after a change")
		}
		last = v
	}
	if n := len(m.srv.Proxies()); n != 1 {
		t.Fatalf("%d streams connected after the changes, want the one", n)
	}
}

// TestUnaryFetchesAreRefused: the unary FetchClusters and FetchEndpoints
// calls would answer without authentication or any bound; they are not
// served.
func TestUnaryFetchesAreRefused(t *testing.T) {
	m := newMeshWith(t, func(o *server.Options) { o.Authenticator = testKeyring(t, time.Now()) })
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "n"}, ResourceNames: []string{"payments.vip"}}
	_, errC := clusterservice.NewClusterDiscoveryServiceClient(m.conn).FetchClusters(t.Context(), req)
	_, errE := endpointservice.NewEndpointDiscoveryServiceClient(m.conn).FetchEndpoints(t.Context(), req)
	for what, err := range map[string]error{"FetchClusters": errC, "FetchEndpoints": errE} {
		if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "use a delta or state-of-the-world stream") {
			t.Errorf("%s: %v; want Unimplemented saying what to use", what, err)
		}
	}
	if w := watched(m, "payments"); w != nil {
		t.Fatalf("a refused fetch left payments watched: %+v", w)
	}
}

// TestRequestsOutsideWhatIsServed: a type the server does not serve, a
// type other than a standalone stream's, an oversized name or node end the
// stream with InvalidArgument saying what is served; nothing is held.
func TestRequestsOutsideWhatIsServed(t *testing.T) {
	m := newMesh(t)
	long := strings.Repeat("a", server.MaxNameBytes+1)
	big := &corev3.Node{Id: "big", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		"blob": structpb.NewStringValue(strings.Repeat("x", server.MaxNodeBytes)),
	}}}
	// answer sends req as the first request of a stream and returns how
	// the stream ends (nil if req is answered).
	answer := func(open func(context.Context, ...grpc.CallOption) (deltaStream, error)) func(*discoveryv3.DeltaDiscoveryRequest) error {
		return func(req *discoveryv3.DeltaDiscoveryRequest) error {
			s, err := open(t.Context())
			if err == nil {
				err = s.Send(req)
			}
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}
	}
	ads := answer(func(ctx context.Context, o ...grpc.CallOption) (deltaStream, error) {
		return discoveryv3.NewAggregatedDiscoveryServiceClient(m.conn).DeltaAggregatedResources(ctx, o...)
	})
	standaloneCDS := answer(func(ctx context.Context, o ...grpc.CallOption) (deltaStream, error) {
		return clusterservice.NewClusterDiscoveryServiceClient(m.conn).DeltaClusters(ctx, o...)
	})
	node := &corev3.Node{Id: "n1"}
	for _, tt := range []struct {
		name string
		call func(*discoveryv3.DeltaDiscoveryRequest) error
		req  *discoveryv3.DeltaDiscoveryRequest
		want string
	}{
		{"unknown type", ads, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: "type.googleapis.com/envoy.service.runtime.v3.Runtime", ResourceNamesSubscribe: []string{"x"}}, "it serves [type.googleapis.com/envoy.config.listener.v3.Listener"},
		{"another type on CDS", standaloneCDS, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: eds, ResourceNamesSubscribe: []string{"payments.vip"}}, "it serves [" + cds + "]"},
		{"long name", ads, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: cds, ResourceNamesSubscribe: []string{long}}, "names are at most 512 bytes"},
		{"long unsubscribed name", ads, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: cds, ResourceNamesUnsubscribe: []string{long}}, "names are at most 512 bytes"},
		{"big node", ads, &discoveryv3.DeltaDiscoveryRequest{Node: big, TypeUrl: cds, ResourceNamesSubscribe: []string{"payments.vip"}}, "node of"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v; want InvalidArgument containing %q", err, tt.want)
			}
		})
	}
	await.True(t, "no proxy connected", func() bool { return len(m.srv.Proxies()) == 0 })
	if w := m.disc.Watched(); len(w) != 0 {
		t.Fatalf("refused requests left VIPs watched: %+v", w)
	}
}

// deltaStream is the client side of a delta stream of any discovery service.
type deltaStream interface {
	Send(*discoveryv3.DeltaDiscoveryRequest) error
	Recv() (*discoveryv3.DeltaDiscoveryResponse, error)
}

// handTokens hands out admissions one at a time: a test sends one token
// per admission it allows.
type handTokens chan struct{}

func (h handTokens) Wait(ctx context.Context) error {
	select {
	case <-h:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h handTokens) Allow() bool {
	select {
	case <-h:
		return true
	default:
		return false
	}
}

// TestAuthenticatedStreamsAreAdmittedFirst: while unauthenticated streams
// wait for admission, a stream that presents a valid token goes ahead of
// all of them; the others are admitted in the order they came.
func TestAuthenticatedStreamsAreAdmittedFirst(t *testing.T) {
	kr := testKeyring(t, time.Now())
	tokens := make(handTokens)
	m := newMeshWith(t, func(o *server.Options) {
		o.Authenticator, o.AllowUnauthenticated = kr, true
		server.SetAdmissionTokens(o, tokens)
	})
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	waiting := func(n float64) {
		t.Helper()
		await.True(t, "the streams waiting for admission", func() bool { return metricValue(t, m.reg, "xspace_xds_admission_waiting_streams") == n })
	}
	var flood []*deltaClient
	for i := range 3 {
		c := m.delta(t, "anon-"+string(rune('a'+i)))
		c.subscribe(cds, "payments.vip")
		flood = append(flood, c)
		waiting(float64(i + 1))
	}
	tok, _ := kr.Issue("orders", time.Hour)
	sidecar := m.deltaAs(t, "orders-1", "orders", tok)
	sidecar.subscribe(cds, "payments.vip")
	waiting(4)

	tokens <- struct{}{}
	if r := sidecar.recv(); !slices.Equal(resourceNames(r), []string{"payments.vip"}) {
		t.Fatalf("authenticated sidecar: %v", resourceNames(r))
	}
	waiting(3)
	for i, c := range flood {
		tokens <- struct{}{}
		c.recv()
		waiting(float64(2 - i))
		admitted := []string{}
		for _, p := range m.srv.Proxies() {
			admitted = append(admitted, p.NodeID)
		}
		slices.Sort(admitted)
		want := append([]string{}, "anon-a", "anon-b", "anon-c")[:i+1]
		want = append(want, "orders-1")
		if !slices.Equal(admitted, want) {
			t.Fatalf("after %d more admissions: %v admitted, want %v (in arrival order)", i+1, admitted, want)
		}
	}
}

// TestStreamsPerPeerAreBounded: one address may have only so many streams
// open or waiting; one more is refused with ResourceExhausted naming the
// setting, and a slot frees when a stream ends.
func TestStreamsPerPeerAreBounded(t *testing.T) {
	m := newMeshWith(t, func(o *server.Options) { o.MaxStreamsPerPeer = 2 })
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	var open []*deltaClient
	for _, id := range []string{"n1", "n2"} {
		c := m.delta(t, id)
		c.subscribe(cds, "payments.vip")
		c.recv()
		open = append(open, c)
	}
	err := streamError(t, m.delta(t, "n3"))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "xds.max_streams_per_peer") {
		t.Fatalf("third stream from one address: %v; want ResourceExhausted naming xds.max_streams_per_peer", err)
	}
	if got := metricValue(t, m.reg, "xspace_xds_streams_refused_total", "reason", "peer_limit"); got != 1 {
		t.Fatalf("refused (peer_limit) = %v, want 1", got)
	}
	open[0].cancel()
	await.True(t, "one proxy connected", func() bool { return len(m.srv.Proxies()) == 1 })
	if err := streamError(t, m.delta(t, "n4")); err != nil {
		t.Fatalf("after one stream ended: %v; want the new one served", err)
	}
}

// TestAdmissionQueueIsBounded: past MaxWaitingStreams a new stream is
// refused with Unavailable at once rather than queued.
func TestAdmissionQueueIsBounded(t *testing.T) {
	tokens := make(handTokens)
	m := newMeshWith(t, func(o *server.Options) {
		o.MaxWaitingStreams = 1
		server.SetAdmissionTokens(o, tokens)
	})
	first := m.delta(t, "n1")
	first.subscribe(cds, "payments.vip")
	await.True(t, "one stream waiting for admission", func() bool { return metricValue(t, m.reg, "xspace_xds_admission_waiting_streams") == 1 })
	err := streamError(t, m.delta(t, "n2"))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "xds.max_waiting_streams") {
		t.Fatalf("second waiting stream: %v; want Unavailable naming xds.max_waiting_streams", err)
	}
	tokens <- struct{}{}
	first.recv()
}

// TestStreamsPerConnectionAreAdvertised: the server tells every HTTP/2
// client how many concurrent streams one connection may carry (grpc-go's
// server refuses the streams of a client that ignores it, with
// REFUSED_STREAM: internal/transport/http2_server.go, operateHeaders).
func TestStreamsPerConnectionAreAdvertised(t *testing.T) {
	m := newMesh(t)
	g := grpc.NewServer(server.GRPCOptions(7)...)
	m.srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			if v, ok := s.Value(http2.SettingMaxConcurrentStreams); !ok || v != 7 {
				t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d (set: %v), want 7", v, ok)
			}
			return
		}
	}
}
