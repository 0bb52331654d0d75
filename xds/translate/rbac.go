package translate

import (
	"slices"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prisma-systems/xspace-mesh/internal/envoyproto"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// Who may call a service (its policy's allowed_callers) is enforced by
// the sidecars of its instances, on their inbound listener, with Envoy's
// RBAC HTTP filter on the caller's certificate identity (names.SPIFFE):
//
//   - The listener's filter has a base policy: any mesh identity. The
//     listener's TLS already requires one, so it adds nothing of its own;
//     it is what a route without a policy of its own gets.
//   - The listener takes its route from RDS (InboundRouteConfiguration),
//     one per service and app port, and the route carries the service's
//     callers as an RBACPerRoute: none for a policy without
//     allowed_callers (the base policy applies), a deny-all for an empty
//     list, the listed services otherwise.
//
// A route's RBACPerRoute replaces the listener's RBAC configuration for
// requests on that route, whole; with no per-route configuration the
// listener's applies (RoleBasedAccessControlFilterConfig::engine in
// source/extensions/filters/http/rbac/rbac_filter.cc, Envoy v1.36.0 and
// v1.39.0). The per-route configuration is found under the HTTP filter's
// name (ActiveStreamFilterBase::mostSpecificPerFilterConfig, filter
// context config_name, source/common/http/filter_manager.cc, v1.36.0). A
// denied request is answered 403 "RBAC: access denied"
// (evaluateEnforcedEngine, same file). An ALLOW policy matching a
// principal_name looks at the peer certificate's URI SANs first
// (AuthenticatedMatcher::matches, source/extensions/filters/common/rbac/
// matchers.cc, v1.36.0).
//
// A change of one service's callers changes that service's routes only,
// so it reaches only the sidecars of that service, and, RDS updates
// draining no connection, cuts no request short.

// rbacFilter is the name of Envoy's RBAC HTTP filter, under which a route
// carries its RBACPerRoute.
const rbacFilter = "envoy.filters.http.rbac"

// Names of the RBAC policies, which Envoy reports in a denied request's
// response details and in its per-policy stats.
const (
	meshPolicy    = "mesh-identity"
	callersPolicy = "allowed-callers"
	nobodyPolicy  = "no-callers"
)

// inboundRBAC is the inbound listener's RBAC filter: any mesh identity
// may call, unless the route says otherwise.
func inboundRBAC() *rbacv3.RBAC {
	return &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{
		Action: rbacconfigv3.RBAC_ALLOW,
		Policies: map[string]*rbacconfigv3.Policy{meshPolicy: {
			Permissions: []*rbacconfigv3.Permission{anyPermission()},
			Principals: []*rbacconfigv3.Principal{principal(&matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: names.SPIFFE("")},
			})},
		}},
	}}
}

// callersRBAC is a policy's allowed_callers as an RBACPerRoute, or nil
// when the policy lets any mesh identity call (the listener's base policy
// then applies). An empty list denies every caller; a list allows exactly
// those services' identities.
func callersRBAC(p registry.Policy) *rbacv3.RBACPerRoute {
	if p.AllowsAnyCaller() {
		return nil
	}
	callers := *p.AllowedCallers
	if len(callers) == 0 {
		// A DENY matching anyone, rather than an ALLOW with no policies:
		// both deny all, and this one says so when read.
		return &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{
			Action: rbacconfigv3.RBAC_DENY,
			Policies: map[string]*rbacconfigv3.Policy{nobodyPolicy: {
				Permissions: []*rbacconfigv3.Permission{anyPermission()},
				Principals:  []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Any{Any: true}}},
			}},
		}}}
	}
	principals := make([]*rbacconfigv3.Principal, 0, len(callers))
	for _, c := range slices.Sorted(slices.Values(callers)) {
		principals = append(principals, principal(&matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: names.SPIFFE(c)},
		}))
	}
	return &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{
		Action: rbacconfigv3.RBAC_ALLOW,
		Policies: map[string]*rbacconfigv3.Policy{callersPolicy: {
			Permissions: []*rbacconfigv3.Permission{anyPermission()},
			Principals:  principals,
		}},
	}}}
}

func anyPermission() *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: true}}
}

// principal matches a caller whose certificate's identity m matches.
func principal(m *matcherv3.StringMatcher) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{
		Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: m},
	}}
}

// InboundRouteConfiguration returns the route configuration of a
// service's inbound listeners forwarding to appPort
// (names.InboundRoute): every request goes to the application
// (names.LocalAppCluster, which the sidecar's bootstrap holds), if the
// policy's allowed_callers lets the caller in (callersRBAC). The caller's
// sidecar owns timeouts and retries, so the route has none. p need not be
// normalized.
func InboundRouteConfiguration(service string, appPort uint32, p registry.Policy) *routev3.RouteConfiguration {
	route := &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: names.LocalAppCluster(appPort)},
			Timeout:          durationpb.New(0),
		}},
	}
	if perRoute := callersRBAC(p.Normalize()); perRoute != nil {
		route.TypedPerFilterConfig = map[string]*anypb.Any{rbacFilter: envoyproto.Any(perRoute)}
	}
	name := names.InboundRoute(service, appPort)
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: []string{"*"},
			Routes:  []*routev3.Route{route},
		}},
	}
}

// InboundRoutes are the inbound route configurations of a VIP's sidecars,
// one per app port they forward to, from the VIP's policy as the registry
// has it (the zero policy, letting any mesh identity in, for a VIP that
// does not exist: its sidecars may start before it is registered, and
// Envoy ignores an RDS removal, so an inbound listener told its route does
// not exist would wait FetchTimeout for it and then answer 404:
// RdsRouteConfigSubscription::onConfigUpdate in
// source/common/rds/rds_route_config_subscription.cc, v1.36.0 and
// v1.39.0). One that does not validate is left out, with the error.
func InboundRoutes(vip string, p registry.Policy, appPorts []uint32) Set {
	var set Set
	for _, port := range slices.Sorted(slices.Values(appPorts)) {
		rc := InboundRouteConfiguration(vip, port, p)
		if err := rc.Validate(); err != nil {
			set.Err = err
			continue
		}
		set.Resources = append(set.Resources, Resource{TypeURL: resource.RouteType, Name: rc.GetName(), Msg: rc})
	}
	return set
}
