package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

// outcome is whether a VIP existed after a lookup, and which lookup that
// was, so that outcomes reported out of order are told apart (see track).
type outcome struct {
	found bool
	n     uint64
}

// resolve looks a VIP up and publishes what it finds. On a registry error
// the last known resources stay published and the lookup is retried with
// backoff; only the first failure and the recovery are logged.
func (d *Discovery) resolve(v *vip) outcome {
	v.resolveMu.Lock()
	defer v.resolveMu.Unlock()
	if v.forgotten {
		return outcome{found: v.found, n: v.lookups}
	}
	v.lookups++
	d.lookup(v)
	return outcome{found: v.found, n: v.lookups}
}

// lookup is one registry lookup of resolve. Called with v.resolveMu held.
func (d *Discovery) lookup(v *vip) {
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.LookupTimeout)
	svc, err := d.src.Lookup(ctx, v.name)
	cancel()
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		v.err = err
		v.failures++
		d.metrics.registryErrors.Inc()
		if v.failures == 1 {
			d.log.Warn("registry lookup failed; serving the last known state and retrying", "vip", v.name, "error", err)
		}
		name := v.name
		time.AfterFunc(d.retryAfter(v.failures), func() { d.markDirty(name) })
		return
	}
	if v.failures > 0 {
		d.log.Info("registry lookup recovered", "vip", v.name, "failed_lookups", v.failures)
	}
	v.err, v.failures = nil, 0
	if err != nil { // not found
		v.last, v.found = registry.Service{}, false
		d.publishAbsent(v.name)
		return
	}
	v.last, v.found = svc, true
	d.publish(v.name, svc)
}

// proxylessGRPC reports whether a VIP is served to proxyless gRPC clients:
// its API listeners and route configuration lead them to its plaintext
// cluster. Only gRPC VIPs that allow plaintext are; to any other VIP the
// listeners lead to a route configuration with no routes (unservedGRPC).
func proxylessGRPC(svc registry.Service) bool {
	p := svc.VIP.Policy.Normalize()
	return p.Protocol == registry.GRPC && p.PlaintextAllowed()
}

// retryAfter is the backoff after n consecutive failures: doubling from
// RetryInterval up to MaxRetryInterval, with +-20 % jitter so that VIPs that
// failed together do not retry together.
func (d *Discovery) retryAfter(n int) time.Duration {
	delay := d.opts.RetryInterval
	for i := 1; i < n && delay < d.opts.MaxRetryInterval; i++ {
		delay *= 2
	}
	delay = min(delay, d.opts.MaxRetryInterval)
	return time.Duration(float64(delay) * (0.8 + 0.4*rand.Float64()))
}

// publish translates one VIP into its mutual-TLS cluster and, when its
// policy allows plaintext, its plaintext cluster, with the API listeners
// and route configuration of proxyless gRPC.
func (d *Discovery) publish(name string, svc registry.Service) {
	d.setRoute(name, svc.VIP)
	d.publishPair(name, translate.SecureCluster(svc.VIP), translate.SecureClusterLoadAssignment(svc), nil)
	plain := names.Cluster(name, false)
	if !svc.VIP.Policy.PlaintextAllowed() {
		d.update(name, append(unservedGRPC(name), absentPair(plain)...))
		return
	}
	grpc := unservedGRPC(name)
	if proxylessGRPC(svc) {
		route := translate.RouteConfiguration(svc.VIP)
		if err := route.Validate(); err != nil {
			d.metrics.translateErrors.Inc()
			d.log.Error("gRPC route not published; gRPC clients keep the previous one", "vip", name, "error", fmt.Errorf("translate: %w", err))
			grpc = nil
		} else {
			grpc = grpcItems(name, route)
		}
	}
	d.publishPair(name, translate.Cluster(svc.VIP), translate.ClusterLoadAssignment(svc), grpc)
}

// validateAll returns the first error of resources' own validation.
func validateAll(msgs ...interface{ Validate() error }) error {
	for _, m := range msgs {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// grpcItems are what a proxyless gRPC client that dials a VIP receives:
// the API listeners, then the route configuration they name. The
// listeners go first because an item's version covers the items before
// it: they never change, and must not be sent again when the route does.
// They are published in the same step, so the route is there when a
// client that received a listener asks for it.
func grpcItems(name string, route *routev3.RouteConfiguration) []cache.Item {
	var items []cache.Item
	for _, l := range translate.APIListeners(name) {
		items = append(items, cache.Item{TypeURL: resource.ListenerType, Name: l.GetName(), Msg: l})
	}
	return append(items, cache.Item{TypeURL: resource.RouteType, Name: route.GetName(), Msg: route})
}

// unservedGRPC are the API listeners and route configuration of a VIP not
// served to proxyless gRPC clients (it does not exist, is not a gRPC VIP,
// or serves mutual TLS only). They are real resources, not tombstones: a
// state-of-the-world client never learns that a name it never received
// does not exist (see cache.CreateWatch), so it would wait 15 s or its
// call's deadline; given a route with no routes, it fails each call at
// once, and succeeds once the VIP is served under the same names.
func unservedGRPC(name string) []cache.Item {
	return grpcItems(name, translate.UnservedRouteConfiguration(name))
}

// publishPair puts a Cluster and its ClusterLoadAssignment in the cache in
// one step: the endpoints are ready before any proxy receives the cluster,
// and a changed cluster also gets a new endpoints version, which Envoy needs
// to finish warming it. A pair that does not validate keeps its previous
// resources.
//
// grpc (the route configuration and API listeners, served or not) is
// published in the same step, so a gRPC client that receives the listener
// finds everything it leads to. It goes first: an item's version covers the
// items before it, and listing it after the pair would re-send the listener
// and route to every gRPC client on each endpoint change.
func (d *Discovery) publishPair(name string, cluster *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, grpc []cache.Item) {
	err := validateAll(cluster, cla)
	if err == nil {
		err = d.pub.Update(append(grpc,
			cache.Item{TypeURL: resource.ClusterType, Name: cluster.GetName(), Msg: cluster},
			cache.Item{TypeURL: resource.EndpointType, Name: cla.GetClusterName(), Msg: cla},
		)...)
	}
	if err != nil {
		d.metrics.translateErrors.Inc()
		d.log.Error("VIP not published; proxies keep its previous resources", "vip", name, "error", fmt.Errorf("translate: %w", err))
	}
}

// publishAbsent records that a VIP's resources do not exist, so
// subscribers are told at once and told again if they come back.
func (d *Discovery) publishAbsent(name string) {
	d.setRoute(name, registry.VIP{})
	plain := names.Cluster(name, false)
	d.update(name, append(unservedGRPC(name), absentPair(plain)...))
	d.update(name, absentPair(names.Cluster(name, true)))
}

// absentPair are the tombstones of a cluster and its endpoints.
func absentPair(cluster string) []cache.Item {
	return []cache.Item{{TypeURL: resource.ClusterType, Name: cluster}, {TypeURL: resource.EndpointType, Name: cluster}}
}

func (d *Discovery) update(name string, items []cache.Item) {
	if err := d.pub.Update(items...); err != nil {
		d.log.Error("publishing", "vip", name, "error", err)
	}
}

// unpublish forgets a VIP's resources when no stream holds it any more.
func (d *Discovery) unpublish(name string) {
	d.setRoute(name, registry.VIP{})
	for _, secure := range []bool{false, true} {
		cluster := names.Cluster(name, secure)
		d.pub.Delete(cache.Item{TypeURL: resource.ClusterType, Name: cluster})
		d.pub.Delete(cache.Item{TypeURL: resource.EndpointType, Name: cluster})
	}
	d.pub.Delete(cache.Item{TypeURL: resource.RouteType, Name: names.Cluster(name, false)})
	for _, l := range names.APIListeners(name) {
		d.pub.Delete(cache.Item{TypeURL: resource.ListenerType, Name: l})
	}
}

// routesInterval is the least time between two publications of the
// outbound route configuration. A lone change is published at once; a burst
// (a fleet reconnecting after a restart re-resolves its VIPs) is coalesced
// into one push to every sidecar per interval.
const routesInterval = 100 * time.Millisecond

// setRoute gives a VIP a route of its own in the outbound route
// configuration of every sidecar when its policy differs from the platform
// defaults (translate.HasOwnRoute), and takes it away otherwise (pass the
// zero VIP for one that is gone). Only watched VIPs are listed, so the
// configuration follows the fleet's working set, and it changes only when
// such a VIP comes, goes or changes its policy.
//
// It runs before the VIP's clusters are published, but the route reaches a
// sidecar in its own response, possibly after the cluster: the first
// requests to a VIP no sidecar held yet may be routed with the defaults.
func (d *Discovery) setRoute(name string, v registry.VIP) {
	d.routesMu.Lock()
	defer d.routesMu.Unlock()
	old, listed := d.routes[name]
	switch own := v.Name != "" && translate.HasOwnRoute(v); {
	case own && listed && reflect.DeepEqual(old.Policy.Normalize(), v.Policy.Normalize()):
		return
	case own:
		d.routes[name] = v
	case !listed:
		return
	default:
		delete(d.routes, name)
	}
	d.routesChanged()
}

// routesChanged publishes the outbound route configuration now, or, if it
// was published less than routesInterval ago, once the interval has
// passed. Called with routesMu held.
func (d *Discovery) routesChanged() {
	if d.routesPending {
		return
	}
	wait := time.Until(d.routesAt.Add(routesInterval))
	if wait <= 0 {
		d.publishRoutes()
		return
	}
	d.routesPending = true
	time.AfterFunc(wait, func() {
		d.routesMu.Lock()
		defer d.routesMu.Unlock()
		d.routesPending = false
		d.publishRoutes()
	})
}

// publishRoutes publishes the outbound route configuration. Called with
// routesMu held.
func (d *Discovery) publishRoutes() {
	d.routesAt = time.Now()
	rc := translate.OutboundRouteConfiguration(slices.Collect(maps.Values(d.routes)))
	err := rc.Validate()
	if err == nil {
		err = d.pub.Update(cache.Item{TypeURL: resource.RouteType, Name: rc.GetName(), Msg: rc})
	}
	if err != nil {
		d.metrics.translateErrors.Inc()
		d.log.Error("outbound routes not published; sidecars keep the previous ones", "error", fmt.Errorf("translate: %w", err))
	}
}

// WatchedVIP is discovery's view of one VIP, for debug endpoints.
type WatchedVIP struct {
	Name string
	// References counts the Acquires not yet released: one per stream,
	// resource type and name holding the VIP (a proxyless gRPC client
	// holds four, an Envoy sidecar two). The streams themselves are the
	// xDS server's to count.
	References int
	Found      bool
	Err        error
}

// Watched lists the VIPs discovery currently watches.
func (d *Discovery) Watched() []WatchedVIP {
	d.mu.Lock()
	vips := make([]*vip, 0, len(d.vips))
	refs := make([]int, 0, len(d.vips))
	for _, v := range d.vips {
		vips = append(vips, v)
		refs = append(refs, v.refs)
	}
	d.mu.Unlock()
	out := make([]WatchedVIP, 0, len(vips))
	for i, v := range vips {
		v.resolveMu.Lock()
		out = append(out, WatchedVIP{Name: v.name, References: refs[i], Found: v.found, Err: v.err})
		v.resolveMu.Unlock()
	}
	return out
}
