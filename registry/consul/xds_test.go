package consul

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/consul/consultest"
)

// TestOnDemandResolveThroughConsul: a proxy resolves a VIP that lives only
// in Consul over a delta stream, gets not-found for an unknown name, and
// only the VIP it holds is watched.
func TestOnDemandResolveThroughConsul(t *testing.T) {
	m := newMesh(t, Options{WarningIsUp: true})
	ctx := context.Background()
	if _, err := m.s.PutVIP(ctx, registry.VIP{Name: "payments", Policy: registry.Policy{Protocol: registry.HTTP2, LoadBalancing: registry.LeastRequest}}); err != nil {
		t.Fatal(err)
	}
	a := instance("payments", "p1", "10.0.0.1")
	a.Zone = "eu-1a"
	m.register(a)
	m.native(&capi.AgentServiceRegistration{
		ID: "pay-native", Name: "payments", Address: "10.0.0.2", Port: 8080,
		Meta: map[string]string{MetaZone: "eu-1b"},
	}, capi.HealthPassing)
	m.native(&capi.AgentServiceRegistration{ID: "pay-sick", Name: "payments", Address: "10.0.0.3", Port: 8080}, capi.HealthCritical)
	m.register(instance("ledger", "l1", "10.0.1.1"))

	c := m.delta(t, "orders-1")
	c.subscribe(cds, "payments.vip")
	r := c.recv()
	if len(r.GetResources()) != 1 {
		t.Fatalf("CDS payments.vip: resources %v removed %v", resourceNames(r), r.GetRemovedResources())
	}
	cl := &clusterv3.Cluster{}
	if err := r.GetResources()[0].GetResource().UnmarshalTo(cl); err != nil {
		t.Fatal(err)
	}
	if cl.GetName() != "payments.vip" || cl.GetLbPolicy() != clusterv3.Cluster_LEAST_REQUEST {
		t.Errorf("cluster %s lb %s, want payments.vip with the policy from KV (least_request)", cl.GetName(), cl.GetLbPolicy())
	}
	c.subscribe(eds, "payments.vip")
	cla := decodeCLA(t, c.recv(), "payments.vip")
	if got := addresses(cla); !slices.Equal(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Errorf("endpoints %v, want the two passing instances", got)
	}
	var zones []string
	for _, l := range cla.GetEndpoints() {
		zones = append(zones, l.GetLocality().GetZone())
	}
	if !slices.Equal(zones, []string{"eu-1a", "eu-1b"}) {
		t.Errorf("localities %v, want the zones from service meta", zones)
	}

	c.subscribe(cds, "nothing.vip")
	if r := c.recv(); !slices.Equal(r.GetRemovedResources(), []string{"nothing.vip"}) {
		t.Fatalf("unknown VIP: resources %v removed %v, want it removed", resourceNames(r), r.GetRemovedResources())
	}
	// nothing.vip is watched too (a proxy asked for it; it may appear), ledger is not.
	if w := m.metric("xspace_registry_consul_watched_vips"); w != 2 {
		t.Errorf("watched VIPs = %v, want 2 (payments and nothing; not ledger)", w)
	}
}

// TestEndpointChangesReachASubscribedStream: changes made in Consul, by its
// own API and through the store, are pushed to a stream holding the VIP.
func TestEndpointChangesReachASubscribedStream(t *testing.T) {
	m := newMesh(t, Options{WarningIsUp: true})
	ctx := context.Background()
	m.register(instance("search", "s1", "10.0.0.1"))
	c := m.delta(t, "orders-1")
	if got := addresses(c.resolve("search.vip")); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Fatalf("endpoints %v", got)
	}
	steps := []struct {
		name   string
		change func()
		want   []string
	}{
		{"native instance registered in consul", func() {
			m.native(&capi.AgentServiceRegistration{ID: "s2", Name: "search", Address: "10.0.0.2", Port: 8080}, capi.HealthPassing)
		}, []string{"10.0.0.1", "10.0.0.2"}},
		{"its check fails", func() {
			if err := m.raw.Agent().UpdateTTL("ttl:s2", "", capi.HealthCritical); err != nil {
				t.Fatal(err)
			}
		}, []string{"10.0.0.1"}},
		{"instance registered through meshd", func() { m.register(instance("search", "s3", "10.0.0.3")) }, []string{"10.0.0.1", "10.0.0.3"}},
		{"set OUT_OF_SERVICE", func() {
			if _, err := m.s.SetStatus(ctx, "search", "s1", registry.StatusOutOfService); err != nil {
				t.Fatal(err)
			}
		}, []string{"10.0.0.3"}},
		{"deregistered", func() {
			if err := m.s.Deregister(ctx, "search", "s3"); err != nil {
				t.Fatal(err)
			}
		}, nil},
	}
	for _, st := range steps {
		st.change()
		if got := addresses(decodeCLA(t, c.recv(), "search.vip")); !slices.Equal(got, st.want) {
			t.Fatalf("after %s: endpoints %v, want %v", st.name, got, st.want)
		}
	}
	// DRAINING stays an endpoint, marked DRAINING.
	if _, err := m.s.SetStatus(ctx, "search", "s1", registry.StatusDraining); err != nil {
		t.Fatal(err)
	}
	cla := decodeCLA(t, c.recv(), "search.vip")
	if got := addresses(cla); len(got) != 1 || cla.GetEndpoints()[0].GetLbEndpoints()[0].GetHealthStatus() != corev3.HealthStatus_DRAINING {
		t.Fatalf("DRAINING instance: endpoints %v (%v)", got, cla)
	}
}

// TestConsulOutage stops Consul while a stream holds clusters: the
// endpoints stay as they were, the store reports degraded, an unknown name
// is still answered at once; Consul starts again on the same data directory
// and ports, and everything converges without a restart. Consul runs as a
// server that keeps its state, as in production: a dev agent would come
// back with an empty catalog and KV, which is another story
// (TestWatchFollowsARestartedConsul).
func TestConsulOutage(t *testing.T) {
	if consulBin == "" {
		t.SkipNow()
	}
	// A long query timeout: the unknown name must be answered without waiting on it.
	m := newMeshOn(t, newEnvOn(t, consultest.StartServer(t, consulBin), Options{QueryTimeout: 20 * time.Second}))
	ctx := context.Background()
	for _, id := range []string{"i1", "i2"} {
		inst := instance("inventory", id, "10.0.0."+id[1:])
		inst.TTL = registry.Duration(time.Hour)
		m.register(inst)
	}
	c := m.delta(t, "orders-1")
	if got := addresses(c.resolve("inventory.vip")); !slices.Equal(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Fatalf("endpoints %v", got)
	}

	m.agent.Stop(t)
	eventually(t, 5*time.Second, func() error {
		if h := m.s.Health(); h.OK() || h.LastError == "" || h.DegradedSince.IsZero() {
			return fmt.Errorf("health %+v, want degraded with the error", h)
		}
		if m.metric("xspace_registry_consul_degraded") != 1 {
			return fmt.Errorf("degraded gauge not set")
		}
		return nil
	})
	// Discovery's lookups fail with ErrUnavailable and it keeps what it
	// had: no push, no empty assignment.
	if _, err := m.s.Lookup(ctx, "inventory"); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Lookup with Consul stopped: %v, want ErrUnavailable", err)
	}
	eventually(t, 5*time.Second, func() error {
		for _, w := range m.disc.Watched() {
			if w.Name == "inventory" && w.Found && errors.Is(w.Err, registry.ErrUnavailable) {
				return nil
			}
		}
		return fmt.Errorf("discovery does not show inventory as found with a registry error: %+v", m.disc.Watched())
	})
	if m.metric("xspace_discovery_registry_errors_total") == 0 {
		t.Fatal("discovery counted no registry error")
	}
	c.quiet(time.Second)
	start := time.Now()
	c.subscribe(cds, "never-seen.vip")
	if r := c.recvWithin(5 * time.Second); !slices.Equal(r.GetRemovedResources(), []string{"never-seen.vip"}) {
		t.Fatalf("unknown name during the outage: resources %v removed %v", resourceNames(r), r.GetRemovedResources())
	}
	t.Logf("unknown name answered in %s during the outage", time.Since(start))
	c.quiet(500 * time.Millisecond)

	// Consul comes back; clients keep heartbeating and a new instance registers.
	m.agent.Restart(t)
	eventually(t, 10*time.Second, func() error {
		for _, id := range []string{"i1", "i2"} {
			if err := m.s.Heartbeat(ctx, "inventory", id); err != nil {
				return err
			}
		}
		return nil
	})
	m.register(instance("inventory", "i3", "10.0.0.3"))
	want := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}
	deadline := time.Now().Add(10 * time.Second)
	var got []string
	for !slices.Equal(got, want) && time.Now().Before(deadline) {
		got = addresses(decodeCLA(t, c.recv(), "inventory.vip"))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after Consul came back: endpoints %v, want %v", got, want)
	}
	m.healthy(true, 10*time.Second) // once Consul has answered everything for RecoverAfter
	if m.metric("xspace_registry_consul_degraded") != 0 || m.metric("xspace_registry_consul_outages_total") != 1 {
		t.Fatal("metrics do not show one outage that ended")
	}
	for _, w := range m.disc.Watched() {
		if w.Name == "inventory" && (w.Err != nil || !w.Found) {
			t.Fatalf("discovery after recovery: %+v", w)
		}
	}
}
