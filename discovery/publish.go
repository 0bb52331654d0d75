package discovery

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
	d.publish(v.name, translate.VIPParts(v.name, svc, v.found, v.parts, d.templates))
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
		out[i] = cache.Item{TypeURL: r.TypeURL, Name: r.Name, Msg: r.Msg, Encoded: r.Encoded, Independent: r.Independent}
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

// partOf is the part of its VIP's resources a resource of typeURL named
// name belongs to: none for a name no resource of that type has (a
// listener named like a secure cluster), all of them for "" (any type).
func partOf(typeURL, name string) translate.Part {
	vip, secure, _ := names.ParseResource(name)
	plain := name == names.Cluster(vip, false)
	switch typeURL {
	case resource.ClusterType:
		switch {
		case secure:
			return translate.SecureClusterPart
		case plain:
			return translate.PlainClusterPart
		}
		return 0
	case resource.EndpointType:
		switch {
		case secure:
			return translate.SecureEndpointsPart
		case plain:
			return translate.PlainEndpointsPart
		}
		return 0
	case resource.RouteType:
		if plain {
			return translate.ProxylessPart
		}
		return 0
	case resource.ListenerType:
		if !secure {
			return translate.ProxylessPart
		}
		return 0
	}
	return translate.AllParts
}

// demand makes sure a part of a VIP's resources is published, built from
// its newest successful lookup (a part asked for before any lookup
// succeeded is published by the one that does).
func (d *Discovery) demand(v *vip, part translate.Part) {
	v.resolveMu.Lock()
	defer v.resolveMu.Unlock()
	add := part.WithDependencies() &^ v.parts
	if add == 0 || v.forgotten {
		return
	}
	v.parts |= add
	if v.known {
		d.publish(v.name, translate.VIPParts(v.name, v.last, v.found, add, d.templates))
	}
}

// templates keeps a cluster template per policy, for the VIPs looked up:
// most VIPs share a policy, and most have none (the zero policy, which
// needs no key to be found). It forgets them all when it holds
// maxTemplates.
type templates struct {
	none *translate.ClusterTemplate

	mu    sync.Mutex
	byKey map[translate.PolicyKey]*translate.ClusterTemplate
}

const maxTemplates = 1024

var _ translate.Templates = (*templates)(nil)

func newTemplates() *templates {
	return &templates{
		none:  translate.NewClusterTemplate(registry.Policy{}),
		byKey: make(map[translate.PolicyKey]*translate.ClusterTemplate),
	}
}

func (t *templates) Template(policy registry.Policy) *translate.ClusterTemplate {
	if policy.IsZero() {
		return t.none
	}
	key := translate.KeyOf(policy)
	t.mu.Lock()
	defer t.mu.Unlock()
	if tmpl := t.byKey[key]; tmpl != nil {
		return tmpl
	}
	if len(t.byKey) >= maxTemplates {
		clear(t.byKey)
	}
	tmpl := translate.NewClusterTemplate(policy)
	t.byKey[key] = tmpl
	return tmpl
}
