package discovery

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

// routesInterval is the least time between two publications of the
// outbound route configuration. A lone change is published at once; a burst
// (a fleet reconnecting after a restart re-resolves its VIPs) is coalesced
// into one push to every sidecar per interval.
const routesInterval = 100 * time.Millisecond

// outboundRoutes is the outbound route configuration of every sidecar: a
// route of its own for each watched VIP whose policy needs one
// (translate.Yield.OwnRoute), and the platform defaults for all others.
// Only watched VIPs are listed, so it follows the fleet's working set, and
// it changes only when such a VIP comes, goes or changes its policy.
type outboundRoutes struct {
	pub Publisher
	// now and after are the clock: time.Now and time.AfterFunc.
	now   func() time.Time
	after func(time.Duration, func())
	// failed is told of a configuration that was not published.
	failed func(error)

	mu      sync.Mutex
	routes  map[string]registry.VIP
	at      time.Time // last published
	pending bool      // a publication is scheduled
}

// set gives a VIP its own route, or, for the zero VIP, none. A route may
// reach a sidecar after the VIP's cluster: the first requests to a VIP no
// sidecar held yet may be routed with the defaults.
func (r *outboundRoutes) set(name string, own registry.VIP) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old, listed := r.routes[name]
	switch {
	case own.Name != "" && listed && old.Policy.Equal(own.Policy):
		return
	case own.Name != "":
		r.routes[name] = own
	case !listed:
		return
	default:
		delete(r.routes, name)
	}
	r.changed()
}

// changed publishes now, or, if the last publication is less than
// routesInterval old, once the interval has passed. Called with r.mu held.
func (r *outboundRoutes) changed() {
	if r.pending {
		return
	}
	wait := r.at.Add(routesInterval).Sub(r.now())
	if wait <= 0 {
		r.publish()
		return
	}
	r.pending = true
	r.after(wait, r.flush)
}

// flush publishes a scheduled publication now.
func (r *outboundRoutes) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending {
		r.pending = false
		r.publish()
	}
}

// publish publishes the configuration. Called with r.mu held.
func (r *outboundRoutes) publish() {
	r.at = r.now()
	rc := translate.OutboundRouteConfiguration(slices.Collect(maps.Values(r.routes)))
	err := rc.Validate()
	if err == nil {
		err = r.pub.Update(cache.Item{TypeURL: resource.RouteType, Name: rc.GetName(), Msg: rc})
	}
	if err != nil {
		r.failed(fmt.Errorf("translate: %w", err))
	}
}
