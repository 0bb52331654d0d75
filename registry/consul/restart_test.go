package consul

import (
	"fmt"
	"sync"
	"testing"
	"time"

	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/internal/testlog"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/consul/consultest"
)

// TestConsulRestartUnderHeldStreams restarts a Consul server (kill -9, same
// data directory and ports) three times under a stream holding ten
// clusters, five of instances registered through meshd (TTL checks, which
// a restarted agent brings back critical), five of native ones. The
// server's raft log is long, so after each restart it answers reads from
// the part it has replayed, older than what meshd served, for a second or
// more. Nothing the stream holds is ever removed, before, during or after;
// each restart is one outage, logged once each way.
func TestConsulRestartUnderHeldStreams(t *testing.T) {
	if consulBin == "" {
		t.SkipNow()
	}
	t.Parallel()
	logs := &testlog.Buffer{}
	agent := consultest.StartServer(t, consulBin)
	// A long query timeout: on a loaded machine a slow answer must not
	// count as an outage of its own.
	m := newMeshOn(t, newEnvOn(t, agent, Options{
		AllowStale: true, WarningIsUp: true, QueryTimeout: 10 * time.Second,
		Logger: logs.Logger(),
	}))
	const rounds = 3
	names, clusters := tenVIPs(t, m)
	h := m.holder(t, "orders-1")
	h.hold(clusters...)
	var during, after, seen losses // seen: lost up to the last checkpoint
	for round := range rounds {
		m.agent.Stop(t)
		m.agent.Restart(t)
		back := time.Now()
		during, seen = during.plus(h.lost().minus(seen)), h.lost()
		// A change after the restart, in every VIP, proves that each watch
		// has followed Consul past it.
		mark(t, m, h, names, round)
		t.Logf("restart %d: a change reached the stream %s after Consul was back", round+1, time.Since(back).Round(time.Millisecond))
		m.healthy(true, 10*time.Second)
		after, seen = after.plus(h.lost().minus(seen)), h.lost()
	}
	t.Logf("%d restarts under a stream holding %d clusters: removed during: %d clusters, %d endpoints; after: %d clusters, %d endpoints; "+
		"%v answers older than served replaced by consistent reads", rounds, len(clusters),
		during.clustersRemoved, during.endpointsRemoved, after.clustersRemoved, after.endpointsRemoved,
		m.metric("xspace_registry_consul_watch_wakeups_total", "outcome", "behind"))
	if l := h.lost(); l.clustersRemoved+l.endpointsRemoved+l.emptyAssignments != 0 {
		t.Fatalf("the restarts cost the holder %d clusters, %d endpoints, %d empty assignments: %v",
			l.clustersRemoved, l.endpointsRemoved, l.emptyAssignments, l.log)
	}
	if n := m.metric("xspace_registry_consul_outages_total"); n != rounds {
		t.Errorf("%v outages counted, want one per restart (%d)", n, rounds)
	}
	down, up := logs.Count("consul unreachable"), logs.Count("consul reachable again")
	if down != rounds || up != rounds {
		t.Errorf("logged %d \"unreachable\" and %d \"reachable again\" lines, want %d of each:\n%s",
			down, up, rounds, logs.Lines("consul unreachable", "consul reachable again"))
	}
}

// tenVIPs registers ten VIPs of three instances after a long raft log:
// five through meshd (TTL checks, which a restarted agent brings back
// critical), five natively.
func tenVIPs(t *testing.T, m *mesh) (names, clusters []string) {
	t.Helper()
	fillRaftLog(t, m.raw, 400)
	for v := range 10 {
		name := fmt.Sprintf("svc%d", v)
		for i := range 3 {
			addr := fmt.Sprintf("10.0.%d.%d", v, i+1)
			if v%2 == 0 {
				inst := instance(name, fmt.Sprintf("i%d", i), addr)
				inst.TTL = registry.Duration(time.Hour)
				m.register(inst)
				continue
			}
			m.native(&capi.AgentServiceRegistration{ID: fmt.Sprintf("%s-i%d", name, i), Name: name, Address: addr, Port: 8080}, "")
		}
		names, clusters = append(names, name), append(clusters, name+".vip")
	}
	return names, clusters
}

// fillRaftLog writes n transactions of 64 KV keys each, so that a restarted
// server takes a while to replay its log once it has elected itself leader,
// and answers reads from what it has replayed so far meanwhile.
func fillRaftLog(t *testing.T, c *capi.Client, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				ops := make(capi.TxnOps, 64)
				for k := range ops {
					ops[k] = &capi.TxnOp{KV: &capi.KVTxnOp{Verb: capi.KVSet, Key: fmt.Sprintf("filler/%d/%d", i, k), Value: []byte("x")}}
				}
				ok, resp, _, err := c.Txn().Txn(ops, nil)
				if err == nil && !ok {
					err = fmt.Errorf("txn refused: %v", resp.Errors)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
