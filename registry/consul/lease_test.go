package consul

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prisma-systems/xspace-mesh/internal/prom"
	"github.com/prisma-systems/xspace-mesh/internal/testclock"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// book is a leases under test: one VIP "v" of n instances i0..i(n-1),
// each with a TTL check of ttl, on a fake clock.
type book struct {
	t     *testing.T
	l     *leases
	clock *testclock.Clock
	ttl   time.Duration
	out   outage
}

func newBook(t *testing.T) *book {
	return &book{
		t: t, l: newLeases(registry.DefaultSelfPreservation, slog.New(slog.DiscardHandler), prom.NewLeaseMetrics()),
		clock: testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), ttl: 30 * time.Second,
	}
}

// answer hands the book Consul's answer for vip: the instances listed in
// critical have a critical TTL check, the others up to n a passing one.
func (b *book) answer(vip string, n int, critical ...string) []string {
	checks := map[string]leaseCheck{}
	for i := range n {
		id := fmt.Sprintf("i%d", i)
		checks[id] = leaseCheck{ttl: b.ttl, critical: slices.Contains(critical, id), held: registry.StatusUp}
	}
	return b.l.observe(vip, checks, b.out, b.clock.Now())
}

// served returns the status vip's instance id is served with.
func (b *book) served(vip, id string) registry.Status {
	checks := map[string]leaseCheck{}
	for rid, rec := range b.l.vips[vip] {
		checks[rid] = rec.check
	}
	status := registry.StatusUp
	if checks[id].critical {
		status = registry.StatusDown
	}
	insts := b.l.serve(vip, []registry.Instance{{ID: id, Status: status}}, checks)
	return insts[0].Status
}

func (b *book) expirations() float64 { return testutil.ToFloat64(b.l.metrics.Expirations) }

func TestLeaseOfOneDeadInstanceExpires(t *testing.T) {
	b := newBook(t)
	b.answer("v", 12)
	if changed := b.answer("v", 12, "i3"); !slices.Equal(changed, []string{"v"}) {
		t.Fatalf("changed %v, want v", changed)
	}
	if s := b.served("v", "i3"); s != registry.StatusDown || b.expirations() != 1 {
		t.Fatalf("served %s after %v expirations, want DOWN after 1", s, b.expirations())
	}
	if on, c := b.l.status(); on || c.Overdue != 1 || c.Renewing != 12 {
		t.Fatalf("self-preservation %v, counts %+v", on, c)
	}
	// Back: it renews again, and counts again.
	b.answer("v", 12)
	if s := b.served("v", "i3"); s != registry.StatusUp {
		t.Fatalf("renewed instance served %s", s)
	}
}

func TestLeasesOfAFleetMissedAtOnceAreHeld(t *testing.T) {
	b := newBook(t)
	b.answer("v", 12)
	if changed := b.answer("v", 12, "i0", "i1", "i2"); len(changed) != 0 {
		t.Fatalf("changed %v while self-preservation holds", changed)
	}
	if on, c := b.l.status(); !on || c.Overdue != 3 || testutil.ToFloat64(b.l.metrics.SelfPreservation) != 1 {
		t.Fatalf("self-preservation %v with counts %+v, want on holding 3", on, c)
	}
	if s := b.served("v", "i1"); s != registry.StatusUp {
		t.Fatalf("held instance served %s", s)
	}
	// Two renew: one overdue left, within the limit: it expires.
	b.clock.Advance(time.Second)
	changed := b.answer("v", 12, "i2")
	if on, _ := b.l.status(); on || !slices.Equal(changed, []string{"v"}) || b.served("v", "i2") != registry.StatusDown {
		t.Fatalf("self-preservation %v, changed %v, i2 served %s; want off, i2 expired", on, changed, b.served("v", "i2"))
	}
}

func TestLeaseMissedDuringAnOutageHasGrace(t *testing.T) {
	b := newBook(t)
	b.answer("v", 12)
	b.out = outage{degraded: true}
	b.answer("v", 12, "i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9", "i10")
	if on, c := b.l.status(); on || c.Overdue != 0 || b.served("v", "i4") != registry.StatusUp {
		t.Fatalf("during the outage: self-preservation %v, counts %+v, i4 served %s; want grace", on, c, b.served("v", "i4"))
	}
	// Consul is back: one lease of TTL from then.
	b.out = outage{ended: b.clock.Now()}
	b.clock.Advance(b.ttl / 3)
	b.answer("v", 12, "i4") // the others heartbeat; i4 died meanwhile
	if changed := b.l.pass(b.out, b.clock.Now()); len(changed) != 0 || b.served("v", "i4") != registry.StatusUp {
		t.Fatalf("in grace: changed %v, i4 served %s", changed, b.served("v", "i4"))
	}
	if l := b.l.leasesOf("v", map[string]leaseCheck{"i4": {ttl: b.ttl, critical: true}}, b.out, b.clock.Now()); l["i4"] != registry.LeaseGrace {
		t.Fatalf("lease of i4 %v, want grace", l)
	}
	b.clock.Advance(b.ttl)
	if changed := b.l.pass(b.out, b.clock.Now()); !slices.Equal(changed, []string{"v"}) || b.served("v", "i4") != registry.StatusDown {
		t.Fatalf("after grace: changed %v, i4 served %s; want it expired", changed, b.served("v", "i4"))
	}
}

func TestLeaseFirstSeenCriticalIsNotHeld(t *testing.T) {
	b := newBook(t)
	b.answer("v", 12, "i5")
	if on, c := b.l.status(); on || c.Renewing != 11 || b.served("v", "i5") != registry.StatusDown || b.expirations() != 0 {
		t.Fatalf("self-preservation %v, counts %+v, i5 served %s", on, c, b.served("v", "i5"))
	}
}

func TestLeasesCountAcrossVIPs(t *testing.T) {
	b := newBook(t)
	for v := range 6 {
		b.answer(fmt.Sprintf("v%d", v), 2)
	}
	// The first missed lease fits in the limit (1 of 12) and expires; the
	// next ones, in other VIPs' answers, engage self-preservation.
	changed := b.answer("v0", 2, "i0")
	changed = append(changed, b.answer("v1", 2, "i0", "i1")...)
	changed = append(changed, b.answer("v2", 2, "i0")...)
	if on, c := b.l.status(); !on || b.expirations() != 1 || c.Overdue != 3 || c.Expired != 1 {
		t.Fatalf("self-preservation %v, %v expirations, counts %+v", on, b.expirations(), c)
	}
	if !slices.Equal(changed, []string{"v0"}) || b.served("v1", "i1") != registry.StatusUp {
		t.Fatalf("changed %v, v1/i1 served %s; want v0 changed only", changed, b.served("v1", "i1"))
	}
	// The window passes without renewals: the silent ones keep it engaged,
	// until Consul removes them (deregister_critical_after).
	b.clock.Advance(registry.SelfPreservationWindow + time.Second)
	if changed := b.l.pass(b.out, b.clock.Now()); len(changed) != 0 {
		t.Fatalf("changed %v while engaged", changed)
	}
	if on, _ := b.l.status(); !on {
		t.Fatal("self-preservation ended with the silent instances still registered")
	}
	b.answer("v1", 0)
	b.answer("v2", 1)
	if on, c := b.l.status(); on || c.Overdue != 0 {
		t.Fatalf("self-preservation %v with counts %+v after the silent ones were removed", on, c)
	}
}
