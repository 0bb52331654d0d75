package discovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/prisma-systems/xspace-mesh/internal/backoff"
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
		svc = registry.Service{}
	}
	first := !v.known
	v.last, v.found, v.known = svc, err == nil, true
	d.publish(v.name, translate.VIP(v.name, svc, v.found))
	d.publishCallers(v, first)
}

// retryAfter is the backoff after n consecutive failures: doubling from
// RetryInterval up to MaxRetryInterval, jittered so that VIPs that failed
// together do not retry together.
func (d *Discovery) retryAfter(n int) time.Duration {
	return backoff.Policy{Min: d.opts.RetryInterval, Max: d.opts.MaxRetryInterval, Jitter: 0.2}.Delay(n)
}

// publish puts what a VIP yields in the cache, set by set; a set that
// could not be translated in full is counted and logged, and what it has
// published.
func (d *Discovery) publish(name string, y translate.Yield) {
	d.routes.set(name, y.OwnRoute)
	for _, set := range y.Sets {
		d.publishSet(name, set)
	}
}

// publishSet is one set of publish.
func (d *Discovery) publishSet(name string, set translate.Set) {
	if set.Err != nil {
		d.metrics.translateErrors.Inc()
		d.log.Error("VIP not fully published; proxies keep the previous resources of what failed", "vip", name, "error", fmt.Errorf("translate: %w", set.Err))
	}
	if len(set.Resources) == 0 {
		return
	}
	if err := d.pub.Update(items(set.Resources)...); err != nil {
		d.log.Error("publishing", "vip", name, "error", err)
	}
}

// items are translated resources as the cache takes them.
func items(rs []translate.Resource) []cache.Item {
	out := make([]cache.Item, len(rs))
	for i, r := range rs {
		out[i] = cache.Item{TypeURL: r.TypeURL, Name: r.Name, Msg: r.Msg}
	}
	return out
}

// unpublish forgets a VIP's resources when no stream holds it any more.
// Called with d.mu held.
func (d *Discovery) unpublish(v *vip) {
	d.routes.set(v.name, registry.VIP{})
	for _, it := range items(translate.Owned(v.name)) {
		d.pub.Delete(it)
	}
	for port := range v.inbound {
		d.pub.Delete(cache.Item{TypeURL: resource.RouteType, Name: names.InboundRoute(v.name, port)})
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
