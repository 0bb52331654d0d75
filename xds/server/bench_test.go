//go:build unix

package server_test

// Benchmarks of the design's "numbers to beat": on-demand resolve latency,
// the not-found answer, control-plane memory per stream, and the fan-out of
// one change to many streams. Each reports its own metrics (p50/p99, bytes
// per stream) for benchstat; BENCHMARKS.md has the commands and results.
// Every benchmark uses b.Loop, so its setup runs once per -count, and
// should be run with an explicit -benchtime=Nx.

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// benchVIPs is how many VIPs the latency benchmarks register, three
// instances each: the design's "10,000 VIPs registered".
const benchVIPs = 10_000

func benchVIP(n int) string { return fmt.Sprintf("svc-%05d", n) }

// populate registers VIPs svc-00000, svc-00001, ... with three UP instances
// each.
func populate(tb testing.TB, m *mesh, vips int) { registerVIPs(tb, m, vips, 3) }

// registerVIPs registers VIPs svc-00000... with instances UP instances
// each, through the store's API: every Register is a committed bbolt
// write, 64 at a time (the store commits concurrent writes together).
func registerVIPs(tb testing.TB, m *mesh, vips, instances int) {
	tb.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 64 {
		wg.Go(func() {
			for v := range next {
				name := benchVIP(v)
				for n := range instances {
					m.register(tb, name, fmt.Sprintf("%s-%d", name, n), fmt.Sprintf("10.%d.%d.%d", v>>8, v&0xff, n+1), registry.StatusUp)
				}
			}
		})
	}
	for v := range vips {
		next <- v
	}
	close(next)
	wg.Wait()
}

// latencies are per-event durations, reported as nearest-rank quantiles.
type latencies []time.Duration

func (l latencies) report(b *testing.B, unit time.Duration, suffix string) {
	if len(l) == 0 {
		return
	}
	b.ReportMetric(l.quantile(0.50, unit), "p50-"+suffix)
	b.ReportMetric(l.quantile(0.99, unit), "p99-"+suffix)
	b.ReportMetric(l.quantile(1, unit), "max-"+suffix)
}

// quantile is the nearest-rank q-quantile, in units of unit.
func (l latencies) quantile(q float64, unit time.Duration) float64 {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := max(int(math.Ceil(q*float64(len(s))))-1, 0)
	return float64(s[i]) / float64(unit)
}

// recvAt is recv that also returns when the response reached the client,
// taken before the ACK is sent.
func (c *deltaClient) recvAt() (*discoveryv3.DeltaDiscoveryResponse, time.Time) {
	c.tb.Helper()
	select {
	case r, ok := <-c.resps:
		at := time.Now()
		if !ok {
			c.tb.Fatal("stream closed")
		}
		c.send(deltaReq{typeURL: r.GetTypeUrl(), nonce: r.GetNonce()})
		return r, at
	case <-time.After(5 * time.Second):
		c.tb.Fatal("no response within 5s")
	}
	return nil, time.Time{}
}

// sidecars hands out established delta streams, each on a connection of
// its own, a fresh one after every perStream clusters, the way a fleet of
// sidecars that each hold a few clusters presents itself. Streams stay open
// until the benchmark ends. Opening one runs with the benchmark timer
// stopped.
type sidecars struct {
	b         *testing.B
	m         *mesh
	perStream int
	used      int
	opened    int
	cur       *deltaClient
	// envoy makes each stream start as an Envoy sidecar does with
	// meshctl's bootstrap: node metadata with its outbound port,
	// wildcard listener and cluster subscriptions, then clusters on demand.
	envoy bool
}

func (s *sidecars) next() *deltaClient {
	if s.cur == nil || s.used == s.perStream {
		s.b.StopTimer()
		own := *s.m
		own.conn = dial(s.b, s.m.addr)
		s.cur = own.delta(s.b, fmt.Sprintf("sidecar-%d", s.opened))
		s.opened++
		s.used = 0
		if s.envoy {
			sidecarNode(s.cur, map[string]any{names.NodeOutboundPortKey: 15001})
			s.cur.subscribe(resource.ListenerType)
			if got := resourceNames(s.cur.recv()); !slices.Equal(got, []string{names.OutboundListener(15001)}) {
				s.b.Fatalf("wildcard listeners %v", got)
			}
			s.cur.subscribe(resource.ClusterType)
			s.cur.recv()
		} else {
			// A listener subscription is answered by the cache alone (not
			// found); once it is, the stream is open on the server side.
			s.cur.subscribe(resource.ListenerType, "warmup")
			s.cur.recv()
		}
		s.b.StartTimer()
	}
	s.used++
	return s.cur
}

// BenchmarkOnDemandResolve: with 10,000 VIPs registered, an established
// stream subscribes to a VIP nothing has resolved yet, as Envoy's on-demand
// CDS does: CDS subscription, Cluster, ACK, EDS subscription, CLA. The
// metric is the client-observed time from sending the CDS subscription to
// receiving the ClusterLoadAssignment. Each stream takes 20 clusters.
func BenchmarkOnDemandResolve(b *testing.B) { benchmarkOnDemandResolve(b, false) }

// BenchmarkOnDemandResolveEnvoy is BenchmarkOnDemandResolve with streams
// that start as Envoy sidecars do: their cluster subscription is a
// wildcard (meaning the node's own clusters, from its metadata) plus the
// names asked for on demand.
func BenchmarkOnDemandResolveEnvoy(b *testing.B) { benchmarkOnDemandResolve(b, true) }

func benchmarkOnDemandResolve(b *testing.B, envoy bool) {
	m := newMesh(b)
	populate(b, m, benchVIPs)
	proxies := &sidecars{b: b, m: m, perStream: 20, envoy: envoy}
	var (
		lat  latencies
		last *discoveryv3.DeltaDiscoveryResponse
	)
	for b.Loop() {
		if len(lat) == benchVIPs {
			b.Fatalf("every VIP is resolved after %d iterations; use -benchtime=Nx with N <= %d", benchVIPs, benchVIPs)
		}
		name := names.Cluster(benchVIP(len(lat)), false)
		c := proxies.next()
		start := time.Now()
		c.subscribe(cds, name)
		cl := c.recv()
		c.subscribe(eds, name)
		cla, at := c.recvAt()
		lat = append(lat, at.Sub(start))
		if cl.GetTypeUrl() != cds || !slices.Equal(resourceNames(cl), []string{name}) {
			b.Fatalf("%s: got %s %v, want the cluster", name, cl.GetTypeUrl(), resourceNames(cl))
		}
		if cla.GetTypeUrl() != eds || !slices.Equal(resourceNames(cla), []string{name}) {
			b.Fatalf("%s: got %s %v, want its endpoints", name, cla.GetTypeUrl(), resourceNames(cla))
		}
		last = cla
	}
	b.StopTimer()
	if n := len(decodeCLA(b, last.GetResources()[0]).GetEndpoints()[0].GetLbEndpoints()); n != 3 {
		b.Fatalf("last CLA has %d endpoints, want 3", n)
	}
	lat.report(b, time.Microsecond, "µs")
}

// BenchmarkNotFound: with 10,000 VIPs registered, an established stream
// subscribes CDS to a well-formed cluster name of a VIP that is not
// registered; the metric is the time until the removed_resources answer.
func BenchmarkNotFound(b *testing.B) {
	m := newMesh(b)
	populate(b, m, benchVIPs)
	proxies := &sidecars{b: b, m: m, perStream: 20}
	var lat latencies
	for b.Loop() {
		name := names.Cluster(fmt.Sprintf("ghost-%06d", len(lat)), false)
		c := proxies.next()
		start := time.Now()
		c.subscribe(cds, name)
		r, at := c.recvAt()
		lat = append(lat, at.Sub(start))
		if len(r.GetResources()) != 0 || !slices.Equal(r.GetRemovedResources(), []string{name}) {
			b.Fatalf("%s: got resources %v removed %v, want it removed", name, resourceNames(r), r.GetRemovedResources())
		}
	}
	lat.report(b, time.Microsecond, "µs")
}
