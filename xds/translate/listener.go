package translate

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/prisma-systems/xspace-mesh/internal/envoyproto"
	"github.com/prisma-systems/xspace-mesh/names"
)

// routerFilter is the name of Envoy's (and gRPC's) terminal router HTTP filter.
const routerFilter = "envoy.filters.http.router"

// APIListeners returns the API listeners of a VIP, the resources proxyless
// gRPC clients ask for by the name of the target they dial
// (names.APIListeners): "<vip>.vip" for "xds:///<vip>.vip", and "<vip>" for
// "xds:///<vip>". Both lead to the same route configuration, so both
// targets reach the same instances. The bare name cannot mean anything
// else: a VIP name is a DNS label, with no dot, so it is never a cluster
// name, and a VIP whose name starts with "xspace-", as a sidecar's own
// listeners' do, has no bare listener.
//
// An API listener has no address: it only carries an HttpConnectionManager
// whose route configuration, "<vip>.vip", is fetched over the same ADS
// stream (RouteConfiguration, or UnservedRouteConfiguration). The router is
// the only HTTP filter, as gRPC requires a terminal router last. Nothing
// else is set on the connection manager: grpc-js-xds would read a
// common_http_protocol_options.idle_timeout as every call's deadline. The
// listeners depend on the VIP's name only, so they stay the same whether
// or not the VIP is served to gRPC clients; whether it is, is discovery's
// decision.
func APIListeners(vip string) []*listenerv3.Listener {
	route := names.Cluster(vip, false)
	var out []*listenerv3.Listener
	for _, name := range names.APIListeners(vip) {
		hcm := &hcmv3.HttpConnectionManager{
			StatPrefix: name,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
				ConfigSource:    adsSource(),
				RouteConfigName: route,
			}},
			HttpFilters: []*hcmv3.HttpFilter{httpFilter(routerFilter, &routerv3.Router{})},
		}
		out = append(out, &listenerv3.Listener{
			Name:        name,
			ApiListener: &listenerv3.ApiListener{ApiListener: envoyproto.Any(hcm)},
		})
	}
	return out
}
