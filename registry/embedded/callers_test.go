package embedded

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// TestAllowedCallersAcrossReopen: allowed_callers left out, empty and a
// list are stored as three different policies and survive a restart.
func TestAllowedCallersAcrossReopen(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	want := map[string]*[]string{"open": nil, "closed": {}, "listed": {"orders", "web"}}
	for vip, callers := range want {
		in := callers
		if vip == "listed" {
			in = &[]string{"web", "orders", "orders"}
		}
		if _, err := e.s.PutVIP(ctx, registry.VIP{Name: vip, Policy: registry.Policy{AllowedCallers: in}}); err != nil {
			t.Fatal(err)
		}
	}
	e.reopen()
	for vip, callers := range want {
		v, err := e.s.GetVIP(ctx, vip)
		if err != nil || !cmp.Equal(v.Policy.AllowedCallers, callers) {
			t.Errorf("%s after reopen: allowed_callers %v, %v; want %v", vip, v.Policy.AllowedCallers, err, callers)
		}
	}
}
