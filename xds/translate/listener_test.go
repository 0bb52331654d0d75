package translate

import (
	"testing"

	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// TestAPIListenerConnectionManager checks what the golden files cannot:
// the HttpConnectionManager packed in each API listener validates on its
// own (a listener's validation does not look inside an Any), names the route
// configuration RouteConfiguration and UnservedRouteConfiguration return,
// sets nothing but the route and the router (grpc-js-xds would read an
// idle_timeout as a deadline), and ends with the router.
func TestAPIListenerConnectionManager(t *testing.T) {
	v := registry.VIP{Name: "payments", Policy: registry.Policy{Protocol: registry.GRPC}}
	ls := APIListeners(v.Name)
	if len(ls) != 2 || ls[0].GetName() != "payments" || ls[1].GetName() != "payments.vip" {
		t.Fatalf("listeners %v, want payments and payments.vip", ls)
	}
	for _, l := range ls {
		var hcm hcmv3.HttpConnectionManager
		if err := l.GetApiListener().GetApiListener().UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		if err := hcm.ValidateAll(); err != nil {
			t.Fatal(err)
		}
		route := hcm.GetRds().GetRouteConfigName()
		if route != RouteConfiguration(v).GetName() || route != UnservedRouteConfiguration(v.Name).GetName() {
			t.Errorf("%s: route_config_name = %q, want %q", l.GetName(), route, RouteConfiguration(v).GetName())
		}
		if hcm.GetRds().GetConfigSource().GetAds() == nil {
			t.Errorf("%s: route configuration is not fetched over ADS", l.GetName())
		}
		if hcm.GetCommonHttpProtocolOptions() != nil {
			t.Errorf("%s: common_http_protocol_options = %v, want none", l.GetName(), hcm.GetCommonHttpProtocolOptions())
		}
		filters := hcm.GetHttpFilters()
		if len(filters) == 0 || !filters[len(filters)-1].GetTypedConfig().MessageIs(&routerv3.Router{}) {
			t.Errorf("%s: http_filters = %v, want the router last", l.GetName(), filters)
		}
	}
}
