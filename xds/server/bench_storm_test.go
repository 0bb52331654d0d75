//go:build unix

package server_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/prisma-systems/xspace-mesh/controlplane"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

const (
	stormProxies  = 5000
	stormClusters = 20
	stormVIPs     = 1000
)

// BenchmarkReconnectStorm: DESIGN.md's heaviest moment. A control plane
// has just restarted (nothing resolved yet, production admission limits)
// and 5,000 proxies, each on its own connection, reconnect at once, each
// re-subscribing the 20 clusters it holds (CDS and EDS) with the
// initial_resource_versions it had. Versions are content-derived, so the
// new process agrees with them: nothing may be re-sent and nothing
// removed. A proxy counts as re-resolved when a barrier subscription
// behind its re-subscriptions (an unknown name, answered at once) comes
// back. Reports the time until every proxy is re-resolved, the per-proxy
// p50/p99, and fails on any removed or re-sent resource or stream error.
// The proxies come from 25 loopback addresses, 200 from each, within the
// default limit of streams per address.
func BenchmarkReconnectStorm(b *testing.B) {
	raiseFDLimit(b, 4*stormProxies)
	m := newMeshWith(b, func(o *server.Options) { // the defaults
		o.AdmissionRate, o.AdmissionBurst, o.MaxStreamsPerPeer = 0, 0, 0
	})
	populate(b, m, stormVIPs)
	held := heldVersions(b, m)
	for b.Loop() {
		var (
			wg       sync.WaitGroup
			failures atomic.Int64
			firstErr atomic.Value
			mu       sync.Mutex
			lat      latencies
		)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		start := time.Now()
		for p := range stormProxies {
			wg.Go(func() {
				clusters := proxyClusters(p)
				if err := reconnect(ctx, m.addr, p, clusters, held); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(start))
				mu.Unlock()
			})
		}
		wg.Wait()
		cancel()
		if n := failures.Load(); n > 0 {
			b.Fatalf("%d of %d proxies failed to re-resolve; first: %v", n, stormProxies, firstErr.Load())
		}
		slices.Sort(lat)
		b.ReportMetric(lat[len(lat)-1].Seconds(), "all-s")
		lat.report(b, time.Millisecond, "ms")
	}
}

// proxyClusters are the clusters proxy p holds: 20 of the VIPs, spread so
// that every VIP is held by many proxies.
func proxyClusters(p int) []string {
	out := make([]string, stormClusters)
	for k := range out {
		out[k] = names.Cluster(benchVIP((p*7+k*53)%stormVIPs), false)
	}
	return out
}

// heldVersions are the versions proxies held before the restart: what
// another control plane on the same registry serves, which, derived from
// content, is what this one will serve too.
func heldVersions(tb testing.TB, m *mesh) map[string]map[string]string {
	tb.Helper()
	other := controlplane.New(controlplane.Options{Source: m.store})
	out := map[string]map[string]string{cds: {}, eds: {}}
	for v := range stormVIPs {
		name := names.Cluster(benchVIP(v), false)
		other.Discovery.Acquire(context.Background(), name)
		for _, typ := range []string{cds, eds} {
			version, ok := other.Cache.Version(cache.Item{TypeURL: typ, Name: name})
			if !ok {
				tb.Fatalf("no %s version for %s", typ, name)
			}
			out[typ][name] = version
		}
	}
	return out
}

// reconnect is one proxy coming back: it re-subscribes its clusters with
// the versions it holds, then waits for a barrier answer behind them.
func reconnect(ctx context.Context, addr string, p int, clusters []string, held map[string]map[string]string) error {
	conn, err := grpcDialFrom(addr, 1+p/200)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := &corev3.Node{Id: fmt.Sprintf("storm-%d", p), Cluster: "orders"}
	for _, typ := range []string{cds, eds} {
		initial := make(map[string]string, len(clusters))
		for _, c := range clusters {
			initial[c] = held[typ][c]
		}
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: clusters, InitialResourceVersions: initial}
		if typ == cds {
			req.Node = node
		}
		if err := stream.Send(req); err != nil {
			return err
		}
	}
	barrier := fmt.Sprintf("barrier-%d.vip", p)
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: cds, ResourceNamesSubscribe: []string{barrier}}); err != nil {
		return err
	}
	// The first answer must be the barrier's: everything before it was
	// already held.
	r, err := stream.Recv()
	if err != nil {
		return err
	}
	if !slices.Equal(r.GetRemovedResources(), []string{barrier}) || len(r.GetResources()) != 0 {
		return fmt.Errorf("proxy %d was sent %s resources %d, removed %v; want nothing before its barrier",
			p, r.GetTypeUrl(), len(r.GetResources()), r.GetRemovedResources())
	}
	return nil
}
