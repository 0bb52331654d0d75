package server

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"github.com/prisma-systems/xspace-mesh/bootstrap"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// failFirstKey is request metadata that makes a backend fail a call's
// first attempt with UNAVAILABLE and serve its retries.
const failFirstKey = "x-fail-first-attempt"

// backend is a real gRPC server on loopback that answers UnaryCall with
// its own name, and in Hostname the number of earlier attempts of the call.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
	port uint32
}

func (b *backend) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	previous := "0"
	if v := md.Get("grpc-previous-rpc-attempts"); len(v) > 0 {
		previous = v[0]
	}
	if len(md.Get(failFirstKey)) > 0 && previous == "0" {
		return nil, status.Errorf(codes.Unavailable, "%s fails first attempts", b.name)
	}
	return &testgrpc.SimpleResponse{ServerId: b.name, Hostname: previous}, nil
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, port: uint32(lis.Addr().(*net.TCPAddr).Port)}
	g := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(g, b)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return b
}

// putPaymentsVIP applies the VIP "payments" as a gRPC VIP retrying on retryOn.
func putPaymentsVIP(t *testing.T, m *mesh, retryOn ...string) {
	t.Helper()
	_, err := m.store.PutVIP(context.Background(), registry.VIP{Name: "payments", Policy: registry.Policy{
		Protocol: registry.GRPC,
		Retries:  registry.Retries{Attempts: 2, On: retryOn},
	}})
	if err != nil {
		t.Fatal(err)
	}
}

// dialXDS is a client of "xds:///payments.vip" through grpc-go's own xDS
// resolver, configured by the bootstrap meshctl bootstrap --grpc writes.
func dialXDS(t *testing.T, xdsAddr string) testgrpc.TestServiceClient {
	t.Helper()
	cfg, err := bootstrap.GRPC(bootstrap.GRPCOptions{XDS: xdsAddr, Service: "orders", NodeID: "orders-proxyless"})
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := xds.NewXDSResolverWithConfigForTesting(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///payments.vip",
		grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

// call makes one call and returns the backend that answered it.
func call(ctx context.Context, c testgrpc.TestServiceClient, md ...string) (*testgrpc.SimpleResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	return c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
}

// TestProxylessGRPC: grpc-go's real xDS client, bootstrapped the way
// meshctl bootstrap --grpc does, dials xds:///payments.vip against the
// real control plane and two real backends. It accepts the listener, route,
// cluster and endpoints we serve (a NACK would leave the call hanging and
// be logged), spreads calls, follows an instance going DOWN within a
// second, and honours the VIP's retry policy.
func TestProxylessGRPC(t *testing.T) {
	m := newMesh(t)
	ctx := t.Context()
	putPaymentsVIP(t, m, "cancelled") // a gRPC condition, but not the one the backends fail with
	a, b := startBackend(t, "payments-a"), startBackend(t, "payments-b")
	for _, be := range []*backend{a, b} {
		_, err := m.store.Register(ctx, registry.Instance{
			VIP: "payments", ID: be.name, Address: "127.0.0.1", Port: be.port, Status: registry.StatusUp,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	client := dialXDS(t, m.addr)

	seen := map[string]int{}
	for range 20 {
		resp, err := call(ctx, client)
		if err != nil {
			t.Fatalf("call: %v\nxDS server log:\n%s", err, m.logs.String())
		}
		seen[resp.GetServerId()]++
	}
	if seen[a.name] == 0 || seen[b.name] == 0 {
		t.Fatalf("20 calls went to %v; want both backends", seen)
	}

	downAt := time.Now()
	if _, err := m.store.SetStatus(ctx, "payments", a.name, registry.StatusDown); err != nil {
		t.Fatal(err)
	}
	// With round robin over two backends, ten calls in a row to b mean a
	// has left the client's picker; the first of them is when it left.
	var streak int
	var movedAt time.Time
	for streak < 10 {
		if time.Since(downAt) > 5*time.Second {
			t.Fatalf("calls still reach %s 5s after it was marked DOWN", a.name)
		}
		resp, err := call(ctx, client)
		if err != nil {
			t.Fatalf("call after DOWN: %v", err)
		}
		if resp.GetServerId() != b.name {
			streak = 0
			continue
		}
		if streak == 0 {
			movedAt = time.Now()
		}
		streak++
	}
	if d := movedAt.Sub(downAt); d > time.Second {
		t.Fatalf("calls moved to %s %s after %s was marked DOWN; want within 1s", b.name, d, a.name)
	}
	for range 20 {
		if resp, err := call(ctx, client); err != nil || resp.GetServerId() != b.name {
			t.Fatalf("after DOWN: answered by %q, %v; want %s only", resp.GetServerId(), err, b.name)
		}
	}

	// Retry on "cancelled" only: a first attempt failing UNAVAILABLE fails the call.
	if _, err := call(ctx, client, failFirstKey, "1"); status.Code(err) != codes.Unavailable {
		t.Fatalf("call failing its first attempt without an UNAVAILABLE retry policy: %v; want UNAVAILABLE", err)
	}
	// Retry on "unavailable": once the new route arrives, the retry succeeds.
	putPaymentsVIP(t, m, "unavailable", "connect-failure")
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := call(ctx, client, failFirstKey, "1")
		if err == nil {
			if n, _ := strconv.Atoi(resp.GetHostname()); n < 1 {
				t.Fatalf("call succeeded after %d earlier attempts; want a retry", n)
			}
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("call with retry_on unavailable: %v", errors.Unwrap(err))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAPIListenerFollowsTheVIP: the API listener and route of a VIP are
// served on demand while it is a gRPC VIP that allows plaintext, are not
// pushed again when only its endpoints change, and are withdrawn when it
// stops being a gRPC VIP.
func TestAPIListenerFollowsTheVIP(t *testing.T) {
	m := newMesh(t)
	putPaymentsVIP(t, m, "unavailable")
	c := m.delta(t, "orders-1")
	for _, typeURL := range []string{resource.ListenerType, resource.RouteType} {
		c.subscribe(typeURL, "payments.vip")
		if r := c.recv(); r.GetTypeUrl() != typeURL || !slices.Equal(resourceNames(r), []string{"payments.vip"}) {
			t.Fatalf("%s: got %s %v, want payments.vip", typeURL, r.GetTypeUrl(), resourceNames(r))
		}
	}
	// An endpoint change rebuilds the cluster's endpoints, not the listener or route.
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	c.barrier()
	c.quiet()

	_, err := m.store.PutVIP(context.Background(), registry.VIP{Name: "payments", Policy: registry.Policy{Protocol: registry.HTTP2}})
	if err != nil {
		t.Fatal(err)
	}
	removed := map[string]bool{}
	for len(removed) < 2 {
		r := c.recv()
		if slices.Equal(r.GetRemovedResources(), []string{"payments.vip"}) {
			removed[r.GetTypeUrl()] = true
		}
	}
	if !removed[resource.ListenerType] || !removed[resource.RouteType] {
		t.Fatalf("withdrawn: %v, want the listener and the route", removed)
	}
}
