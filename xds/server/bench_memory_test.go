//go:build unix

package server_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/prisma-systems/xspace-mesh/names"
)

// BenchmarkStreamMemory measures the control plane's memory per delta
// stream: N proxies, each on its own connection, hold 20 clusters each (CDS
// and EDS subscribed, answered and ACKed) from a pool of 1,000 VIPs. The
// server runs in a child process and reports its own runtime.MemStats
// after two GCs: once with no stream open (the pool already resolved and
// cached by a warm-up proxy that then left, so per-VIP state is in the
// baseline), once holding the N streams. The difference divided by N is
// the cost of one stream: heap in use (HeapInuse), goroutine stacks
// (StackInuse), their sum, and the growth of RSS in the first iteration.
func BenchmarkStreamMemory(b *testing.B) {
	for _, n := range []int{1000, 10_000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) { benchStreamMemory(b, n) })
	}
}

func benchStreamMemory(b *testing.B, streams int) {
	raiseFDLimit(b, uint64(streams)+256)
	srv := startServerProcess(b, memPoolVIPs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	pool := make([]string, memPoolVIPs)
	for v := range pool {
		pool[v] = names.Cluster(benchVIP(v), false)
	}
	idle := srv.mem(b)
	warm, err := holdClusters(ctx, srv.xds, -1, pool)
	if err != nil {
		b.Fatal(err)
	}
	_ = warm.Close()
	srv.waitStreams(b, 0, idle.Goroutines)

	var heap, stack, rssFirst, goroutines float64
	iters := 0
	for b.Loop() {
		base := srv.mem(b)
		if base.Watched != memPoolVIPs {
			b.Fatalf("baseline: %d VIPs watched, want the pool of %d", base.Watched, memPoolVIPs)
		}
		conns := openProxies(b, ctx, srv.xds, streams)
		b.StopTimer()
		held := srv.settled(b)
		if held.Streams != streams {
			b.Fatalf("server holds %d streams, want %d", held.Streams, streams)
		}
		if path := os.Getenv(heapProfileEnv); path != "" {
			srv.heapProfile(b, path)
		}
		per := func(after, before uint64) float64 { return (float64(after) - float64(before)) / float64(streams) }
		heap += per(held.HeapInuse, base.HeapInuse)
		stack += per(held.StackInuse, base.StackInuse)
		if iters == 0 {
			// Later iterations reuse memory the runtime kept from the first.
			rssFirst = per(held.RSS, base.RSS)
		}
		goroutines += float64(held.Goroutines-base.Goroutines) / float64(streams)
		iters++
		closeAll(conns)
		srv.waitStreams(b, 0, base.Goroutines)
		b.StartTimer()
	}
	n := float64(iters)
	b.ReportMetric(heap/n, "heap-B/stream")
	b.ReportMetric(stack/n, "stack-B/stream")
	b.ReportMetric((heap+stack)/n, "total-B/stream")
	b.ReportMetric(rssFirst, "rss-B/stream")
	b.ReportMetric(goroutines/n, "goroutines/stream")
}
