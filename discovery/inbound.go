package discovery

import (
	"maps"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

// The inbound routes of a VIP's sidecars (names.InboundRoute) say who may
// call it. There is one per app port the sidecars forward to, which only
// their subscriptions tell: a VIP publishes the routes of the app ports
// held (vip.inbound), with every lookup, and a route no stream holds any
// more is removed. Only the sidecars of that VIP subscribe to them, so a
// change of its allowed_callers reaches them and no one else.

// publishCallers publishes v's inbound routes after a lookup, if it is
// the first to succeed or who may call v changed: they depend on nothing
// else, and an instance change must not rebuild them. A VIP none of whose
// inbound routes is held (most: only its own sidecars hold them) has
// nothing to publish; a route held later is published from the latest
// lookup (publishInbound). Called with v.resolveMu held.
func (d *Discovery) publishCallers(v *vip, first bool) {
	ports := d.inboundPorts(v)
	if len(ports) == 0 {
		return
	}
	callers := v.last.VIP.Policy.Normalize().AllowedCallers
	if !first && sameCallers(v.callers, callers) {
		return
	}
	v.callers = callers
	d.publishSet(v.name, translate.InboundRoutes(v.name, v.last.VIP.Policy, ports))
}

// sameCallers reports whether two normalized allowed_callers are the same:
// both left out, or the same list.
func sameCallers(a, b *[]string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return slices.Equal(*a, *b)
}

// inboundPorts are the app ports whose inbound routes v publishes; nil
// when none is held.
func (d *Discovery) inboundPorts(v *vip) []uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(v.inbound) == 0 {
		return nil
	}
	return slices.Collect(maps.Keys(v.inbound))
}

// publishInbound publishes v's inbound route for a newly held app port,
// from v's latest lookup. Nothing is published before a lookup succeeded:
// a VIP whose registry cannot be read lets no caller in on a guess.
func (d *Discovery) publishInbound(v *vip, appPort uint32) {
	v.resolveMu.Lock()
	defer v.resolveMu.Unlock()
	if v.forgotten || !v.known {
		return
	}
	// The callers of the routes held, for publishCallers to compare with
	// (it skips VIPs that hold none).
	v.callers = v.last.VIP.Policy.Normalize().AllowedCallers
	d.publishSet(v.name, translate.InboundRoutes(v.name, v.last.VIP.Policy, []uint32{appPort}))
}

// releaseInbound gives back one reference held through v's inbound route
// for appPort, and removes the route once none is held. The removal is
// made under resolveMu, so that no lookup publishes the route again after
// it.
func (d *Discovery) releaseInbound(v *vip, appPort uint32) {
	d.mu.Lock()
	v.inbound[appPort]--
	last := v.inbound[appPort] <= 0
	if last {
		delete(v.inbound, appPort)
	}
	d.mu.Unlock()
	if !last {
		return
	}
	v.resolveMu.Lock()
	defer v.resolveMu.Unlock()
	d.mu.Lock()
	_, held := v.inbound[appPort]
	d.mu.Unlock()
	if !held && !v.forgotten {
		d.pub.Delete(cache.Item{TypeURL: resource.RouteType, Name: names.InboundRoute(v.name, appPort)})
	}
}
