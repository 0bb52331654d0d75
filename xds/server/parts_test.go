package server_test

import (
	"context"
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/prisma-systems/xspace-mesh/controlplane"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
)

// published lists which of a VIP's resources the cache holds, as "type
// name".
func (m *mesh) published(vip string) []string {
	var out []string
	for _, r := range []struct{ typeURL, name string }{
		{resource.ClusterType, vip + ".svip"},
		{resource.EndpointType, vip + ".svip"},
		{resource.ClusterType, vip + ".vip"},
		{resource.EndpointType, vip + ".vip"},
		{resource.ListenerType, vip},
		{resource.ListenerType, vip + ".vip"},
		{resource.RouteType, vip + ".vip"},
	} {
		if _, ok := m.cache.Version(cache.Item{TypeURL: r.typeURL, Name: r.name}); ok {
			out = append(out, typeLabel(r.typeURL)+" "+r.name)
		}
	}
	return out
}

func typeLabel(typeURL string) string {
	return map[string]string{
		resource.ClusterType: "cds", resource.EndpointType: "eds",
		resource.ListenerType: "lds", resource.RouteType: "rds",
	}[typeURL]
}

// TestSubscriptionBuildsWhatItAsksFor: a VIP's resources are built as
// streams ask for them: a sidecar's cluster without its endpoints, its
// other cluster or the gRPC listeners and route; each later subscription
// adds its part, and a registry change rebuilds every part asked for.
func TestSubscriptionBuildsWhatItAsksFor(t *testing.T) {
	m := newMesh(t)
	register := func(id, addr string) {
		t.Helper()
		inst := registry.Instance{VIP: "payments", ID: id, Address: addr, Port: 8080, SecurePort: 8443, Status: registry.StatusUp}
		if _, err := m.store.Register(context.Background(), inst); err != nil {
			t.Fatal(err)
		}
	}
	register("p1", "10.0.0.1")
	c := m.delta(t, "orders-1")
	steps := []struct {
		typeURL, name string
		want          []string
	}{
		{cds, "payments.vip", []string{"cds payments.vip"}},
		{eds, "payments.vip", []string{"cds payments.vip", "eds payments.vip"}},
		{cds, "payments.svip", []string{"cds payments.svip", "cds payments.vip", "eds payments.vip"}},
		{eds, "payments.svip", []string{"cds payments.svip", "eds payments.svip", "cds payments.vip", "eds payments.vip"}},
		{resource.ListenerType, "payments", []string{
			"cds payments.svip", "eds payments.svip", "cds payments.vip", "eds payments.vip",
			"lds payments", "lds payments.vip", "rds payments.vip",
		}},
	}
	for _, s := range steps {
		c.subscribe(s.typeURL, s.name)
		if r := c.recv(); !slices.Equal(resourceNames(r), []string{s.name}) {
			t.Fatalf("subscribed %s %s: got %s %v", typeLabel(s.typeURL), s.name, r.GetTypeUrl(), resourceNames(r))
		}
		if got := m.published("payments"); !slices.Equal(got, s.want) {
			t.Fatalf("after %s %s the cache holds %q, want %q", typeLabel(s.typeURL), s.name, got, s.want)
		}
	}
	before := map[string]string{}
	for _, typeURL := range []string{cds, eds} {
		for _, name := range []string{"payments.vip", "payments.svip"} {
			before[typeURL+name], _ = m.cache.Version(cache.Item{TypeURL: typeURL, Name: name})
		}
	}
	register("p2", "10.0.0.2")
	m.sync(t)
	for _, name := range []string{"payments.vip", "payments.svip"} {
		if v, _ := m.cache.Version(cache.Item{TypeURL: eds, Name: name}); v == before[eds+name] {
			t.Errorf("a new instance left the endpoints of %s as they were", name)
		}
		if v, _ := m.cache.Version(cache.Item{TypeURL: cds, Name: name}); v != before[cds+name] {
			t.Errorf("a new instance changed the cluster %s", name)
		}
	}
	// A VIP no stream asked anything of is not built at all.
	m.register(t, "billing", "b1", "10.0.0.3", registry.StatusUp)
	m.sync(t)
	if got := m.published("billing"); len(got) != 0 {
		t.Errorf("a VIP nobody asked for is in the cache: %q", got)
	}
}

// TestPartsPublishTheVersionsOfTheWhole: whatever parts of a VIP were
// built, and in whichever order, each resource has the version a control
// plane that built all of them at once gives it (versions derive from
// content, so replicas agree and a reconnecting proxy is sent nothing
// again).
func TestPartsPublishTheVersionsOfTheWhole(t *testing.T) {
	m := newMesh(t)
	ctx := context.Background()
	if _, err := m.store.PutVIP(ctx, registry.VIP{Name: "greeter", Policy: registry.Policy{Protocol: registry.GRPC}}); err != nil {
		t.Fatal(err)
	}
	m.register(t, "greeter", "g1", "10.0.0.1", registry.StatusUp)
	whole := controlplane.New(controlplane.Options{Source: m.store})
	t.Cleanup(whole.Stop)
	whole.Discovery.Acquire(ctx, "greeter.vip")
	whole.Discovery.Acquire(ctx, "greeter.svip")

	// A sidecar first, then a proxyless gRPC client.
	c := m.delta(t, "orders-1")
	for _, s := range []struct{ typeURL, name string }{
		{cds, "greeter.vip"},
		{eds, "greeter.vip"},
		{cds, "greeter.svip"},
		{resource.ListenerType, "greeter.vip"},
		{resource.RouteType, "greeter.vip"},
		{eds, "greeter.svip"},
	} {
		c.subscribe(s.typeURL, s.name)
		r := c.recv()
		want, ok := whole.Cache.Version(cache.Item{TypeURL: s.typeURL, Name: s.name})
		if !ok || versions(r)[s.name] != want {
			t.Errorf("%s %s: version %q, want %q as when the whole VIP is built", typeLabel(s.typeURL), s.name, versions(r)[s.name], want)
		}
	}
}
