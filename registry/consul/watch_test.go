package consul

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// TestWatchFollowsOneVIPOnly: a watch runs two blocking queries for its VIP
// and nothing for others, reports changes to its instances and policy but
// not to other VIPs, serves Lookup from its last result, and stops its
// queries when the last watcher stops.
func TestWatchFollowsOneVIPOnly(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	e.register(instance("alpha", "a1", "10.0.0.1"))
	e.register(instance("beta", "b1", "10.0.1.1"))

	var calls atomic.Int64
	stop := e.s.Watch("alpha", func() { calls.Add(1) })
	stop2 := e.s.Watch("alpha", func() {}) // shares the same queries
	eventually(t, 5*time.Second, func() error {
		if q := e.metric("xspace_registry_consul_blocking_queries"); q != 2 {
			return fmt.Errorf("blocking queries = %v, want 2 for one watched VIP", q)
		}
		if _, ok, _ := e.s.watched(context.Background(), "alpha", false); !ok {
			return fmt.Errorf("watch has no current result yet")
		}
		return nil
	})
	if w := e.metric("xspace_registry_consul_watched_vips"); w != 1 {
		t.Fatalf("watched VIPs = %v, want 1", w)
	}
	// nothingBut registers a new instance of alpha, a barrier, and waits
	// until the watcher reported it and Lookup serves it; it then asserts
	// that the watcher was called once since base, for the barrier. The
	// health query reports changes in Consul's order, so a call an earlier
	// change made on it has been made by then. It returns the new base.
	barriers := 0
	nothingBut := func(base int64, what string) int64 {
		t.Helper()
		barriers++
		id := fmt.Sprintf("barrier-%d", barriers)
		e.register(instance("alpha", id, fmt.Sprintf("10.0.9.%d", barriers)))
		eventually(t, 5*time.Second, func() error {
			for _, in := range e.lookup("alpha").Instances {
				if in.ID == id && in.Status == registry.StatusUp && calls.Load() > base {
					return nil
				}
			}
			return fmt.Errorf("the watcher has not reported %s", id)
		})
		if n := calls.Load() - base; n != 1 {
			t.Fatalf("%s: the watcher was called %d times, want once (for the barrier instance)", what, n)
		}
		return calls.Load()
	}
	base := calls.Load()

	// Another VIP changes: not reported.
	e.register(instance("beta", "b2", "10.0.1.2"))
	base = nothingBut(base, "a change to beta")
	// An instance of alpha: reported, and Lookup serves it from the watch.
	e.register(instance("alpha", "a2", "10.0.0.2"))
	eventually(t, 5*time.Second, func() error {
		if calls.Load() == base {
			return fmt.Errorf("no call after alpha gained an instance")
		}
		return nil
	})
	queries := e.metric("xspace_registry_consul_requests_total", "op", opLookup, "result", "ok")
	fromWatch := e.metric("xspace_registry_consul_lookups_total", "source", sourceWatch)
	if svc := e.lookup("alpha"); len(svc.Instances) != 2+barriers {
		t.Fatalf("Lookup after the change: %+v", svc.Instances)
	}
	if e.metric("xspace_registry_consul_requests_total", "op", opLookup, "result", "ok") != queries ||
		e.metric("xspace_registry_consul_lookups_total", "source", sourceWatch) != fromWatch+1 {
		t.Error("Lookup of a watched VIP queried Consul instead of serving the watch's result")
	}
	// Alpha's policy: reported.
	base = calls.Load()
	if _, err := e.s.PutVIP(ctx, registry.VIP{Name: "alpha", Policy: registry.Policy{Protocol: registry.GRPC}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if calls.Load() == base {
			return fmt.Errorf("no call after alpha's policy changed")
		}
		if e.lookup("alpha").VIP.Policy.Protocol != registry.GRPC {
			return fmt.Errorf("lookup does not see the new policy yet")
		}
		return nil
	})
	// A heartbeat changes nothing a proxy sees: no call.
	base = nothingBut(calls.Load(), "before the heartbeat")
	if err := e.s.Heartbeat(ctx, "alpha", "a1"); err != nil {
		t.Fatal(err)
	}
	nothingBut(base, "a heartbeat")

	stop()
	stop() // idempotent
	if w := e.metric("xspace_registry_consul_watched_vips"); w != 1 {
		t.Fatalf("watched VIPs = %v after one of two watchers stopped, want 1", w)
	}
	stop2()
	eventually(t, 5*time.Second, func() error {
		if q := e.metric("xspace_registry_consul_blocking_queries"); q != 0 {
			return fmt.Errorf("blocking queries = %v after the last watcher stopped", q)
		}
		return nil
	})
	// No query runs any more (awaited above): nothing can call it.
	base = calls.Load()
	e.register(instance("alpha", "a3", "10.0.0.3"))
	if e.lookup("alpha").Instances == nil || calls.Load() != base {
		t.Fatal("a stopped watcher was called")
	}
}

// TestLookupOfUnwatchedVIPIsOneQuery: two requests (health and KV), and no
// request lists the catalog.
func TestLookupOfUnwatchedVIPIsOneQuery(t *testing.T) {
	e := newEnv(t, Options{})
	e.register(instance("gamma", "g1", "10.0.0.1"))
	before := e.metric("xspace_registry_consul_requests_total", "op", opLookup, "result", "ok")
	e.lookup("gamma")
	if n := e.metric("xspace_registry_consul_requests_total", "op", opLookup, "result", "ok") - before; n != 2 {
		t.Fatalf("Lookup made %v requests, want 2 (health and KV, in parallel)", n)
	}
	if n := e.metric("xspace_registry_consul_requests_total", "op", opRead, "result", "ok"); n != 0 {
		t.Fatalf("Lookup made %v catalog reads", n)
	}
}

// TestWatchFollowsARestartedConsul: a dev Consul restarts without its
// state, so its index starts low again; the watch starts over instead of
// blocking on an index that will not come back for a long time, and is
// current again as soon as Consul answers.
func TestWatchFollowsARestartedConsul(t *testing.T) {
	e := newEnv(t, Options{})
	for i := range 30 { // push the raft index up
		e.native(&capi.AgentServiceRegistration{ID: fmt.Sprintf("f%d", i), Name: "filler", Address: "10.9.0.1", Port: 80}, "")
	}
	e.native(&capi.AgentServiceRegistration{
		ID: "d1", Name: "delta", Address: "10.0.0.1", Port: 80,
		Meta: map[string]string{MetaInstanceID: "d1"},
	}, "")
	var calls atomic.Int64
	defer e.s.Watch("delta", func() { calls.Add(1) })()
	eventually(t, 5*time.Second, func() error {
		if _, ok, _ := e.s.watched(context.Background(), "delta", false); !ok {
			return fmt.Errorf("no result yet")
		}
		return nil
	})
	e.agent.Stop(t)
	e.agent.Restart(t) // dev mode: the catalog starts over; the agent re-syncs d1
	eventually(t, 10*time.Second, func() error {
		if e.s.Degraded() {
			return fmt.Errorf("still degraded")
		}
		return nil
	})
	base := calls.Load()
	e.native(&capi.AgentServiceRegistration{
		ID: "d2", Name: "delta", Address: "10.0.0.2", Port: 80,
		Meta: map[string]string{MetaInstanceID: "d2"},
	}, "")
	eventually(t, 5*time.Second, func() error {
		st, ok, _ := e.s.watched(context.Background(), "delta", false)
		if !ok || len(st.instances) != 2 || calls.Load() == base {
			return fmt.Errorf("watch did not follow the restarted Consul: %+v (current %v)", st.instances, ok)
		}
		return nil
	})
}
