package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
)

// flaky wraps the real embedded store and fails lookups while broken is
// set, standing in for a registry outage. It counts lookups.
type flaky struct {
	*embedded.Store
	broken  atomic.Bool
	lookups atomic.Int64
	// gate, when set, holds every lookup until it is closed.
	gate chan struct{}
}

func (f *flaky) Lookup(ctx context.Context, vip string) (registry.Service, error) {
	f.lookups.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	if f.broken.Load() {
		return registry.Service{}, errors.Join(registry.ErrUnavailable, errors.New("test outage"))
	}
	return f.Store.Lookup(ctx, vip)
}

// counting wraps the real cache and counts, per resource name, the updates
// that include it.
type counting struct {
	*cache.Cache
	mu   sync.Mutex
	sets map[string]int
}

func (c *counting) Update(items ...cache.Item) error {
	c.mu.Lock()
	seen := map[string]bool{}
	for _, it := range items {
		if !seen[it.Name] {
			seen[it.Name] = true
			c.sets[it.Name]++
		}
	}
	c.mu.Unlock()
	return c.Cache.Update(items...)
}

func (c *counting) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sets[name]
}

type fixture struct {
	src   *flaky
	pub   *counting
	disc  *Discovery
	store *embedded.Store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, Options{RetryInterval: 10 * time.Millisecond})
}

func newFixtureWith(t *testing.T, opts Options) *fixture {
	t.Helper()
	store, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	src := &flaky{Store: store}
	pub := &counting{Cache: cache.New([]string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}), sets: map[string]int{}}
	d := New(src, pub, opts)
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	run.Go(func() { d.Run(ctx) })
	t.Cleanup(func() { cancel(); run.Wait() })
	return &fixture{src: src, pub: pub, disc: d, store: store}
}

func (f *fixture) register(t *testing.T, vip, id, addr string) {
	t.Helper()
	_, err := f.store.Register(context.Background(), registry.Instance{VIP: vip, ID: id, Address: addr, Port: 80})
	if err != nil {
		t.Fatal(err)
	}
}

// sync returns once discovery has published every registry change made so
// far (Discovery.Sync).
func (f *fixture) sync(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), await.Timeout)
	defer cancel()
	if err := f.disc.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRegistryOutageKeepsLastKnown(t *testing.T) {
	f := newFixture(t)
	f.register(t, "payments", "p1", "10.0.0.1")
	f.disc.Acquire(context.Background(), "payments.vip")
	before, ok := f.pub.Version(cache.Item{TypeURL: resource.EndpointType, Name: "payments.vip"})
	if !ok {
		t.Fatal("endpoints not published")
	}

	f.src.broken.Store(true)
	f.register(t, "payments", "p2", "10.0.0.2") // change arrives; lookup fails
	await.True(t, "failed lookups retried", func() bool { return f.src.lookups.Load() >= 4 })
	if v, ok := f.pub.Version(cache.Item{TypeURL: resource.EndpointType, Name: "payments.vip"}); !ok || v != before {
		t.Fatalf("during the outage endpoints changed or vanished: %q %v, want %q", v, ok, before)
	}

	f.src.broken.Store(false) // the retry converges without any new change
	await.True(t, "converged after the outage", func() bool {
		v, ok := f.pub.Version(cache.Item{TypeURL: resource.EndpointType, Name: "payments.vip"})
		return ok && v != before
	})
}

func TestConcurrentFirstSubscribersLookUpOnce(t *testing.T) {
	f := newFixture(t)
	f.register(t, "payments", "p1", "10.0.0.1")
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { f.disc.Acquire(context.Background(), "payments.vip") })
	}
	wg.Wait()
	if n := f.src.lookups.Load(); n != 1 {
		t.Fatalf("%d lookups for 50 concurrent subscribers, want 1", n)
	}
	if w := f.disc.Watched(); len(w) != 1 || w[0].References != 50 {
		t.Fatalf("watched = %+v, want payments with 50 subscribers", w)
	}
}

func TestChangeRebuildsOnlyThatVIP(t *testing.T) {
	f := newFixture(t)
	f.register(t, "a", "a1", "10.0.0.1")
	f.register(t, "b", "b1", "10.0.0.2")
	f.disc.Acquire(context.Background(), "a.vip")
	f.disc.Acquire(context.Background(), "b.vip")
	f.register(t, "a", "a2", "10.0.0.3")
	f.sync(t)
	if n := f.pub.count("a.vip"); n != 2 {
		t.Fatalf("a.vip published %d times, want 2 (its first resolve, then the change)", n)
	}
	if n := f.pub.count("b.vip"); n != 1 {
		t.Fatalf("b.vip published %d times, want 1 (its first resolve only)", n)
	}
	// Unwatched VIPs are not looked up at all.
	lookups := f.src.lookups.Load()
	f.register(t, "c", "c1", "10.0.0.4")
	f.sync(t)
	if f.src.lookups.Load() != lookups {
		t.Fatal("a change to a VIP nobody holds caused a lookup")
	}
}

func TestReleaseIsBalanced(t *testing.T) {
	f := newFixture(t)
	f.register(t, "a", "a1", "10.0.0.1")
	f.disc.Acquire(context.Background(), "a.vip")
	f.disc.Acquire(context.Background(), "a.vip")
	f.disc.Release("a.vip")
	if w := f.disc.Watched(); len(w) != 1 || w[0].References != 1 {
		t.Fatalf("after one release: %+v, want 1 subscriber", w)
	}
	f.disc.Release("a.vip")
	f.disc.Release("a.vip") // one too many: logged, not negative
	if w := f.disc.Watched(); len(w) != 1 || w[0].References != 0 {
		t.Fatalf("after extra release: %+v, want 0 subscribers", w)
	}
}

// TestFirstLookupOutlivesTheFirstSubscriber: the first stream to ask for a
// VIP may go away while it is looked up; the lookup still serves the others.
func TestFirstLookupOutlivesTheFirstSubscriber(t *testing.T) {
	f := newFixture(t)
	f.register(t, "payments", "p1", "10.0.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // gone before it starts
	f.disc.Acquire(ctx, "payments.vip")
	if _, ok := f.pub.Version(cache.Item{TypeURL: resource.ClusterType, Name: "payments.vip"}); !ok {
		t.Fatal("a cancelled first subscriber left the VIP unpublished")
	}
	if w := f.disc.Watched(); len(w) != 1 || w[0].Err != nil {
		t.Fatalf("watched = %+v, want no error", w)
	}
}

// TestFailedFirstLookupIsUnknownNotAbsent: a VIP that could not be looked
// up is not published as absent (which would take it from proxies that hold
// it); a VIP the registry does not have is.
func TestFailedFirstLookupIsUnknownNotAbsent(t *testing.T) {
	f := newFixture(t)
	f.register(t, "payments", "p1", "10.0.0.1")
	f.src.broken.Store(true)
	f.disc.Acquire(context.Background(), "payments.vip")
	if v, ok := f.pub.Version(cache.Item{TypeURL: resource.ClusterType, Name: "payments.vip"}); ok {
		t.Fatalf("failed lookup published %q; want nothing", v)
	}
	f.disc.Acquire(context.Background(), "ghost.vip")
	if v, ok := f.pub.Version(cache.Item{TypeURL: resource.ClusterType, Name: "ghost.vip"}); ok {
		t.Fatalf("failed lookup of ghost published %q", v)
	}
	f.src.broken.Store(false)
	await.True(t, "payments published after recovery", func() bool {
		_, ok := f.pub.Version(cache.Item{TypeURL: resource.ClusterType, Name: "payments.vip"})
		return ok
	})
	await.True(t, "ghost published as absent after recovery", func() bool {
		v, ok := f.pub.Version(cache.Item{TypeURL: resource.ClusterType, Name: "ghost.vip"})
		return ok && v == "absent"
	})
}

func TestRetryBackoffGrowsWithJitter(t *testing.T) {
	d := New(nil, nil, Options{RetryInterval: time.Second, MaxRetryInterval: 8 * time.Second})
	for _, tt := range []struct {
		n      int
		lo, hi time.Duration
	}{{1, 800 * time.Millisecond, 1200 * time.Millisecond}, {3, 3200 * time.Millisecond, 4800 * time.Millisecond}, {10, 6400 * time.Millisecond, 9600 * time.Millisecond}} {
		if got := d.retryAfter(tt.n); got < tt.lo || got > tt.hi {
			t.Errorf("retryAfter(%d) = %s, want within [%s, %s]", tt.n, got, tt.lo, tt.hi)
		}
	}
}

// TestOutboundRoutesFollowWatchedPolicies: a watched VIP whose policy has
// its own retries gets a route in the outbound route configuration, one at
// the defaults does not, a forgotten one leaves it; a burst of such VIPs is
// published in a few pushes, not one per VIP.
func TestOutboundRoutesFollowWatchedPolicies(t *testing.T) {
	// Grace is short so that released VIPs are forgotten by Run's sweep.
	f := newFixtureWith(t, Options{RetryInterval: 10 * time.Millisecond, Grace: 40 * time.Millisecond})
	routes := func() []string {
		t.Helper()
		resp, err := f.pub.Fetch(context.Background(), &gcpcache.Request{TypeUrl: resource.RouteType, ResourceNames: []string{names.OutboundRoute}})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := resp.GetDiscoveryResponse()
		if err != nil || len(msg.GetResources()) != 1 {
			t.Fatalf("outbound routes: %v, %v", msg, err)
		}
		var r routev3.RouteConfiguration
		if err := msg.GetResources()[0].UnmarshalTo(&r); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, route := range r.GetVirtualHosts()[0].GetRoutes() {
			if h := route.GetMatch().GetHeaders(); len(h) > 0 {
				out = append(out, h[0].GetStringMatch().GetExact())
			}
		}
		return out
	}
	await.True(t, "default routes published", func() bool { return f.pub.count(names.OutboundRoute) == 1 })
	const burst = 50
	ctx := context.Background()
	for i := range burst {
		_, err := f.store.PutVIP(ctx, registry.VIP{Name: fmt.Sprintf("own-%02d", i), Policy: registry.Policy{Retries: registry.Retries{Attempts: 4}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	f.register(t, "plain", "p1", "10.0.0.1")
	f.disc.Acquire(ctx, "plain.vip")
	for i := range burst {
		f.disc.Acquire(ctx, fmt.Sprintf("own-%02d.vip", i))
	}
	await.True(t, "every own route published", func() bool { return len(routes()) == burst })
	if got := routes(); slices.Contains(got, "plain") {
		t.Fatalf("a VIP at the defaults got a route of its own: %v", got)
	}
	if n := f.pub.count(names.OutboundRoute); n > burst/2 {
		t.Fatalf("%d VIPs resolved in a burst published the outbound routes %d times; want them coalesced", burst, n)
	}
	for i := range burst {
		f.disc.Release(fmt.Sprintf("own-%02d.vip", i))
	}
	await.True(t, "routes of forgotten VIPs removed", func() bool { return len(routes()) == 0 })
}

// TestSyncCoversAChangeDuringTheFirstLookup: a change that arrives while a
// VIP's first lookup runs is looked up again once that ends; Sync, called
// after the change, returns only once that lookup is published.
func TestSyncCoversAChangeDuringTheFirstLookup(t *testing.T) {
	f := newFixture(t)
	f.register(t, "payments", "p1", "10.0.0.1")
	f.src.gate = make(chan struct{})
	acquired := make(chan struct{})
	go func() {
		defer close(acquired)
		f.disc.Acquire(context.Background(), "payments.vip")
	}()
	await.True(t, "the first lookup started", func() bool { return f.src.lookups.Load() == 1 })
	f.register(t, "payments", "p2", "10.0.0.2") // notified while the lookup is held
	synced := make(chan error, 1)
	go func() { synced <- f.disc.Sync(t.Context()) }()
	close(f.src.gate)
	<-acquired
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	// The first lookup read the registry after p2 (the gate holds it before
	// it reads), but it may not have: what Sync must cover is the second.
	if n := f.pub.count("payments.vip"); n != 2 {
		t.Fatalf("after Sync, payments.vip was published %d times, want 2 (its first lookup, and the one after the change)", n)
	}
}
