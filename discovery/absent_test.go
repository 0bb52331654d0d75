package discovery

import (
	"context"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/internal/promtest"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
)

// clockFixture is a fixture whose clock the test moves, with a metrics
// registry to read.
type clockFixture struct {
	*fixture
	reg  *prometheus.Registry
	skew atomic.Int64
}

func newClockFixture(t *testing.T, opts Options) *clockFixture {
	t.Helper()
	f := &clockFixture{reg: prometheus.NewRegistry()}
	opts.Registerer = f.reg
	opts.Now = func() time.Time { return time.Now().Add(time.Duration(f.skew.Load())) }
	f.fixture = newFixtureWith(t, opts)
	return f
}

func (f *clockFixture) advance(d time.Duration) { f.skew.Add(int64(d)) }

func (f *clockFixture) metric(t *testing.T, name string) float64 {
	t.Helper()
	v, _ := promtest.Value(t, f.reg, name)
	return v
}

// subscribers maps each watched VIP to its references (streams holding it, here one name each).
func (f *clockFixture) subscribers() map[string]int {
	out := map[string]int{}
	for _, w := range f.disc.Watched() {
		out[w.Name] = w.References
	}
	return out
}

func (f *clockFixture) acquire(t *testing.T, cluster string) (found, held bool) {
	t.Helper()
	return f.disc.Acquire(context.Background(), cluster)
}

// TestNotFoundVIPsAreBoundedGlobally: at most MaxNotFound VIPs that do not
// exist are watched. Past it the one idle longest makes room; when every
// one is held, a new name is answered as not found and nothing of it is
// kept, while the names held keep being watched.
func TestNotFoundVIPsAreBoundedGlobally(t *testing.T) {
	f := newClockFixture(t, Options{MaxNotFound: 3})
	f.register(t, "payments", "p1", "10.0.0.1")
	if found, held := f.acquire(t, "payments.vip"); !found || !held {
		t.Fatalf("payments: found %v held %v", found, held)
	}
	for _, name := range []string{"ghost-1.vip", "ghost-2.vip", "ghost-3.vip"} {
		if found, held := f.acquire(t, name); found || !held {
			t.Fatalf("%s: found %v held %v; want held, not found", name, found, held)
		}
	}
	f.disc.Release("ghost-2.vip")
	f.disc.Release("ghost-1.vip") // ghost-2 has been idle longest

	f.acquire(t, "ghost-4.vip")
	want := map[string]int{"payments": 1, "ghost-1": 0, "ghost-3": 1, "ghost-4": 1}
	if got := f.subscribers(); !maps.Equal(got, want) {
		t.Fatalf("after a 4th unknown name: watched %v, want %v (ghost-2, idle longest, forgotten)", got, want)
	}
	if _, ok := f.pub.Version(cache.Item{TypeURL: resource.ClusterType, Name: "ghost-2.vip"}); ok {
		t.Fatal("the forgotten ghost-2 left its tombstone in the cache")
	}
	f.acquire(t, "ghost-5.vip") // makes ghost-1 go
	if found, held := f.acquire(t, "ghost-6.vip"); found || held {
		t.Fatalf("ghost-6 with 3 unknown names held: found %v held %v; want neither", found, held)
	}
	want = map[string]int{"payments": 1, "ghost-3": 1, "ghost-4": 1, "ghost-5": 1}
	if got := f.subscribers(); !maps.Equal(got, want) {
		t.Fatalf("with every unknown name held: watched %v, want %v", got, want)
	}
	for name, want := range map[string]float64{
		"xspace_discovery_not_found_vips":            3,
		"xspace_discovery_not_found_evicted_total":   2,
		"xspace_discovery_not_found_untracked_total": 1,
		"xspace_discovery_watched_vips":              4,
	} {
		if got := f.metric(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// A held unknown name that appears is still published to its holders.
	f.register(t, "ghost-3", "g1", "10.0.0.3")
	f.sync(t)
	if v, ok := f.pub.Version(cache.Item{TypeURL: resource.ClusterType, Name: "ghost-3.vip"}); !ok || v == "absent" {
		t.Fatalf("ghost-3.vip published as %q (%v), want its cluster", v, ok)
	}
	if got := f.metric(t, "xspace_discovery_not_found_vips"); got != 2 {
		t.Fatalf("xspace_discovery_not_found_vips = %v after ghost-3 appeared, want 2", got)
	}
}

// TestNotFoundVIPsAreForgottenSooner: a VIP that does not exist is
// forgotten NotFoundGrace after its last holder lets go; one that exists
// stays for Grace.
func TestNotFoundVIPsAreForgottenSooner(t *testing.T) {
	f := newClockFixture(t, Options{Grace: time.Hour, NotFoundGrace: time.Minute})
	f.register(t, "payments", "p1", "10.0.0.1")
	for _, name := range []string{"payments.vip", "ghost.vip"} {
		f.acquire(t, name)
		f.disc.Release(name)
	}
	f.advance(59 * time.Second)
	f.disc.ForgetIdle()
	if got := f.subscribers(); len(got) != 2 {
		t.Fatalf("within the not-found grace: watched %v, want both", got)
	}
	f.advance(2 * time.Second)
	f.disc.ForgetIdle()
	if got := f.subscribers(); !maps.Equal(got, map[string]int{"payments": 0}) {
		t.Fatalf("after the not-found grace: watched %v, want payments only", got)
	}
	if got := f.metric(t, "xspace_discovery_not_found_vips"); got != 0 {
		t.Fatalf("not found VIPs = %v after ghost was forgotten, want 0", got)
	}
}

// TestDeletedVIPCountsAsNotFound: a held VIP that is deleted from the
// registry counts against MaxNotFound until it comes back.
func TestDeletedVIPCountsAsNotFound(t *testing.T) {
	f := newClockFixture(t, Options{})
	if _, err := f.store.PutVIP(context.Background(), registry.VIP{Name: "payments"}); err != nil {
		t.Fatal(err)
	}
	f.acquire(t, "payments.vip")
	if err := f.store.DeleteVIP(context.Background(), "payments"); err != nil {
		t.Fatal(err)
	}
	f.sync(t)
	if got := f.metric(t, "xspace_discovery_not_found_vips"); got != 1 {
		t.Fatalf("xspace_discovery_not_found_vips = %v after the VIP was deleted, want 1", got)
	}
	f.register(t, "payments", "p1", "10.0.0.1")
	f.sync(t)
	if got := f.metric(t, "xspace_discovery_not_found_vips"); got != 0 {
		t.Fatalf("xspace_discovery_not_found_vips = %v after the VIP came back, want 0", got)
	}
}

// TestAbandonedAcquireHoldsNothing: a stream that goes away while another
// stream's first lookup of the same VIP runs is told it holds nothing, and
// leaves no subscriber behind.
func TestAbandonedAcquireHoldsNothing(t *testing.T) {
	f := newClockFixture(t, Options{})
	f.register(t, "payments", "p1", "10.0.0.1")
	f.src.gate = make(chan struct{})
	first := make(chan bool)
	go func() {
		_, held := f.disc.Acquire(context.Background(), "payments.vip")
		first <- held
	}()
	await.True(t, "first lookup started", func() bool { return f.src.lookups.Load() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if found, held := f.disc.Acquire(ctx, "payments.vip"); found || held {
		t.Fatalf("abandoned acquire: found %v held %v; want neither", found, held)
	}
	close(f.src.gate)
	if !<-first {
		t.Fatal("the first acquire did not hold")
	}
	if got := f.subscribers()["payments"]; got != 1 {
		t.Fatalf("subscribers = %d, want 1 (the abandoned acquire left its count)", got)
	}
}
