package translate

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// routerFilter is the name of Envoy's (and gRPC's) terminal router HTTP filter.
const routerFilter = "envoy.filters.http.router"

// APIListener returns the API listener "<vip>.vip" (names.Cluster(v.Name,
// false)) that proxyless gRPC clients ask for when they dial
// "xds:///<vip>.vip".
//
// An API listener has no address: it only carries an HttpConnectionManager
// whose route configuration, of the same name, is fetched over the same ADS
// stream (RouteConfiguration). The router is the only HTTP filter, as gRPC
// requires a terminal router last. Like Cluster, it translates regardless of
// policy.plaintext; whether it is served is discovery's decision.
func APIListener(v registry.VIP) *listenerv3.Listener {
	name := names.Cluster(v.Name, false)
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: name,
		}},
		HttpFilters: []*hcmv3.HttpFilter{httpFilter(routerFilter, &routerv3.Router{})},
	}
	return &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)},
	}
}
