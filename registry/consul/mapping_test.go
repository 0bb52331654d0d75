package consul

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	capi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// TestMappingOfNativeServices registers services straight with Consul, as
// its users do, and checks how each maps to an instance: every meta key and
// every status rule.
func TestMappingOfNativeServices(t *testing.T) {
	e := newEnv(t, Options{WarningIsUp: true})
	node := e.agent.Node
	svc := func(id, addr string, meta map[string]string) *capi.AgentServiceRegistration {
		return &capi.AgentServiceRegistration{ID: id, Name: "shop", Address: addr, Port: 8080, Meta: meta}
	}
	up := svc("up", "10.0.0.1", map[string]string{
		MetaZone: "eu-1a", MetaSecurePort: "8443", "team": "core", MetaTTL: "15s",
	})
	up.Weights = &capi.AgentWeights{Passing: 7, Warning: 1}
	e.native(up, capi.HealthPassing)
	e.native(svc("crit", "10.0.0.2", nil), capi.HealthCritical)
	heavy := svc("warn", "10.0.0.3", nil)
	heavy.Weights = &capi.AgentWeights{Passing: 5000, Warning: 1}
	e.native(heavy, capi.HealthWarning)
	e.native(svc("maint", "10.0.0.4", nil), capi.HealthPassing)
	if err := e.raw.Agent().EnableServiceMaintenance("maint", "testing"); err != nil {
		t.Fatal(err)
	}
	e.native(svc("drain", "10.0.0.5", map[string]string{MetaStatus: "DRAINING"}), capi.HealthPassing)
	e.native(svc("starting", "10.0.0.6", map[string]string{MetaStatus: "STARTING"}), capi.HealthPassing)
	e.native(svc("critdrain", "10.0.0.7", map[string]string{MetaStatus: "DRAINING"}), capi.HealthCritical)
	e.native(svc("nocheck", "", nil), "")
	e.native(svc("named", "10.0.0.9", map[string]string{MetaInstanceID: "shop-9"}), capi.HealthPassing)
	e.native(svc("bogus", "2001:db8::1", map[string]string{MetaStatus: "SLEEPING", MetaSecurePort: "https"}), capi.HealthPassing)
	e.native(svc("oos", "10.0.0.11", map[string]string{MetaStatus: "OUT_OF_SERVICE"}), capi.HealthPassing)
	e.native(svc("hostname", "shop.example.com", nil), capi.HealthPassing)

	inst := func(sid, addr string, st registry.Status) registry.Instance {
		return registry.Instance{ID: node + ":" + sid, VIP: "shop", Address: addr, Port: 8080, Weight: 1, Status: st}
	}
	first := inst("up", "10.0.0.1", registry.StatusUp)
	first.Zone, first.SecurePort, first.Weight, first.TTL = "eu-1a", 8443, 7, registry.Duration(15e9)
	first.Metadata = map[string]string{"team": "core"}
	warn := inst("warn", "10.0.0.3", registry.StatusUp)
	warn.Weight = registry.MaxWeight
	named := inst("", "10.0.0.9", registry.StatusUp)
	named.ID = "shop-9"
	want := []registry.Instance{
		inst("bogus", "2001:db8::1", registry.StatusUp),
		inst("crit", "10.0.0.2", registry.StatusDown),
		inst("critdrain", "10.0.0.7", registry.StatusDown),
		inst("drain", "10.0.0.5", registry.StatusDraining),
		inst("maint", "10.0.0.4", registry.StatusOutOfService),
		inst("nocheck", "127.0.0.1", registry.StatusUp), // the node's address
		inst("oos", "10.0.0.11", registry.StatusOutOfService),
		inst("starting", "10.0.0.6", registry.StatusStarting),
		first,
		warn,
		named,
	}
	got := e.lookup("shop")
	if diff := cmp.Diff(want, got.Instances); diff != "" {
		t.Errorf("instances (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(registry.VIP{Name: "shop", Policy: registry.Policy{}.Normalize()}, got.VIP); diff != "" {
		t.Errorf("a service without a policy in KV has the default policy (-want +got):\n%s", diff)
	}
	if n := e.metric("xspace_registry_consul_skipped_instances_total"); n != 1 {
		t.Errorf("skipped instances = %v, want 1 (the hostname)", n)
	}

	// warning_is_up: false makes a warning DOWN.
	strict := e.open(Options{WarningIsUp: false, Registerer: prometheus.NewRegistry()})
	svc2, err := strict.Lookup(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range svc2.Instances {
		if i.ID == warn.ID && i.Status != registry.StatusDown {
			t.Errorf("with WarningIsUp false, a warning instance is %s, want DOWN", i.Status)
		}
	}

	// Node maintenance takes every instance of the node out of service.
	if err := e.raw.Agent().EnableNodeMaintenance("testing"); err != nil {
		t.Fatal(err)
	}
	for _, i := range e.lookup("shop").Instances {
		if i.Status != registry.StatusOutOfService {
			t.Errorf("under node maintenance %s is %s, want OUT_OF_SERVICE", i.ID, i.Status)
		}
	}
}

// TestDuplicateIDsPickTheLiveOne: an instance re-registered through another
// agent shows up twice until Consul reaps the old registration; every
// replica must pick the same one, the live one.
func TestDuplicateIDsPickTheLiveOne(t *testing.T) {
	e := newEnv(t, Options{WarningIsUp: true})
	reg := func(node, addr, status string) {
		_, err := e.raw.Catalog().Register(&capi.CatalogRegistration{
			Node: node, Address: addr,
			Service: &capi.AgentService{ID: "dup:d1", Service: "dup", Port: 80, Meta: map[string]string{MetaInstanceID: "d1"}},
			Check:   &capi.AgentCheck{Node: node, CheckID: "ttl", Name: "ttl", Status: status, ServiceID: "dup:d1"},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	reg("node-a", "10.1.0.1", capi.HealthCritical)
	reg("node-b", "10.1.0.2", capi.HealthPassing)
	reg("node-c", "10.1.0.3", capi.HealthPassing)
	got := e.lookup("dup").Instances
	if len(got) != 1 || got[0].ID != "d1" || got[0].Address != "10.1.0.2" || got[0].Status != registry.StatusUp {
		t.Fatalf("instances = %+v, want only d1 at 10.1.0.2 (passing, lowest node name among the live)", got)
	}
}

func TestLookupNotFoundAndPolicyOnly(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	if _, err := e.s.Lookup(ctx, "nothing"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Lookup of an unknown VIP: %v, want ErrNotFound", err)
	}
	if _, err := e.s.PutVIP(ctx, registry.VIP{Name: "empty", Policy: registry.Policy{Protocol: registry.GRPC}}); err != nil {
		t.Fatal(err)
	}
	svc := e.lookup("empty")
	if svc.VIP.Policy.Protocol != registry.GRPC || len(svc.Instances) != 0 {
		t.Fatalf("a VIP with only a policy = %+v, want grpc and no instances", svc)
	}
	if _, err := e.raw.KV().Put(&capi.KVPair{Key: DefaultKVPrefix + "/broken", Value: []byte(`{"protocol":"smtp"}`)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Lookup(ctx, "broken"); err == nil || errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Lookup of a VIP with an invalid policy: %v, want an error of its own", err)
	}
	if e.s.Degraded() {
		t.Fatal("an invalid policy made the store degraded")
	}
}
