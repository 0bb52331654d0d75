package consul

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/internal/testlog"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/consul/consultest"
)

// EnvOutageTTL sets the TTL of TestConsulOutageLongerThanTTL's instances;
// its outage lasts twice as long. The default keeps `make test` short;
// RELIABILITY.md records a run with XSPACE_OUTAGE_TTL=30s (a 60 s outage).
const EnvOutageTTL = "XSPACE_OUTAGE_TTL"

// TestConsulOutageLongerThanTTL stops a Consul server for twice its
// instances' TTL while they heartbeat through meshd, as `meshctl instance
// register --heartbeat` does, every third of it. Consul brings every TTL
// check back critical; the instances are in grace (their lease restarts
// when Consul returns), so a stream holding fifteen clusters loses no
// endpoint, during the outage or after it, until the heartbeats have
// renewed every lease.
func TestConsulOutageLongerThanTTL(t *testing.T) {
	if consulBin == "" {
		t.SkipNow()
	}
	t.Parallel()
	ttl := outageTTL(t)
	m := newMeshOn(t, newEnvOn(t, consultest.StartServer(t, consulBin), Options{
		AllowStale: true, WarningIsUp: true, QueryTimeout: 10 * time.Second, // slow is not down
	}))
	f := m.fleet(t, 15, 2, ttl)
	h := m.holder(t, "orders-1")
	h.hold(f.clusters()...)

	m.agent.Stop(t)
	m.healthy(false, 10*time.Second)
	time.Sleep(2 * ttl) // slow peer: Consul, down, stays down two TTLs while the fleet heartbeats in vain
	during := h.lost()
	m.agent.Restart(t)
	back := time.Now()

	m.healthy(true, 2*ttl+10*time.Second)
	ready := time.Since(back)
	f.renewed(t, m, 2*ttl+10*time.Second)
	renewed := time.Since(back)
	mark(t, m, h, f.vips, 1)
	converged := time.Since(back)
	after := h.lost()
	t.Logf("outage %s with %s TTLs, %d instances in %d VIPs: store ready %s, leases renewed %s and a change delivered %s after Consul was back; "+
		"removed during: %d clusters, %d endpoints, %d empty assignments; after: %d clusters, %d endpoints, %d empty assignments",
		2*ttl, ttl, len(f.vips)*2, len(f.vips), ready.Round(time.Millisecond), renewed.Round(time.Millisecond), converged.Round(time.Millisecond),
		during.clustersRemoved, during.endpointsRemoved, during.emptyAssignments,
		after.clustersRemoved-during.clustersRemoved, after.endpointsRemoved-during.endpointsRemoved, after.emptyAssignments-during.emptyAssignments)
	if after.clustersRemoved+after.endpointsRemoved+after.emptyAssignments != 0 {
		t.Fatalf("the outage cost the holder %d clusters, %d endpoints, %d empty assignments: %v",
			after.clustersRemoved, after.endpointsRemoved, after.emptyAssignments, after.log)
	}
	if n := m.metric("xspace_registry_lease_expirations_total"); n != 0 {
		t.Fatalf("%v leases expired; the outage explains every missed heartbeat", n)
	}
}

// outageTTL is the TTL of TestConsulOutageLongerThanTTL: $XSPACE_OUTAGE_TTL,
// or 6s. After Consul returns, the fleet must renew every lease within a
// TTL; with other Consul tests running beside it on two loaded cores that
// has taken up to 4.6 s, so 3 s failed now and then.
func outageTTL(t *testing.T) time.Duration {
	v := os.Getenv(EnvOutageTTL)
	if v == "" {
		return 6 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%s: %v", EnvOutageTTL, v, err)
	}
	return d
}

// TestSelfPreservationHoldsAPartitionedFleet: a single instance that stops
// heartbeating expires; then the whole fleet stops (a partition between it
// and meshd): more than 15 % of the renewing fleet missed its lease within
// the window, so self-preservation engages and no endpoint is taken from
// proxies, visibly (metric, health, leases, one log line); when heartbeats
// resume it disengages.
func TestSelfPreservationHoldsAPartitionedFleet(t *testing.T) {
	if consulBin == "" {
		t.SkipNow()
	}
	t.Parallel()
	logs := &testlog.Buffer{}
	m := newMesh(t, Options{
		WarningIsUp: true, Logger: logs.Logger(), SweepInterval: 100 * time.Millisecond,
		QueryTimeout: 10 * time.Second, // slow is not down: an outage would give every lease a grace
	})
	const ttl = 2 * time.Second
	f := m.fleet(t, 4, 3, ttl)
	h := m.holder(t, "orders-1")
	h.hold(f.clusters()...)

	// One instance dies: it expires, as it would in a registry without
	// self-preservation.
	f.stop("svc0", "i0")
	h.await(10*time.Second, "the dead instance's endpoint removed", func() bool { return !h.has("svc0.vip", "10.0.0.1") })
	if n := m.metric("xspace_registry_lease_expirations_total"); n != 1 {
		t.Fatalf("%v lease expirations, want 1", n)
	}

	// Partition: the eleven others go silent.
	f.stopAll()
	eventually(t, 20*time.Second, func() error {
		if h := m.s.Health(); !h.SelfPreservation || h.Overdue != 11 {
			return fmt.Errorf("health %+v, want self-preservation holding 11 overdue instances", h)
		}
		return nil
	})
	if l := m.s.Leases("svc1"); l["i0"] != registry.LeaseOverdue {
		t.Errorf("leases of svc1 %v, want overdue", l)
	}
	if v := m.metric("xspace_registry_self_preservation"); v != 1 {
		t.Errorf("xspace_registry_self_preservation = %v", v)
	}
	mark(t, m, h, f.vips, 1)
	if l := h.lost(); l.endpointsRemoved != 1 || l.emptyAssignments != 0 {
		t.Fatalf("during the partition the holder lost %d endpoints (%d assignments emptied), want only the dead one: %v",
			l.endpointsRemoved, l.emptyAssignments, l.log)
	}

	// Heartbeats resume: expiry resumes.
	f.startAll(t, m)
	eventually(t, 10*time.Second, func() error {
		if h := m.s.Health(); h.SelfPreservation || h.Overdue != 0 {
			return fmt.Errorf("health %+v, want self-preservation off", h)
		}
		return nil
	})
	if on, off := logs.Count("self-preservation on"), logs.Count("self-preservation off"); on != 1 || off != 1 {
		t.Errorf("logged self-preservation on %d times and off %d times, want once each", on, off)
	}
	if l := h.lost(); l.endpointsRemoved != 1 {
		t.Fatalf("the holder lost %d endpoints, want only the dead one: %v", l.endpointsRemoved, l.log)
	}
}

// fleet is VIPs of instances registered through meshd with a TTL, each
// heartbeating every third of it until stopped, as `meshctl instance
// register --heartbeat` does.
type fleet struct {
	vips []string
	per  int
	ttl  time.Duration

	mu    sync.Mutex
	beats map[string]context.CancelFunc // vip/id -> stop
}

func (m *mesh) fleet(t *testing.T, vips, per int, ttl time.Duration) *fleet {
	t.Helper()
	f := &fleet{per: per, ttl: ttl, beats: map[string]context.CancelFunc{}}
	for v := range vips {
		f.vips = append(f.vips, fmt.Sprintf("svc%d", v))
	}
	f.startAll(t, m)
	t.Cleanup(f.stopAll)
	return f
}

func (f *fleet) clusters() []string {
	var out []string
	for _, v := range f.vips {
		out = append(out, v+".vip")
	}
	return out
}

// startAll registers every instance and starts its heartbeats.
func (f *fleet) startAll(t *testing.T, m *mesh) {
	t.Helper()
	for v, vip := range f.vips {
		for i := range f.per {
			inst := instance(vip, fmt.Sprintf("i%d", i), fmt.Sprintf("10.0.%d.%d", v, i+1))
			inst.TTL = registry.Duration(f.ttl)
			m.register(inst)
			f.beat(m.s, inst)
		}
	}
}

// beat heartbeats inst every third of its TTL until stopped; failures (an
// outage) are retried at the next beat, and an instance Consul forgot is
// registered again.
func (f *fleet) beat(s *Store, inst registry.Instance) {
	ctx, cancel := context.WithCancel(context.Background())
	f.mu.Lock()
	f.beats[inst.VIP+"/"+inst.ID] = cancel
	f.mu.Unlock()
	go func() {
		t := time.NewTicker(f.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := s.Heartbeat(ctx, inst.VIP, inst.ID); errors.Is(err, registry.ErrNotFound) {
				_, _ = s.Register(ctx, inst)
			}
		}
	}()
}

func (f *fleet) stop(vip, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cancel := f.beats[vip+"/"+id]; cancel != nil {
		cancel()
		delete(f.beats, vip+"/"+id)
	}
}

func (f *fleet) stopAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, cancel := range f.beats {
		cancel()
		delete(f.beats, k)
	}
}

// renewed waits until every watch is current and every lease of the fleet
// is ok: the heartbeats reached Consul.
func (f *fleet) renewed(t *testing.T, m *mesh, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() error {
		for _, vip := range f.vips {
			st, current, _ := m.s.watched(context.Background(), vip, false)
			leases := m.s.leases.leasesOf(vip, st.leases, m.s.outage(), time.Now())
			if !current || len(leases) != f.per {
				return fmt.Errorf("watch of %s current %v, leases %v", vip, current, leases)
			}
			for id, l := range leases {
				if l != registry.LeaseOK {
					return fmt.Errorf("%s/%s lease %s", vip, id, l)
				}
			}
		}
		return nil
	})
}
