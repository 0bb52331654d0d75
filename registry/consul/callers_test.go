package consul

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	capi "github.com/hashicorp/consul/api"

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
