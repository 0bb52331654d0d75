//go:build unix

package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/prisma-systems/xspace-mesh/internal/envoymodel"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

// BenchmarkLongLivedSidecar: what one long-lived Envoy sidecar costs meshd
// (issue 9). The sidecar (internal/envoymodel) touched 20,000 names over
// its life, 15,000 VIPs and 5,000 typos, and Envoy never unsubscribes one:
// it (re)connects holding all of them. The server runs in a child process
// with 15,000 VIPs registered (three instances each). Reported, above a
// baseline taken before the sidecar connects: in the first iteration the
// heap in use and RSS of everything the sidecar caused (resolving its
// 15,000 VIPs included: first-MiB); in later ones, with those VIPs still
// watched, the heap of the sidecar's stream alone (stream-MiB). And the
// time from the start of a registry write to the changed endpoints at the
// sidecar. Run with -benchtime 2x or more.
func BenchmarkLongLivedSidecar(b *testing.B) {
	const found, typos = 15_000, 5_000
	srv := startServerProcess(b, found)
	touched := make([]string, 0, found+typos)
	for i := range found {
		touched = append(touched, benchCluster(i))
		if i%(found/typos) == 0 {
			touched = append(touched, fmt.Sprintf("typo-%05d.vip", i))
		}
	}
	conn, err := grpcDial(srv.xds)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	var (
		lat    latencies
		stream float64
	)
	mib := func(a, b uint64) float64 { return (float64(a) - float64(b)) / (1 << 20) }
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		base := srv.memAt(b, "/mem?free=1")
		b.StartTimer()
		s, err := envoymodel.New(conn, envoymodel.Options{Node: &corev3.Node{Id: "long-lived", Cluster: "orders"}, Restore: touched})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		if err := s.WaitFor(ctx, func(v envoymodel.View) bool {
			return v.Stats().Received[eds] == found && v.Stats().Removed[cds] == server.DefaultMaxUnknownNames
		}); err != nil {
			b.Fatalf("re-subscribing %d names: %v (stats %+v)", len(touched), err, s.Stats())
		}
		b.StopTimer()
		held := srv.mem(b)
		addr := fmt.Sprintf("10.250.%d.%d", i>>8, i&0xff)
		start := srv.register(b, registry.Instance{VIP: benchVIP(7), ID: "moved", Address: addr})
		waitEndpoints(b, s, benchCluster(7), addr)
		lat = append(lat, time.Since(start))
		cancel()
		s.Close()
		srv.waitStreams(b, 0, base.Goroutines)
		if i == 0 {
			b.ReportMetric(mib(held.HeapInuse, base.HeapInuse), "heap-first-MiB")
			b.ReportMetric(mib(held.RSS, base.RSS), "rss-first-MiB")
		} else {
			stream += mib(held.HeapInuse, base.HeapInuse)
		}
		b.StartTimer()
	}
	if b.N > 1 {
		b.ReportMetric(stream/float64(b.N-1), "heap-stream-MiB")
	}
	lat.report(b, time.Millisecond, "change-ms")
}
