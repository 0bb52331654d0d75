package consul

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/xds/probe"
)

// BenchmarkChangeToCLA measures how long a change made in Consul (a check
// flipping between passing and critical) takes to reach a delta stream
// subscribed to the VIP as a new ClusterLoadAssignment, next to how long
// Consul itself takes to wake a blocking query on the same service: the
// difference is what meshd adds.
//
//	go test -run '^$' -bench ChangeToCLA -benchtime 200x ./registry/consul/
func BenchmarkChangeToCLA(b *testing.B) {
	m := newMesh(b, Options{WarningIsUp: true})
	m.native(&capi.AgentServiceRegistration{ID: "b0", Name: "bench", Address: "10.0.0.1", Port: 80}, capi.HealthPassing)
	m.native(&capi.AgentServiceRegistration{ID: "b1", Name: "bench", Address: "10.0.0.2", Port: 80}, capi.HealthPassing)
	c := m.delta(b, "bench-1")
	c.resolve("bench.vip")

	// Consul's own wake-up: an independent blocking query on the service.
	woke := make(chan time.Time, 1)
	indexed := make(chan struct{}) // closed once the query has an index to block on
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		var index uint64
		defer func() {
			if index == 0 {
				close(indexed)
			}
		}()
		for ctx.Err() == nil {
			q := (&capi.QueryOptions{WaitIndex: index, WaitTime: time.Minute}).WithContext(ctx)
			_, meta, err := m.raw.Health().Service("bench", "", false, q)
			if err != nil {
				continue
			}
			if index != 0 && meta.LastIndex != index {
				woke <- time.Now()
			}
			if index == 0 {
				close(indexed)
			}
			index = meta.LastIndex
		}
	}()
	<-indexed // its next query blocks

	var consul, cla []time.Duration
	status := []string{capi.HealthCritical, capi.HealthPassing}
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if err := m.raw.Agent().UpdateTTL("ttl:b0", "", status[i%2]); err != nil {
			b.Fatal(err)
		}
		r := c.recv()
		got := time.Now()
		if r.GetTypeUrl() != eds {
			b.Fatalf("got %s", r.GetTypeUrl())
		}
		select {
		case t := <-woke:
			consul = append(consul, t.Sub(start))
		case <-time.After(10 * time.Second):
			b.Fatal("the independent blocking query did not wake")
		}
		cla = append(cla, got.Sub(start))
	}
	report(b, "consul-wake", consul)
	report(b, "cla", cla)
	above := make([]time.Duration, len(cla))
	for i := range cla {
		above[i] = cla[i] - consul[i]
	}
	report(b, "above-consul", above)
}

// BenchmarkOnDemandResolve measures a proxy resolving a VIP nobody holds
// yet, through Consul: a new delta stream subscribes to the Cluster, then to
// its ClusterLoadAssignment, as probe.Resolve (and Envoy's on-demand CDS) do.
// Every iteration resolves a different VIP (of a pool of 500, each with
// three instances), so each is the start of its watch, whose first queries
// (health and KV) the lookup shares.
//
//	go test -run '^$' -bench OnDemandResolve -benchtime 200x ./registry/consul/
func BenchmarkOnDemandResolve(b *testing.B) {
	const pool = 500
	m := newMesh(b, Options{WarningIsUp: true})
	for i := range pool {
		vip := fmt.Sprintf("svc-%d", i)
		for j := range 3 {
			m.native(&capi.AgentServiceRegistration{
				ID: fmt.Sprintf("%s-%d", vip, j), Name: vip, Address: fmt.Sprintf("10.0.%d.%d", i%250, j+1), Port: 80,
			}, capi.HealthPassing)
		}
	}
	node := &corev3.Node{Id: "bench-1", Cluster: "orders"}
	var cds, eds []time.Duration
	for i := 0; b.Loop(); i++ {
		if i == pool {
			b.Fatalf("ran out of unresolved VIPs; use -benchtime %dx or less", pool)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := probe.Resolve(ctx, m.conn, node, fmt.Sprintf("svc-%d.vip", i))
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if n := len(res.Endpoints.GetEndpoints()[0].GetLbEndpoints()); n != 3 {
			b.Fatalf("%d endpoints, want 3", n)
		}
		cds = append(cds, res.ClusterAfter)
		eds = append(eds, res.EndpointsAfter)
	}
	report(b, "cds", cds)
	report(b, "cds+eds", eds)

	// For scale: Consul's own answer to the health query alone, from here.
	var raw []time.Duration
	for i := range len(cds) {
		start := time.Now()
		if _, _, err := m.raw.Health().Service(fmt.Sprintf("svc-%d", i), "", false, nil); err != nil {
			b.Fatal(err)
		}
		raw = append(raw, time.Since(start))
	}
	report(b, "consul-query", raw)
}

// report adds the p50 and p99 of ds, in milliseconds, to the benchmark's output.
func report(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) float64 {
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), name+"-p50-ms")
	b.ReportMetric(at(0.99), name+"-p99-ms")
}
