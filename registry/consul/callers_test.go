package consul

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// TestAllowedCallersInKV: allowed_callers left out, empty and a list are
// written to Consul KV as such and read back unchanged, so every replica
// serves the same; a policy written by hand with a caller that is not a
// service name is refused for that VIP, naming the entry.
func TestAllowedCallersInKV(t *testing.T) {
	e := newEnv(t, Options{KVPrefix: "mesh/policies"})
	ctx := t.Context()
	c := e.restClient()
	for _, tt := range []struct {
		vip     string
		callers *[]string
		inKV    string // allowed_callers in the KV value, "" when left out
	}{
		{"open", nil, ""},
		{"closed", &[]string{}, `[]`},
		{"listed", &[]string{"web", "orders", "web"}, `["orders","web"]`},
	} {
		if _, _, err := c.PutVIP(ctx, registry.VIP{Name: tt.vip, Policy: registry.Policy{AllowedCallers: tt.callers}}); err != nil {
			t.Fatalf("PUT %s: %v", tt.vip, err)
		}
		kv, _, err := e.raw.KV().Get("mesh/policies/"+tt.vip, nil)
		if err != nil || kv == nil {
			t.Fatalf("KV of %s: %v, %v", tt.vip, kv, err)
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(kv.Value, &raw); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(strings.Fields(string(raw["allowed_callers"])), ""); got != tt.inKV {
			t.Errorf("%s: allowed_callers in KV = %q, want %q", tt.vip, got, tt.inKV)
		}
		got, err := e.s.GetVIP(ctx, tt.vip)
		want := registry.Policy{AllowedCallers: tt.callers}.Normalize()
		if err != nil || !cmp.Equal(got.Policy.AllowedCallers, want.AllowedCallers) || !got.Policy.Equal(want) {
			t.Errorf("%s read back from KV: %+v, %v; want allowed_callers %v", tt.vip, got.Policy.AllowedCallers, err, want.AllowedCallers)
		}
	}

	if _, err := e.raw.KV().Put(&capi.KVPair{Key: "mesh/policies/byhand", Value: []byte(`{"allowed_callers":["orders","Web"]}`)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.GetVIP(ctx, "byhand"); err == nil || !strings.Contains(err.Error(), "policy.allowed_callers[1]") {
		t.Errorf("a policy in KV naming a caller that is not a service: %v; want it refused, naming the entry", err)
	}
}

// TestAllowedCallersChangeInKVReachesInboundRoute: a policy changed in
// Consul KV by hand, not through meshd, changes the inbound route of the
// VIP's sidecars: the callers it allows follow the KV value.
func TestAllowedCallersChangeInKVReachesInboundRoute(t *testing.T) {
	m := newMesh(t, Options{WarningIsUp: true})
	ctx := t.Context()
	if _, err := m.s.PutVIP(ctx, registry.VIP{Name: "ledger"}); err != nil {
		t.Fatal(err)
	}
	route := names.InboundRoute("ledger", 8080)
	if _, held := m.disc.Acquire(ctx, route); !held {
		t.Fatalf("%s is not held", route)
	}
	allowed := func() []string {
		resp, err := m.cache.Fetch(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: resource.RouteType, ResourceNames: []string{route}})
		if err != nil {
			t.Fatalf("fetch %s: %v", route, err)
		}
		dr, err := resp.GetDiscoveryResponse()
		if err != nil || len(dr.GetResources()) != 1 {
			t.Fatalf("fetch %s: %v, %v", route, dr, err)
		}
		var rc routev3.RouteConfiguration
		if err := dr.GetResources()[0].UnmarshalTo(&rc); err != nil {
			t.Fatal(err)
		}
		per := rc.GetVirtualHosts()[0].GetRoutes()[0].GetTypedPerFilterConfig()["envoy.filters.http.rbac"]
		if per == nil {
			return nil
		}
		var r rbacv3.RBACPerRoute
		if err := per.UnmarshalTo(&r); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, p := range r.GetRbac().GetRules().GetPolicies() {
			for _, pr := range p.GetPrincipals() {
				ids = append(ids, pr.GetAuthenticated().GetPrincipalName().GetExact())
			}
		}
		return ids
	}
	if got := allowed(); got != nil {
		t.Fatalf("route allows %v; want any mesh identity", got)
	}
	if _, err := m.raw.KV().Put(&capi.KVPair{Key: m.s.opts.KVPrefix + "/ledger", Value: []byte(`{"allowed_callers":["web"]}`)}, nil); err != nil {
		t.Fatal(err)
	}
	await.True(t, "the KV change in ledger's inbound route", func() bool {
		return slices.Equal(allowed(), []string{names.SPIFFE("web")})
	})
}
