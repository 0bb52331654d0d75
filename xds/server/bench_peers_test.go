//go:build unix

package server_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// The side-by-side comparison of issue 15: meshd, stock go-control-plane
// and a floor (peers_test.go), each in a child process serving the same
// 10,000 VIPs with the same gRPC options, measured in one run with their
// samples interleaved. Each benchmark reports every peer's figure and
// meshd's ratio to the other two; `make bench-peers` runs them.

// peerNames are the peers, in the order their samples are taken (rotated
// every iteration).
var peerNames = []string{"meshd", "stock", "floor"}

const peerVIPs = 10_000

// peerSet is one child process per peer.
type peerSet map[string]*serverProcess

// startPeers starts the peers. The children's profiles
// (XSPACE_BENCH_SERVER_CPUPROFILE, XSPACE_BENCH_SERVER_HEAPPROFILE) go to
// the file named plus ".<benchmark>.<peer>" (peerProfile).
func startPeers(b *testing.B) peerSet {
	b.Helper()
	ps := peerSet{}
	for _, p := range peerNames {
		var env []string
		if path := os.Getenv(cpuProfileEnv); path != "" {
			env = append(env, cpuProfileEnv+"="+peerProfile(b, path, p))
		}
		ps[p] = startPeerProcess(b, p, peerVIPs, env...)
	}
	return ps
}

// peerProfile is where a peer's profile goes in this benchmark: path plus
// ".PeersCDS.meshd", say. Each -count overwrites the one before.
func peerProfile(b *testing.B, path, peer string) string {
	return path + "." + strings.TrimPrefix(b.Name(), "Benchmark") + "." + peer
}

// rotation lists the peers starting with the i-th, so that no peer is
// always measured first.
func rotation(i int) []string {
	return append(slices.Clone(peerNames[i%len(peerNames):]), peerNames[:i%len(peerNames)]...)
}

// reportRatios reports each peer's value of a metric and meshd's ratio to
// the others; lower is better.
func reportRatios(b *testing.B, metric string, values map[string]float64) {
	for _, p := range peerNames {
		b.ReportMetric(values[p], metric+"-"+p)
	}
	b.ReportMetric(values["meshd"]/values["stock"], metric+"-meshd/stock")
	b.ReportMetric(values["meshd"]/values["floor"], metric+"-meshd/floor")
}

// peerStream is one delta stream of its own connection, warmed by one
// answered subscription before it is measured.
type peerStream struct {
	conn   *grpc.ClientConn
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	used   int
}

func openPeerStream(b *testing.B, addr string, id int) *peerStream {
	b.Helper()
	conn, err := grpcDial(addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	// Warm-up with a VIP no sample uses (the top of the range).
	warm := benchCluster(peerVIPs - 1 - id%500)
	if _, err := subscribeAndAck(stream, &corev3.Node{Id: fmt.Sprintf("peer-client-%d", id), Cluster: "orders"}, cds, []string{warm}); err != nil {
		b.Fatal(err)
	}
	return &peerStream{conn: conn, stream: stream}
}

// get subscribes to name of typeURL and returns when its answer arrived.
func (s *peerStream) get(b *testing.B, typeURL, name string) time.Time {
	b.Helper()
	if err := s.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: []string{name}}); err != nil {
		b.Fatal(err)
	}
	r, err := s.stream.Recv()
	at := time.Now()
	if err != nil {
		b.Fatal(err)
	}
	if r.GetTypeUrl() != typeURL || len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != name {
		b.Fatalf("subscribed %s %s; got %s %v", typeURL, name, r.GetTypeUrl(), resourceNames(r))
	}
	if err := s.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResponseNonce: r.GetNonce()}); err != nil {
		b.Fatal(err)
	}
	return at
}

// benchPeersLookup measures, per peer, the time from a CDS subscription of
// a name no stream asked for before to its Cluster (and, withEDS, on to
// its ClusterLoadAssignment), on streams of 20 names each.
func benchPeersLookup(b *testing.B, withEDS bool) {
	ps := startPeers(b)
	streams := map[string]*peerStream{}
	lat := map[string]latencies{}
	opened := 0
	i := 0
	for b.Loop() {
		if i >= peerVIPs-500 {
			b.Fatalf("every VIP was looked up after %d iterations; use -benchtime=Nx with N <= %d", i, peerVIPs-500)
		}
		name := benchCluster(i)
		for _, p := range rotation(i) {
			s := streams[p]
			if s == nil || s.used == 20 {
				b.StopTimer()
				s = openPeerStream(b, ps[p].xds, opened)
				opened++
				streams[p] = s
				b.StartTimer()
			}
			s.used++
			start := time.Now()
			at := s.get(b, cds, name)
			if withEDS {
				at = s.get(b, eds, name)
			}
			lat[p] = append(lat[p], at.Sub(start))
		}
		i++
	}
	p50 := map[string]float64{}
	for p, l := range lat {
		p50[p] = l.quantile(0.5, time.Microsecond)
	}
	reportRatios(b, "p50-µs", p50)
}

// BenchmarkPeersCDS: CDS subscribe → Cluster, p50, 10,000 VIPs.
func BenchmarkPeersCDS(b *testing.B) { benchPeersLookup(b, false) }

// BenchmarkPeersResolve: first resolve, CDS → Cluster → EDS → CLA, p50.
func BenchmarkPeersResolve(b *testing.B) { benchPeersLookup(b, true) }

// BenchmarkPeersStreamMemory: RSS and heap per idle delta stream holding
// 20 clusters (CDS and EDS), 5,000 streams on their own connections, each
// peer in turn: the difference between the child's memory holding them
// and before, after its pool of VIPs was served once.
func BenchmarkPeersStreamMemory(b *testing.B) {
	const streams = 5000
	raiseFDLimit(b, streams+256)
	ps := startPeers(b)
	pool := make([]string, memPoolVIPs)
	for v := range pool {
		pool[v] = benchCluster(v)
	}
	for _, p := range peerNames { // warm: every pool VIP served once
		conn, err := holdClusters(b.Context(), ps[p].xds, -1, pool)
		if err != nil {
			b.Fatal(err)
		}
		_ = conn.Close()
	}
	rss, heap := map[string]float64{}, map[string]float64{}
	i := 0
	for b.Loop() {
		for _, p := range rotation(i) {
			srv := ps[p]
			base := srv.memAt(b, "/mem?free=1")
			conns := openProxies(b, b.Context(), srv.xds, streams)
			b.StopTimer()
			held := srv.settled(b)
			if path := os.Getenv(heapProfileEnv); path != "" {
				srv.heapProfile(b, peerProfile(b, path, p))
			}
			rss[p] += (float64(held.RSS) - float64(base.RSS)) / streams
			heap[p] += (float64(held.HeapInuse+held.StackInuse) - float64(base.HeapInuse+base.StackInuse)) / streams
			closeAll(conns)
			srv.waitStreams(b, 0, base.Goroutines)
			b.StartTimer()
		}
		i++
	}
	for p := range rss {
		rss[p] /= float64(i)
		heap[p] /= float64(i)
	}
	reportRatios(b, "rss-B/stream", rss)
	reportRatios(b, "heap+stack-B/stream", heap)
}

// BenchmarkPeersFanout: 1,000 streams per peer, each on its own connection,
// hold the same VIP (CDS and EDS); each iteration changes one of its
// instances in every peer in turn (a registry write, then what each peer
// does with it). Reported per peer: the time from the start of the write
// to the new ClusterLoadAssignment at each stream, p50, and the server's
// CPU time per stream and change.
func BenchmarkPeersFanout(b *testing.B) {
	raiseFDLimit(b, 3*fanoutStreams+256)
	ps := startPeers(b)
	vip := benchVIP(0)
	arrivals := map[string]chan time.Time{}
	for _, p := range peerNames {
		arrivals[p] = make(chan time.Time, fanoutStreams)
		ready := make(chan error, fanoutStreams)
		for i := range fanoutStreams {
			go fanoutSidecar(b.Context(), dial(b, ps[p].xds), i, benchCluster(0), ready, arrivals[p])
		}
		for range fanoutStreams {
			if err := <-ready; err != nil {
				b.Fatal(err)
			}
		}
	}
	lat := map[string]latencies{}
	cpu0 := map[string]int64{}
	for _, p := range peerNames {
		cpu0[p] = ps[p].cpu(b)
	}
	i := 0
	for b.Loop() {
		for _, p := range rotation(i) {
			start := ps[p].register(b, registry.Instance{VIP: vip, ID: "moving", Address: fmt.Sprintf("10.250.%d.%d", i>>8&0xff, i&0xff)})
			for n := range fanoutStreams {
				select {
				case at := <-arrivals[p]:
					lat[p] = append(lat[p], at.Sub(start))
				case <-time.After(30 * time.Second):
					b.Fatalf("%s: %d of %d streams received change %d within 30s", p, n, fanoutStreams, i)
				}
			}
		}
		i++
	}
	p50, cpu := map[string]float64{}, map[string]float64{}
	for _, p := range peerNames {
		p50[p] = lat[p].quantile(0.5, time.Millisecond)
		cpu[p] = float64(ps[p].cpu(b)-cpu0[p]) / 1e3 / float64(i*fanoutStreams)
	}
	reportRatios(b, "p50-ms", p50)
	reportRatios(b, "cpu-µs/stream/change", cpu)
}
