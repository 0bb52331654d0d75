package translate

import (
	"testing"

	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// TestAPIListenerConnectionManager checks what the golden files cannot:
// the HttpConnectionManager packed in the API listener validates on its own
// (a listener's validation does not look inside an Any), names the route
// configuration RouteConfiguration returns, and ends with the router.
func TestAPIListenerConnectionManager(t *testing.T) {
	v := registry.VIP{Name: "payments", Policy: registry.Policy{Protocol: registry.GRPC}}
	var hcm hcmv3.HttpConnectionManager
	if err := APIListener(v).GetApiListener().GetApiListener().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	if err := hcm.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if got, want := hcm.GetRds().GetRouteConfigName(), RouteConfiguration(v).GetName(); got != want {
		t.Errorf("route_config_name = %q, want %q", got, want)
	}
	if hcm.GetRds().GetConfigSource().GetAds() == nil {
		t.Error("route configuration is not fetched over ADS")
	}
	filters := hcm.GetHttpFilters()
	if len(filters) == 0 || !filters[len(filters)-1].GetTypedConfig().MessageIs(&routerv3.Router{}) {
		t.Errorf("http_filters = %v, want the router last", filters)
	}
}
