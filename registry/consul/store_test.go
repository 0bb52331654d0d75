package consul

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

// restClient serves the REST API over the store and returns a client of it.
func (e *env) restClient() *api.Client {
	srv := httptest.NewServer(api.NewHandler(e.s, nil))
	e.t.Cleanup(srv.Close)
	return api.NewClient(srv.URL, nil)
}

// TestVIPPolicyThroughRESTIsInKV writes a policy with PUT /v1/vips/{vip},
// reads it back from Consul KV itself, and walks the VIP's life cycle.
func TestVIPPolicyThroughRESTIsInKV(t *testing.T) {
	e := newEnv(t, Options{KVPrefix: "/mesh/policies/"})
	ctx := context.Background()
	c := e.restClient()
	off := false
	policy := registry.Policy{
		Protocol: registry.HTTP2, LoadBalancing: registry.LeastRequest, Plaintext: &off,
		Retries:          registry.Retries{Attempts: 4, On: []string{"5xx"}},
		OutlierDetection: &registry.OutlierDetection{Consecutive5xx: 3},
	}
	stored, created, err := c.PutVIP(ctx, registry.VIP{Name: "payments", Policy: policy})
	if err != nil || !created {
		t.Fatalf("PUT /v1/vips/payments: created %v, %v", created, err)
	}
	kv, _, err := e.raw.KV().Get("mesh/policies/payments", nil)
	if err != nil || kv == nil {
		t.Fatalf("KV mesh/policies/payments: %v, %v", kv, err)
	}
	var inKV registry.Policy
	if err := json.Unmarshal(kv.Value, &inKV); err != nil {
		t.Fatalf("KV value is not a policy: %v\n%s", err, kv.Value)
	}
	if diff := cmp.Diff(policy.Normalize(), inKV); diff != "" {
		t.Errorf("policy in KV (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(stored.Policy, inKV); diff != "" {
		t.Errorf("the API answered another policy than it stored (-answered +stored):\n%s", diff)
	}
	if got, err := c.GetVIP(ctx, "payments"); err != nil || !cmp.Equal(got.Policy, inKV) {
		t.Errorf("GET /v1/vips/payments = %+v, %v", got, err)
	}

	// Registering an instance of a new VIP creates its default policy in
	// KV; a native service is a VIP too. ListVIPs sees all three.
	if _, err := c.Register(ctx, "ledger", "l1", api.Registration{Address: "10.0.0.1", Port: 80}); err != nil {
		t.Fatal(err)
	}
	if kv, _, _ := e.raw.KV().Get("mesh/policies/ledger", nil); kv == nil {
		t.Error("registering an instance of a new VIP wrote no policy")
	}
	e.native(&capi.AgentServiceRegistration{ID: "n1", Name: "native", Address: "10.0.0.2", Port: 80}, "")
	vips, err := c.ListVIPs(ctx)
	var got []string
	for _, v := range vips {
		got = append(got, v.Name)
	}
	// "consul" is Consul's own service, a VIP like any other.
	if err != nil || !slices.Equal(got, []string{"consul", "ledger", "native", "payments"}) {
		t.Errorf("ListVIPs = %v, %v", got, err)
	}

	// DeleteVIP: 409 while instances exist, then 204, then 404.
	var apiErr *api.Error
	if err := c.DeleteVIP(ctx, "ledger"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Fatalf("DELETE a VIP with instances: %v, want 409", err)
	}
	if err := c.Deregister(ctx, "ledger", "l1"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteVIP(ctx, "ledger"); err != nil {
		t.Fatalf("DELETE a VIP without instances: %v", err)
	}
	if err := c.DeleteVIP(ctx, "ledger"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("DELETE a deleted VIP: %v, want 404", err)
	}
	if kv, _, _ := e.raw.KV().Get("mesh/policies/ledger", nil); kv != nil {
		t.Error("the deleted VIP's policy is still in KV")
	}
}

// TestHeartbeatsKeepTheInstanceRoutable registers through the REST API with
// a 1-second TTL: heartbeats keep it UP, a missed TTL makes it DOWN and
// leaves it out of the endpoints, a heartbeat brings it back.
func TestHeartbeatsKeepTheInstanceRoutable(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	c := e.restClient()
	reg := api.Registration{Address: "10.0.0.1", Port: 8080, Zone: "z1", TTLSeconds: 1, Metadata: map[string]string{"version": "2"}}
	inst, err := c.Register(ctx, "orders", "o1", reg)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Status != registry.StatusUp || inst.TTLSeconds != 1 {
		t.Fatalf("registered %+v", inst)
	}
	checks, _, err := e.raw.Health().Checks("orders", nil)
	if err != nil || len(checks) != 1 || checks[0].Type != "ttl" || checks[0].Status != capi.HealthPassing {
		t.Fatalf("consul checks of orders = %+v, %v; want one passing TTL check", checks, err)
	}
	status := func() registry.Status {
		svc := e.lookup("orders")
		if len(svc.Instances) != 1 {
			t.Fatalf("instances %+v", svc.Instances)
		}
		return svc.Instances[0].Status
	}
	// The instance heartbeats every half TTL for three TTLs (Consul's
	// clock decides the TTL, so the heartbeats keep real time).
	beat := time.NewTicker(500 * time.Millisecond)
	defer beat.Stop()
	for range 6 {
		<-beat.C
		if _, err := c.Heartbeat(ctx, "orders", "o1"); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		if st := status(); st != registry.StatusUp {
			t.Fatalf("heartbeating instance is %s, want UP", st)
		}
	}
	eventually(t, 5*time.Second, func() error {
		if st := status(); st != registry.StatusDown {
			return fmt.Errorf("silent instance is %s, want DOWN", st)
		}
		return nil
	})
	if cla := translate.ClusterLoadAssignment(e.lookup("orders")); len(cla.GetEndpoints()) != 0 {
		t.Fatalf("an instance that missed its TTL is routable: %v", cla)
	}
	if _, err := c.Heartbeat(ctx, "orders", "o1"); err != nil {
		t.Fatal(err)
	}
	if st := status(); st != registry.StatusUp {
		t.Fatalf("after a heartbeat the instance is %s, want UP", st)
	}
	var apiErr *api.Error
	if _, err := c.Heartbeat(ctx, "orders", "nobody"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("heartbeat of an unknown instance: %v, want 404 so the client registers again", err)
	}
}

// TestSetStatusReadsBack sets every status through the REST API and reads it
// back from Consul, checking how each is stored there.
func TestSetStatusReadsBack(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	c := e.restClient()
	if _, err := c.Register(ctx, "cart", "c1", api.Registration{Address: "10.0.0.1", Port: 80, Status: registry.StatusStarting}); err != nil {
		t.Fatal(err)
	}
	consulView := func() (meta string, maint bool) {
		entries, _, err := e.raw.Health().Service("cart", "", false, nil)
		if err != nil || len(entries) != 1 {
			t.Fatalf("consul entries %v, %v", entries, err)
		}
		for _, ch := range entries[0].Checks {
			maint = maint || strings.HasPrefix(ch.CheckID, capi.ServiceMaintPrefix)
		}
		return entries[0].Service.Meta[MetaStatus], maint
	}
	if meta, maint := consulView(); meta != "STARTING" || maint {
		t.Fatalf("registered STARTING: consul has meta %q, maintenance %v", meta, maint)
	}
	tests := []struct {
		status registry.Status
		meta   string
		maint  bool
	}{
		{registry.StatusUp, "", false},
		{registry.StatusDraining, "DRAINING", false},
		{registry.StatusOutOfService, "", true},
		{registry.StatusDown, "DOWN", false},
		{registry.StatusOutOfService, "", true},
		{registry.StatusStarting, "STARTING", false},
		{registry.StatusUp, "", false},
	}
	for _, tt := range tests {
		got, err := c.SetStatus(ctx, "cart", "c1", tt.status)
		if err != nil || got.Status != tt.status {
			t.Fatalf("set %s: answered %+v, %v", tt.status, got, err)
		}
		if st := e.lookup("cart").Instances[0].Status; st != tt.status {
			t.Errorf("set %s: lookup reads %s", tt.status, st)
		}
		if meta, maint := consulView(); meta != tt.meta || maint != tt.maint {
			t.Errorf("set %s: consul has meta %q, maintenance %v; want %q, %v", tt.status, meta, maint, tt.meta, tt.maint)
		}
	}
	// A status change keeps the TTL check's state: a critical instance stays DOWN.
	if err := e.raw.Agent().UpdateTTL(ttlCheckID(serviceID("cart", "c1")), "", capi.HealthCritical); err != nil {
		t.Fatal(err)
	}
	if got, err := c.SetStatus(ctx, "cart", "c1", registry.StatusDraining); err != nil || got.Status != registry.StatusDown {
		t.Errorf("DRAINING over a critical check: %+v, %v; want it read as DOWN", got, err)
	}
}

func TestWritesOfInstancesMeshdDoesNotOwn(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	e.native(&capi.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "10.0.0.1", Port: 80}, "")
	native := e.agent.Node + ":web-1"
	if _, err := e.s.SetStatus(ctx, "web", native, registry.StatusDown); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("SetStatus of a native instance: %v, want ErrConflict", err)
	}
	if err := e.s.Deregister(ctx, "web", native); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("Deregister of a native instance: %v, want ErrConflict", err)
	}
	if err := e.s.Deregister(ctx, "web", "ghost"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Deregister of an unknown instance: %v, want ErrNotFound", err)
	}
	if _, err := e.s.SetStatus(ctx, "web", "ghost", registry.StatusUp); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("SetStatus of an unknown instance: %v, want ErrNotFound", err)
	}
	bad := instance("web", "w2", "10.0.0.2")
	bad.Metadata = map[string]string{"has space": "x"}
	var invalid *registry.ValidationError
	if _, err := e.s.Register(ctx, bad); !errors.As(err, &invalid) || invalid.Field != "metadata" {
		t.Errorf("Register with a meta key Consul refuses: %v, want a validation error on metadata", err)
	}
}
