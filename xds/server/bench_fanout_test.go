//go:build unix

package server_test

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// raiseFDLimit lifts the soft open-file limit to need (Go already raises it
// to the hard limit at start-up on Linux) and skips when the hard limit is
// lower.
func raiseFDLimit(tb testing.TB, need uint64) {
	tb.Helper()
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		tb.Fatal(err)
	}
	if l.Cur >= need {
		return
	}
	if l.Max < need {
		tb.Skipf("needs %d open files; the hard limit is %d", need, l.Max)
	}
	l.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		tb.Fatal(err)
	}
}

// dial opens a connection of its own, as a separate Envoy has.
func dial(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpcDial(addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// envoyLike are the dial options of the benchmarks' stand-ins for Envoy.
// Envoy's HTTP/2 client uses fixed flow-control windows (256 MiB by
// default) and sends no BDP pings; grpc-go's client would otherwise ping
// the server after each response it receives, work the server would not
// see from Envoy.
// grpcDial connects the way a proxy does; for goroutines without a testing.TB.
func grpcDial(addr string) (*grpc.ClientConn, error) { return grpc.NewClient(addr, envoyLike()...) }

// grpcDialFrom connects from loopback address 127.0.1.<host> (1 to 254):
// Linux routes all of 127.0.0.0/8 to the loopback interface, so clients
// can stand for proxies on distinct hosts, as meshd's per-peer limit sees
// them.
func grpcDialFrom(addr string, host int) (*grpc.ClientConn, error) {
	from := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(host))}
	dial := func(ctx context.Context, target string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: from}
		return d.DialContext(ctx, "tcp", target)
	}
	return grpc.NewClient(addr, append(envoyLike(), grpc.WithContextDialer(dial))...)
}

func envoyLike() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStaticStreamWindowSize(256 << 20),
		grpc.WithStaticConnWindowSize(256 << 20),
	}
}

const fanoutStreams = 1000

// BenchmarkFanout: 1,000 streams, each on its own connection, hold the
// same VIP (CDS and EDS). Each iteration re-registers one instance of it
// at a new address; the metric is, for every stream, the time from the
// start of the registry write (Register, including its bbolt commit) until
// that stream receives the new ClusterLoadAssignment. Between iterations
// the benchmark waits 20 ms with the timer stopped so the streams' ACKs are
// processed before the next change.
//
// server=child runs the control plane in a child process (the streams'
// clients stay in the benchmark process; both processes read the same
// wall clock); server=inprocess runs it in the benchmark process, where
// the 1,000 clients' goroutines share its Go scheduler.
func BenchmarkFanout(b *testing.B) {
	b.Run("server=child", func(b *testing.B) {
		raiseFDLimit(b, fanoutStreams+256)
		p := startServerProcess(b, 0)
		benchFanout(b, p.xds, p.register, func() int { return p.waiting(b, eds) }, func() int64 { return p.cpu(b) })
	})
	b.Run("server=inprocess", func(b *testing.B) {
		raiseFDLimit(b, 2*fanoutStreams+256)
		m := newMesh(b)
		benchFanout(b, m.addr, func(tb testing.TB, inst registry.Instance) time.Time {
			start := time.Now()
			if _, err := m.store.Register(context.Background(), inst); err != nil {
				tb.Fatal(err)
			}
			return start
		}, func() int { return m.cache.Waiting(eds) }, nil)
	})
}

// registerFunc registers an instance in the control plane's registry and
// returns when the write started.
type registerFunc func(tb testing.TB, inst registry.Instance) time.Time

// benchFanout runs the fan-out against a control plane at addr. waiting
// counts the server's streams that wait for a change of their endpoints
// (cache.Cache.Waiting). When serverCPU is not nil it reads the server's
// CPU time, and the benchmark also reports the server's CPU time per
// stream and change.
func benchFanout(b *testing.B, addr string, register registerFunc, waiting func() int, serverCPU func() int64) {
	const vip = "fanout"
	instance := func(id, addr string) registry.Instance {
		return registry.Instance{VIP: vip, ID: id, Address: addr, Port: 8080, Status: registry.StatusUp, Zone: "zone-a"}
	}
	for n := range 3 {
		register(b, instance(fmt.Sprintf("fanout-%d", n), fmt.Sprintf("10.8.0.%d", n+1)))
	}
	cluster := names.Cluster(vip, false)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	ready := make(chan error, fanoutStreams)
	arrivals := make(chan time.Time, fanoutStreams)
	for i := range fanoutStreams {
		go fanoutSidecar(ctx, dial(b, addr), i, cluster, ready, arrivals)
	}
	for range fanoutStreams {
		select {
		case err := <-ready:
			if err != nil {
				b.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			b.Fatal("streams not ready within 60s")
		}
	}
	var lat latencies
	var cpu0 int64
	if serverCPU != nil {
		cpu0 = serverCPU()
	}
	iter := 0
	for b.Loop() {
		iter++
		start := register(b, instance("moving", fmt.Sprintf("10.9.%d.%d", iter>>8&0xff, iter&0xff)))
		for n := range fanoutStreams {
			select {
			case at := <-arrivals:
				lat = append(lat, at.Sub(start))
			case <-time.After(10 * time.Second):
				b.Fatalf("iteration %d: %d of %d streams received the change within 10s", iter, n, fanoutStreams)
			}
		}
		// The next change once the server handled every stream's ACK of
		// this one: each stream then waits for a change again.
		b.StopTimer()
		acked(b, iter, waiting)
		b.StartTimer()
	}
	lat.report(b, time.Millisecond, "ms")
	if serverCPU != nil {
		b.ReportMetric(float64(serverCPU()-cpu0)/1e3/float64(iter*fanoutStreams), "server-cpu-µs/push")
	}
}

// acked waits until every fan-out stream waits for a change of its
// endpoints, with every request it sent (its ACKs) handled.
func acked(b *testing.B, iter int, waiting func() int) {
	b.Helper()
	await.Within(b, time.Minute, fmt.Sprintf("the ACKs of change %d", iter), func() error {
		if n := waiting(); n < fanoutStreams {
			return fmt.Errorf("%d of %d streams wait for a change", n, fanoutStreams)
		}
		return nil
	})
}

// fanoutSidecar subscribes like Envoy (CDS, then EDS for the cluster),
// reports ready, then ACKs every response and reports when each new
// version of the CLA arrived. It is the only goroutine using its stream.
func fanoutSidecar(ctx context.Context, conn *grpc.ClientConn, id int, cluster string, ready chan<- error, arrivals chan<- time.Time) {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		ready <- err
		return
	}
	version := ""
	node := &corev3.Node{Id: fmt.Sprintf("fanout-%d", id), Cluster: "orders"}
	for _, typeURL := range []string{cds, eds} {
		r, err := subscribeAndAck(stream, node, typeURL, []string{cluster})
		if err != nil {
			ready <- fmt.Errorf("stream %d: %w", id, err)
			return
		}
		node = nil
		version = r.GetResources()[0].GetVersion()
	}
	ready <- nil
	for {
		r, err := stream.Recv()
		if err != nil {
			return
		}
		at := time.Now()
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
			return
		}
		if r.GetTypeUrl() == eds && len(r.GetResources()) == 1 && r.GetResources()[0].GetVersion() != version {
			version = r.GetResources()[0].GetVersion()
			arrivals <- at
		}
	}
}

// subscribeAndAck sends one subscription, waits for its answer, checks that
// it carries every name, and ACKs it.
func subscribeAndAck(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, node *corev3.Node, typeURL string, clusters []string) (*discoveryv3.DeltaDiscoveryResponse, error) {
	err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNamesSubscribe: clusters})
	if err != nil {
		return nil, err
	}
	r, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if r.GetTypeUrl() != typeURL || len(r.GetResources()) != len(clusters) {
		return nil, fmt.Errorf("subscribed %s to %d clusters, got %s with %d resources, removed %v",
			typeURL, len(clusters), r.GetTypeUrl(), len(r.GetResources()), r.GetRemovedResources())
	}
	err = stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResponseNonce: r.GetNonce()})
	return r, err
}
