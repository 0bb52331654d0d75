package discovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

// resolve looks a VIP up and publishes what it finds. On a registry error
// the last known resources stay published and the lookup is retried.
func (d *Discovery) resolve(ctx context.Context, v *vip) {
	v.resolveMu.Lock()
	defer v.resolveMu.Unlock()
	if v.forgotten {
		return
	}
	svc, err := d.src.Lookup(ctx, v.name)
	switch {
	case err == nil:
		v.last, v.found, v.err = svc, true, nil
		d.publish(v.name, svc)
	case errors.Is(err, registry.ErrNotFound):
		v.last, v.found, v.err = registry.Service{}, false, nil
		d.unpublish(v.name)
	default:
		v.err = err
		d.metrics.registryErrors.Inc()
		d.log.Warn("registry lookup failed; serving the last known state", "vip", v.name, "error", err)
		name := v.name
		time.AfterFunc(d.opts.RetryInterval, func() { d.markDirty(name) })
	}
}

// publish translates one VIP and puts its resources in the cache, endpoints
// first so that a proxy receiving the cluster finds them ready. A VIP whose
// translation does not validate keeps its previous resources.
func (d *Discovery) publish(name string, svc registry.Service) {
	if !svc.VIP.Policy.PlaintextAllowed() {
		d.unpublish(name)
		return
	}
	cla := translate.ClusterLoadAssignment(svc)
	cluster := translate.Cluster(svc.VIP)
	err := cla.Validate()
	if err == nil {
		err = cluster.Validate()
	}
	if err == nil {
		err = d.pub.Set(cla.GetClusterName(), cla)
	}
	if err == nil {
		err = d.pub.Set(cluster.GetName(), cluster)
	}
	if err != nil {
		d.metrics.translateErrors.Inc()
		d.log.Error("VIP not published; proxies keep its previous resources", "vip", name, "error", fmt.Errorf("translate: %w", err))
	}
}

// unpublish removes a VIP's resources; subscribed streams are told.
func (d *Discovery) unpublish(name string) {
	cluster := names.Cluster(name, false)
	d.pub.Delete(resource.ClusterType, cluster)
	d.pub.Delete(resource.EndpointType, cluster)
}

// WatchedVIP is discovery's view of one VIP, for debug endpoints.
type WatchedVIP struct {
	Name        string
	Subscribers int
	Found       bool
	Err         error
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
		out = append(out, WatchedVIP{Name: v.name, Subscribers: refs[i], Found: v.found, Err: v.err})
		v.resolveMu.Unlock()
	}
	return out
}
