package embedded

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// ttl is the lease of every instance() in these tests.
const ttl = 10 * time.Second

func TestLeaseExpiry(t *testing.T) {
	e := newEnv(t)
	e.register(instance("web", 1))
	e.clock.Advance(ttl)
	e.s.Sweep()
	if got := e.ids("web"); len(got) != 1 {
		t.Fatalf("after exactly one TTL: instances %v, want web-1 still there", got)
	}
	e.clock.Advance(time.Millisecond)
	e.s.Sweep()
	if got := e.ids("web"); len(got) != 0 {
		t.Fatalf("after one TTL and 1ms: instances %v, want none", got)
	}
	if got := testutil.ToFloat64(e.s.metrics.expirations); got != 1 {
		t.Errorf("expirations = %v, want 1", got)
	}
	e.reopen()
	if got := e.ids("web"); len(got) != 0 {
		t.Errorf("after reopen: instances %v, want the expiry persisted", got)
	}
}

func TestHeartbeatRenewsLease(t *testing.T) {
	e := newEnv(t)
	e.register(instance("web", 1))
	for range 5 {
		e.clock.Advance(8 * time.Second)
		e.heartbeat("web", "web-1")
		e.s.Sweep()
	}
	if got := e.ids("web"); len(got) != 1 {
		t.Fatalf("after 40s of heartbeats every 8s: instances %v, want web-1", got)
	}
	insts, _ := e.s.Instances(context.Background(), "web")
	if !insts[0].RenewedAt.Equal(e.clock.Now()) {
		t.Errorf("RenewedAt = %v, want %v", insts[0].RenewedAt, e.clock.Now())
	}
	e.clock.Advance(ttl + time.Millisecond)
	e.s.Sweep()
	if got := e.ids("web"); len(got) != 0 {
		t.Errorf("after heartbeats stopped: instances %v, want none", got)
	}
	if err := e.s.Heartbeat(context.Background(), "web", "web-1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("heartbeat of an expired instance = %v, want ErrNotFound", err)
	}
}

// TestSweepsFollowEveryDeadline: sweeps skip the leases until the earliest
// deadline they saw passes (lease.go, nextDue), yet every instance still
// expires at the first sweep after its own deadline: one whose heartbeats
// moved its deadline later is looked at again and kept, and one registered
// again with a shorter TTL makes the earliest deadline earlier.
func TestSweepsFollowEveryDeadline(t *testing.T) {
	e := newEnv(t)
	start := e.clock.Now()
	e.register(instance("web", 1)) // deadline 10s
	slow := instance("web", 2)
	slow.TTL = registry.Duration(30 * time.Second)
	e.register(slow)
	e.s.Sweep()
	step := func(d time.Duration, want ...string) {
		t.Helper()
		e.clock.Advance(d)
		e.s.Sweep()
		if got := e.ids("web"); !slices.Equal(got, want) {
			t.Fatalf("at %s: instances %v, want %v", e.clock.Now().Sub(start), got, want)
		}
	}
	step(6*time.Second, "web-1", "web-2")
	e.heartbeat("web", "web-1")           // deadline 16s
	step(5*time.Second, "web-1", "web-2") // 11s: past web-1's first deadline, renewed since
	fast := instance("web", 2)
	fast.TTL = registry.Duration(2 * time.Second)
	e.register(fast)                      // deadline 13s, before web-1's
	step(2*time.Second, "web-1", "web-2") // 13s: exactly its TTL
	step(time.Second/2, "web-1")          // 13.5s
	step(2*time.Second, "web-1")          // 15.5s
	step(time.Second)                     // 16.5s
}

func TestHeartbeatUnknown(t *testing.T) {
	e := newEnv(t)
	e.register(instance("web", 1))
	tests := []struct{ name, vip, id, msg string }{
		{"unknown vip", "nope", "web-1", "vip not found"},
		{"unknown instance", "web", "web-2", "instance not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.s.Heartbeat(context.Background(), tt.vip, tt.id)
			if !errors.Is(err, registry.ErrNotFound) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Heartbeat(%s, %s) = %v, want ErrNotFound saying %q", tt.vip, tt.id, err, tt.msg)
			}
		})
	}
}

func TestRestartGrace(t *testing.T) {
	e := newEnv(t)
	e.register(instance("web", 1))
	e.register(instance("web", 2))
	_ = e.s.Close()
	e.clock.Advance(time.Hour) // the registry was down far longer than the lease
	e.open()
	e.s.Sweep()
	insts, err := e.s.Instances(context.Background(), "web")
	if err != nil || len(insts) != 2 {
		t.Fatalf("right after reopen: instances %v (%v), want both", insts, err)
	}
	if !insts[0].RenewedAt.Equal(e.clock.Now()) {
		t.Errorf("RenewedAt after reopen = %v, want the reopen time %v", insts[0].RenewedAt, e.clock.Now())
	}
	e.clock.Advance(ttl)
	e.heartbeat("web", "web-2")
	e.s.Sweep()
	if got := e.ids("web"); len(got) != 2 {
		t.Fatalf("one TTL after reopen: instances %v, want both", got)
	}
	e.clock.Advance(time.Millisecond)
	e.s.Sweep()
	if diff := cmp.Diff([]string{"web-2"}, e.ids("web")); diff != "" {
		t.Errorf("after the grace lease, only the instance that sent a heartbeat remains (-want +got):\n%s", diff)
	}
}

func TestHealthAndGauges(t *testing.T) {
	e := newEnv(t)
	e.register(instance("web", 1))
	e.register(instance("web", 2))
	e.register(instance("api", 1))
	if _, err := e.s.SetStatus(context.Background(), "web", "web-2", registry.StatusDown); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP xspace_registry_instances Instances in the embedded registry, by status.
# TYPE xspace_registry_instances gauge
xspace_registry_instances{status="DOWN"} 1
xspace_registry_instances{status="DRAINING"} 0
xspace_registry_instances{status="OUT_OF_SERVICE"} 0
xspace_registry_instances{status="STARTING"} 0
xspace_registry_instances{status="UP"} 2
# HELP xspace_registry_vips VIPs in the embedded registry.
# TYPE xspace_registry_vips gauge
xspace_registry_vips 2
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "xspace_registry_instances", "xspace_registry_vips"); err != nil {
		t.Error(err)
	}
	if h := e.s.Health(); h != (Health{Instances: 3, Renewing: 3, VIPs: 2}) {
		t.Errorf("Health() = %+v", h)
	}
}
