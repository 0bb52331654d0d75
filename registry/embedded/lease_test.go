package embedded

import (
	"context"
	"errors"
	"fmt"
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

// selfPreservationMetric is the exposition of the gauge when it is v.
func selfPreservationMetric(v int) string {
	return fmt.Sprintf(`
# HELP xspace_registry_self_preservation 1 while lease expiry is suspended because too many leases expired at once.
# TYPE xspace_registry_self_preservation gauge
xspace_registry_self_preservation %d
`, v)
}

// silence registers n instances of web, lets all of them but the first
// `silent` heartbeat, and moves the clock past the silent ones' lease.
func silence(e *env, n, silent int) {
	for i := range n {
		e.register(instance("web", i))
	}
	e.clock.Advance(5 * time.Second)
	for i := silent; i < n; i++ {
		e.heartbeat("web", fmt.Sprintf("web-%d", i))
	}
	e.clock.Advance(6 * time.Second)
}

func TestSelfPreservation(t *testing.T) {
	e := newEnv(t)
	silence(e, 10, 5) // a partition: half the instances go silent at once
	for range 3 {
		e.s.Sweep()
	}
	if got := len(e.ids("web")); got != 10 {
		t.Fatalf("in self-preservation: %d instances, want all 10 kept", got)
	}
	if h := e.s.Health(); h != (Health{SelfPreservation: true, Instances: 10, Overdue: 5, VIPs: 1}) {
		t.Errorf("Health() = %+v, want self-preservation with 5 overdue", h)
	}
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(selfPreservationMetric(1)), "xspace_registry_self_preservation"); err != nil {
		t.Error(err)
	}

	// The partition heals for four of the five; the fifth really is dead.
	for i := range 4 {
		e.heartbeat("web", fmt.Sprintf("web-%d", i))
	}
	e.s.Sweep()
	if got := e.ids("web"); len(got) != 9 || got[0] != "web-0" || got[4] != "web-5" {
		t.Errorf("after heartbeats resumed: instances %v, want all but web-4", got)
	}
	if h := e.s.Health(); h.SelfPreservation || h.Overdue != 0 {
		t.Errorf("Health() = %+v, want self-preservation off and nothing overdue", h)
	}
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(selfPreservationMetric(0)), "xspace_registry_self_preservation"); err != nil {
		t.Error(err)
	}
}

func TestSelfPreservationExitsWhenAllHeartbeatsResume(t *testing.T) {
	e := newEnv(t)
	silence(e, 10, 5)
	e.s.Sweep()
	if !e.s.Health().SelfPreservation {
		t.Fatal("self-preservation off after 5 of 10 went silent")
	}
	for i := range 5 {
		e.heartbeat("web", fmt.Sprintf("web-%d", i))
	}
	e.s.Sweep()
	if h := e.s.Health(); h != (Health{Instances: 10, VIPs: 1}) {
		t.Errorf("Health() = %+v, want 10 instances, self-preservation off", h)
	}
	if got := testutil.ToFloat64(e.s.metrics.expirations); got != 0 {
		t.Errorf("expirations = %v, want 0", got)
	}
}

func TestSingleDeadInstanceExpires(t *testing.T) {
	tests := []struct {
		name      string
		instances int
	}{
		{"alone", 1},
		{"among 10", 10},
		{"among 100", 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			silence(e, tt.instances, 1)
			e.s.Sweep()
			if got := len(e.ids("web")); got != tt.instances-1 {
				t.Errorf("%d instances left, want %d", got, tt.instances-1)
			}
			if e.s.Health().SelfPreservation {
				t.Error("self-preservation on for a single dead instance")
			}
		})
	}
}

// TestSelfPreservationCountsRecentExpiries checks that deaths spread over a
// few sweeps add up: the second of 10 instances to die within one
// DefaultTTL is kept until the first expiry leaves the window.
func TestSelfPreservationCountsRecentExpiries(t *testing.T) {
	e := newEnv(t)
	silence(e, 10, 1)
	e.s.Sweep() // web-0 expires
	if got := len(e.ids("web")); got != 9 {
		t.Fatalf("%d instances, want 9", got)
	}
	for i := 2; i < 10; i++ { // web-1 goes silent too
		e.heartbeat("web", fmt.Sprintf("web-%d", i))
	}
	e.clock.Advance(ttl)
	for i := 2; i < 10; i++ {
		e.heartbeat("web", fmt.Sprintf("web-%d", i))
	}
	e.s.Sweep()
	if got := len(e.ids("web")); got != 9 || !e.s.Health().SelfPreservation {
		t.Fatalf("second death within the window: %d instances, self-preservation %v; want 9 kept and on",
			got, e.s.Health().SelfPreservation)
	}
	for range 3 { // let the first expiry age out of the DefaultTTL window
		e.clock.Advance(ttl)
		for i := 2; i < 10; i++ {
			e.heartbeat("web", fmt.Sprintf("web-%d", i))
		}
		e.s.Sweep()
	}
	if got := e.ids("web"); len(got) != 8 || e.s.Health().SelfPreservation {
		t.Errorf("after the window: instances %v, self-preservation %v; want web-1 expired and off",
			got, e.s.Health().SelfPreservation)
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
	if h := e.s.Health(); h != (Health{Instances: 3, VIPs: 2}) {
		t.Errorf("Health() = %+v", h)
	}
}
