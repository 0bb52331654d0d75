package embedded

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prisma-systems/xspace-mesh/registry"
)

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
	if h := e.s.Health(); h != (Health{SelfPreservation: true, Instances: 10, Overdue: 5, Renewing: 10, VIPs: 1}) {
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
	if h := e.s.Health(); h != (Health{Instances: 10, Renewing: 10, VIPs: 1}) {
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

// openWith reopens e's directory with other self-preservation options.
func (e *env) openWith(minInstances int) {
	e.t.Helper()
	if err := e.s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.reg = prometheus.NewRegistry()
	s, err := Open(e.dir, Options{
		Registerer: e.reg, SweepInterval: time.Hour, Now: e.clock.Now, SelfPreservationMinInstances: minInstances,
	})
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	e.s = s
}

// TestSmallFleetExpiresItsDead: below the minimum fleet size, missed leases
// are deaths, not a partition, whatever share of the fleet they are.
func TestSmallFleetExpiresItsDead(t *testing.T) {
	tests := []struct {
		name                    string
		minInstances            int
		instances, silent, left int
		preserving              bool
	}{
		{"3 of 4, default minimum", 0, 4, 3, 1, false},
		{"5 of 9, default minimum", 0, 9, 5, 4, false},
		{"5 of 10, default minimum", 0, 10, 5, 10, true},
		{"3 of 4, no minimum", 1, 4, 3, 4, true},
		{"5 of 10, minimum 11", 11, 10, 5, 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.openWith(tt.minInstances)
			silence(e, tt.instances, tt.silent)
			e.s.Sweep()
			if got := len(e.ids("web")); got != tt.left {
				t.Errorf("%d instances left, want %d", got, tt.left)
			}
			if h := e.s.Health(); h.SelfPreservation != tt.preserving {
				t.Errorf("self-preservation %v, want %v", h.SelfPreservation, tt.preserving)
			}
		})
	}
}

// heartbeatAll sends a heartbeat for web-<i> for each i in ns.
func heartbeatAll(e *env, ns ...int) {
	for _, i := range ns {
		e.heartbeat("web", fmt.Sprintf("web-%d", i))
	}
}

func span(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// TestRestartDoesNotPreserveTheDead: 20 instances, 4 of which died while
// meshd was down. The 16 that renew after the restart are the fleet; the 4
// that never do expire after their grace lease, and no self-preservation
// follows, however many restarts there are.
func TestRestartDoesNotPreserveTheDead(t *testing.T) {
	e := newEnv(t)
	for i := range 20 {
		e.register(instance("web", i))
	}
	for restart := range 3 {
		e.reopen()
		e.clock.Advance(ttl / 2)
		heartbeatAll(e, span(4, 20)...)
		e.clock.Advance(ttl/2 + time.Millisecond)
		e.s.Sweep()
		if got := len(e.ids("web")); got != 16 {
			t.Fatalf("restart %d: %d instances after the grace lease, want the 16 that renewed", restart, got)
		}
		if h := e.s.Health(); h.SelfPreservation || h.Overdue != 0 || h.Renewing != 16 {
			t.Fatalf("restart %d: Health() = %+v, want 16 renewing, nothing overdue, no self-preservation", restart, h)
		}
	}
	if got := testutil.ToFloat64(e.s.metrics.expirations); got != 0 {
		t.Errorf("expirations since the last open = %v, want 0 (the 4 expired after the first restart)", got)
	}
}

// TestRestartThenPartition: a partition among the instances that renewed
// since the restart is a real mass expiry: it holds every instance, the
// restored ones too, until it heals; then the restored dead expire.
func TestRestartThenPartition(t *testing.T) {
	e := newEnv(t)
	for i := range 24 {
		e.register(instance("web", i))
	}
	e.reopen()
	heartbeatAll(e, span(4, 24)...) // web-0..3 died while meshd was down
	e.clock.Advance(ttl / 2)
	heartbeatAll(e, span(14, 24)...) // web-4..13 are cut off
	e.clock.Advance(ttl/2 + time.Millisecond)
	e.s.Sweep()
	if got := len(e.ids("web")); got != 24 {
		t.Fatalf("during the partition: %d instances, want all 24 held", got)
	}
	if h := e.s.Health(); !h.SelfPreservation || h.Overdue != 14 || h.Renewing != 20 {
		t.Fatalf("during the partition: Health() = %+v, want self-preservation, 14 overdue, 20 renewing", h)
	}
	want := `
# HELP xspace_registry_overdue_instances Instances whose lease has run out and that are still registered (held by self-preservation, or awaiting expiry), at the last sweep.
# TYPE xspace_registry_overdue_instances gauge
xspace_registry_overdue_instances 14
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "xspace_registry_overdue_instances"); err != nil {
		t.Error(err)
	}
	heartbeatAll(e, span(4, 24)...) // the partition heals
	e.s.Sweep()
	if got := e.ids("web"); len(got) != 20 || slices.Contains(got, "web-0") {
		t.Errorf("after the partition healed: instances %v, want the 20 that renewed", got)
	}
	if h := e.s.Health(); h.SelfPreservation {
		t.Errorf("self-preservation still on after the partition healed: %+v", h)
	}
}

// TestLeaseStates: Leases reports each lease as ok, grace (restored, not
// renewed since) or overdue, in and out of self-preservation.
func TestLeaseStates(t *testing.T) {
	e := newEnv(t)
	for i := range 2 {
		e.register(instance("web", i))
	}
	leases := func() []registry.Lease {
		m := e.s.Leases("web")
		return []registry.Lease{m["web-0"], m["web-1"]}
	}
	steps := []struct {
		name string
		do   func()
		want []registry.Lease
	}{
		{"registered", func() {}, []registry.Lease{registry.LeaseOK, registry.LeaseOK}},
		{"restarted", e.reopen, []registry.Lease{registry.LeaseGrace, registry.LeaseGrace}},
		{"one renewed", func() { e.heartbeat("web", "web-1") }, []registry.Lease{registry.LeaseGrace, registry.LeaseOK}},
		{"both late", func() { e.clock.Advance(ttl + time.Millisecond) }, []registry.Lease{registry.LeaseOverdue, registry.LeaseOverdue}},
	}
	for _, st := range steps {
		st.do()
		if diff := cmp.Diff(st.want, leases()); diff != "" {
			t.Errorf("%s: leases (-want +got):\n%s", st.name, diff)
		}
	}
}
