package discovery

import (
	"context"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
)

// TestInboundRoutes: a VIP's inbound routes are published for the app
// ports its sidecars hold, also while the VIP does not exist (any mesh
// identity may call it), follow its policy, and are removed when no
// stream holds them; none is published before the registry answered.
func TestInboundRoutes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	route := func(port uint32) string { return names.InboundRoute("ledger", port) }
	published := func(port uint32) bool {
		_, ok := f.pub.Version(cache.Item{TypeURL: resource.RouteType, Name: route(port)})
		return ok
	}

	// An outage at the first lookup publishes no route: nobody is let in
	// on a guess.
	f.src.broken.Store(true)
	if found, held := f.disc.Acquire(ctx, route(8080)); found || !held {
		t.Fatalf("Acquire during an outage = %v, %v; want not found, held", found, held)
	}
	if published(8080) {
		t.Fatal("an inbound route was published before the registry answered")
	}
	f.src.broken.Store(false) // the retry publishes it, with no change needed
	await.True(t, "the inbound route of a VIP that does not exist published once the registry answered",
		func() bool { return published(8080) })

	// A second app port is published at once; the policy reaches both.
	f.disc.Acquire(ctx, route(9090))
	if !published(9090) {
		t.Fatal("the inbound route of a second app port was not published")
	}
	before := f.pub.count(route(8080))
	if _, err := f.store.PutVIP(ctx, registry.VIP{Name: "ledger", Policy: registry.Policy{AllowedCallers: &[]string{}}}); err != nil {
		t.Fatal(err)
	}
	f.sync(t)
	if f.pub.count(route(8080)) != before+1 || f.pub.count(route(9090)) != 2 {
		t.Fatalf("after a policy change: %s published %d times (was %d), %s %d; want each once more",
			route(8080), f.pub.count(route(8080)), before, route(9090), f.pub.count(route(9090)))
	}

	// An instance change does not rebuild them.
	f.register(t, "ledger", "l1", "10.0.0.1")
	f.sync(t)
	if n := f.pub.count(route(8080)); n != before+1 {
		t.Fatalf("after an instance change %s was published %d times; want %d, as before it", route(8080), n, before+1)
	}

	// Released, a port's route goes; the other stays.
	f.disc.Release(route(9090))
	if published(9090) || !published(8080) {
		t.Fatalf("after releasing 9090: 9090 published %v, 8080 %v; want only 8080", published(9090), published(8080))
	}
}

// TestInboundRouteHeldLaterFollowsPolicy: a VIP watched for its clusters
// publishes no inbound route until one is held; one held after the
// policy changed carries the new policy, and the next change of who may
// call the VIP, back to anyone, reaches it.
func TestInboundRouteHeldLaterFollowsPolicy(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	route := names.InboundRoute("ledger", 8080)
	item := cache.Item{TypeURL: resource.RouteType, Name: route}
	f.register(t, "ledger", "l1", "10.0.0.1")
	f.disc.Acquire(ctx, "ledger.vip")
	if n := f.pub.count(route); n != 0 {
		t.Fatalf("an inbound route no stream holds was published %d times", n)
	}
	if _, err := f.store.PutVIP(ctx, registry.VIP{Name: "ledger", Policy: registry.Policy{AllowedCallers: &[]string{"orders"}}}); err != nil {
		t.Fatal(err)
	}
	f.sync(t)
	f.disc.Acquire(ctx, route)
	onlyOrders, ok := f.pub.Version(item)
	if !ok {
		t.Fatal("the inbound route was not published when held")
	}
	if _, err := f.store.PutVIP(ctx, registry.VIP{Name: "ledger"}); err != nil { // anyone again
		t.Fatal(err)
	}
	f.sync(t)
	anyone, _ := f.pub.Version(item)
	if anyone == onlyOrders {
		t.Fatal("allowed_callers went back to anyone, but the inbound route still lets in only orders")
	}
	if _, err := f.store.PutVIP(ctx, registry.VIP{Name: "ledger", Policy: registry.Policy{AllowedCallers: &[]string{"orders"}}}); err != nil {
		t.Fatal(err)
	}
	f.sync(t)
	if again, _ := f.pub.Version(item); again != onlyOrders {
		t.Fatalf("allowed_callers back to orders: route version %s, want %s as before", again, onlyOrders)
	}
}
