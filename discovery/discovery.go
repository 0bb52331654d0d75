// Package discovery decides what the xDS cache holds. It resolves the VIPs
// proxies ask for on demand, keeps watching each one while any stream holds
// it (reference counted), republishes its resources (the .vip and .svip
// clusters with their endpoints, for gRPC VIPs the API listener and route
// of proxyless gRPC, and the inbound routes of its own sidecars, which say
// who may call it: inbound.go) when the registry reports a change, and forgets
// it a grace period after the last stream lets go, so memory follows the
// working set of the fleet. Secrets does the same for SDS identities.
//
// Names the registry does not have cost memory too (a watch, so that the
// streams holding one are told when it appears), and any client can make
// them up, so they are bounded on their own: a VIP that is not found is
// forgotten soon after its last holder lets go (NotFoundGrace), and at most
// MaxNotFound of them are tracked at once. Past that cap the oldest ones no
// stream holds make room, and when every tracked one is held, a new name is
// answered "not found" without keeping anything (see Acquire).
//
// A change to one VIP rebuilds that VIP's resources only. When the registry
// fails, the last known resources keep being served.
package discovery

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/shrink"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

// Publisher is where discovery puts the resources it builds: the xDS cache.
type Publisher interface {
	// Update publishes resources, or tombstones for names known not to
	// exist, in one step; later items depend on earlier ones.
	Update(items ...cache.Item) error
	// Delete forgets a resource: its name becomes unknown.
	Delete(it cache.Item)
}

// The defaults of Options (and of meshd's discovery configuration).
const (
	DefaultGrace         = 5 * time.Minute
	DefaultNotFoundGrace = 30 * time.Second
	DefaultMaxNotFound   = 2000
)

// Options tune discovery; zero values take the defaults.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Grace is how long a VIP no stream holds stays watched.
	Grace time.Duration
	// NotFoundGrace is how long a VIP that does not exist, and that no
	// stream holds, stays watched.
	NotFoundGrace time.Duration
	// MaxNotFound bounds the VIPs that do not exist tracked at once; see
	// the package comment.
	MaxNotFound int
	// RetryInterval is how soon a VIP whose lookup failed is first looked up
	// again (default 1s); it doubles with each failure, up to MaxRetryInterval
	// (default 30s), with jitter.
	RetryInterval    time.Duration
	MaxRetryInterval time.Duration
	// LookupTimeout bounds one registry lookup (default 10s).
	LookupTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Discovery tracks the VIPs that proxies hold.
type Discovery struct {
	src     registry.Source
	pub     Publisher
	log     *slog.Logger
	metrics *metrics
	opts    Options

	mu   sync.Mutex
	vips map[string]*vip
	// vipsPeak is the most vips held since the map was last right-sized.
	vipsPeak int
	// absent counts the watched VIPs that do not exist (vip.absent);
	// idleAbsent lists those no stream holds, longest idle first.
	absent     int
	idleAbsent *list.List

	dirtyMu sync.Mutex
	dirty   map[string]struct{}
	// deferred counts changes to VIPs whose first lookup was running when
	// the change was processed; each is marked dirty again once it ends.
	deferred int
	wakeup   chan struct{}

	// syncs are Sync's requests; Run answers them (closes the channel)
	// once every change before them is published.
	syncs chan chan struct{}

	routes *outboundRoutes
	// templates are the cluster templates of the policies of the VIPs
	// looked up.
	templates *templates
}

// vip is the state of one watched VIP.
type vip struct {
	name string
	// resolveMu serializes lookups and publishing for this VIP, so the last
	// state published is always from the newest lookup.
	resolveMu sync.Mutex
	// ready is closed once the first lookup has been published.
	ready chan struct{}
	stop  func()

	// guarded by Discovery.mu
	refs      int
	idleSince time.Time
	// absent mirrors !found as of lookup number absentAt, for the bound on
	// VIPs that do not exist (see track).
	absent   bool
	absentAt uint64
	// idle is its element of Discovery.idleAbsent while it is absent and
	// no stream holds it.
	idle *list.Element
	// untracked says it was dropped at its first lookup: it does not
	// exist and MaxNotFound were tracked already.
	untracked bool
	// inbound counts, by app port, the references held through the VIP's
	// inbound routes (names.InboundRoute): the routes to publish. Made at
	// the first such reference.
	inbound map[uint32]int

	// guarded by resolveMu
	// parts are the parts of its resources that streams asked for: only
	// those are built and published (translate.VIPParts).
	parts     translate.Part
	last      registry.Service
	found     bool
	known     bool      // a lookup succeeded: last is the registry's answer
	callers   *[]string // allowed_callers of the inbound routes published
	err       error
	failures  int    // consecutive failed lookups
	lookups   uint64 // lookups that finished, numbering what absentAt records
	forgotten bool
}

// New returns a Discovery over a registry source, publishing into pub. Call Run.
func New(src registry.Source, pub Publisher, opts Options) *Discovery {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.NotFoundGrace <= 0 {
		opts.NotFoundGrace = DefaultNotFoundGrace
	}
	if opts.MaxNotFound <= 0 {
		opts.MaxNotFound = DefaultMaxNotFound
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = time.Second
	}
	if opts.MaxRetryInterval < opts.RetryInterval {
		opts.MaxRetryInterval = max(30*time.Second, opts.RetryInterval)
	}
	if opts.LookupTimeout <= 0 {
		opts.LookupTimeout = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	d := &Discovery{
		src:        src,
		pub:        pub,
		log:        opts.Logger.With("component", "discovery"),
		metrics:    newMetrics(opts.Registerer),
		opts:       opts,
		vips:       make(map[string]*vip),
		idleAbsent: list.New(),
		dirty:      make(map[string]struct{}),
		wakeup:     make(chan struct{}, 1),
		syncs:      make(chan chan struct{}),
		templates:  newTemplates(),
	}
	d.routes = &outboundRoutes{
		pub: pub, now: opts.Now, routes: make(map[string]registry.VIP),
		after: func(wait time.Duration, fn func()) { time.AfterFunc(wait, fn) },
		failed: func(err error) {
			d.metrics.translateErrors.Inc()
			d.log.Error("outbound routes not published; sidecars keep the previous ones", "error", err)
		},
	}
	return d
}

// Acquire is called when a stream subscribes to a VIP's resource by name (a
// cluster, its endpoints, or its gRPC listeners or route, which share the
// cluster's name, and the bare VIP name of its other gRPC listener:
// names.ParseResource). It returns once the VIP's resources, or their
// absence, are in the cache, so the stream's answer is immediate.
//
// found reports whether the VIP exists (its cluster of that name may still
// be absent: a .vip whose policy serves mutual TLS only). held reports
// whether the caller now holds a reference, to be given back with one
// Release: names that are not a VIP's hold nothing, nor does a VIP that
// does not exist when MaxNotFound others that do not exist are held.
func (d *Discovery) Acquire(ctx context.Context, cluster string) (found, held bool) {
	return d.AcquireResource(ctx, "", cluster)
}

// AcquireResource is Acquire of the resource of one type (a type URL; ""
// for all of them) named cluster: it returns once that resource is in the
// cache, and builds only the part of the VIP's resources it belongs to
// (partOf); the rest is built once a stream asks for it. An Envoy sidecar
// asking for a cluster waits for that cluster only, not for its
// endpoints, its other cluster or the gRPC listeners and route.
func (d *Discovery) AcquireResource(ctx context.Context, typeURL, cluster string) (found, held bool) {
	start := d.opts.Now()
	name, secure, ok := names.ParseResource(cluster)
	if !ok {
		d.metrics.looked(resultNotFound)
		return false, false
	}
	_, appPort, inbound := names.ParseInboundRoute(cluster)
	d.mu.Lock()
	v := d.vips[name]
	first := v == nil
	if first {
		v = &vip{name: name, ready: make(chan struct{})}
		d.vips[name] = v
		d.vips = shrink.Map(d.vips, &d.vipsPeak)
		d.metrics.watched.Inc()
	}
	d.hold(v)
	newPort := false
	if inbound {
		if v.inbound == nil {
			v.inbound = make(map[uint32]int)
		}
		v.inbound[appPort]++
		newPort = v.inbound[appPort] == 1
	}
	d.mu.Unlock()

	if first {
		// Watch before the first lookup so no change can fall between them.
		// The lookup serves every stream waiting for this VIP, so it must
		// not end with the first one.
		v.stop = d.src.Watch(name, func() { d.markDirty(name) })
		v.resolveMu.Lock()
		v.parts = partOf(typeURL, cluster).WithDependencies()
		v.resolveMu.Unlock()
		d.track(v, d.resolve(v))
		close(v.ready)
	} else {
		if !closed(v.ready) {
			select {
			case <-v.ready:
			case <-ctx.Done():
				// The stream went away before the answer: it holds nothing.
				d.mu.Lock()
				if d.vips[name] == v {
					d.unhold(v)
				}
				d.mu.Unlock()
				if inbound {
					d.releaseInbound(v, appPort)
				}
				return false, false
			}
		}
		d.demand(v, partOf(typeURL, cluster))
	}
	if !first && newPort {
		d.publishInbound(v, appPort)
	}
	d.mu.Lock()
	untracked := v.untracked
	d.mu.Unlock()
	result := resultNotFound
	if !untracked {
		result = d.result(v, secure)
	}
	d.metrics.looked(result)
	d.metrics.resolve.Observe(d.opts.Now().Sub(start).Seconds())
	return result == resultFound, !untracked
}

// Release undoes one Acquire that held. A VIP no stream holds is forgotten
// after the grace period (NotFoundGrace if it does not exist).
func (d *Discovery) Release(cluster string) {
	name, _, ok := names.ParseResource(cluster)
	if !ok {
		return
	}
	d.mu.Lock()
	v := d.vips[name]
	if v == nil || v.refs == 0 {
		d.mu.Unlock()
		d.log.Error("release of a cluster that was not acquired", "cluster", cluster)
		return
	}
	d.unhold(v)
	d.mu.Unlock()
	if _, appPort, ok := names.ParseInboundRoute(cluster); ok {
		d.releaseInbound(v, appPort)
	}
}

// Found reports whether a VIP's name exists as of its latest lookup; false
// for a VIP that is not watched.
func (d *Discovery) Found(cluster string) bool {
	name, _, ok := names.ParseResource(cluster)
	if !ok {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.vips[name]
	return v != nil && !v.absent && closed(v.ready)
}

// result classifies an acquired cluster for the lookups metric.
func (d *Discovery) result(v *vip, secure bool) string {
	v.resolveMu.Lock()
	defer v.resolveMu.Unlock()
	switch {
	case v.err != nil && !v.found:
		return resultError
	case !v.found || (!secure && !v.last.VIP.Policy.PlaintextAllowed()):
		return resultNotFound
	}
	return resultFound
}

func (d *Discovery) markDirty(name string) {
	d.dirtyMu.Lock()
	d.dirty[name] = struct{}{}
	d.dirtyMu.Unlock()
	d.wake()
}

func (d *Discovery) wake() {
	select {
	case d.wakeup <- struct{}{}:
	default:
	}
}

// Run processes registry changes and forgets idle VIPs until ctx ends.
func (d *Discovery) Run(ctx context.Context) {
	d.routes.mu.Lock()
	d.routes.publish()
	d.routes.mu.Unlock()
	sweep := time.NewTicker(min(d.opts.Grace/4, d.opts.NotFoundGrace/4, 10*time.Second))
	defer sweep.Stop()
	var syncs []chan struct{}
	for {
		select {
		case <-ctx.Done():
			d.stopAll()
			return
		case done := <-d.syncs:
			syncs = append(syncs, done)
			d.processDirty()
		case <-d.wakeup:
			d.processDirty()
		case <-sweep.C:
			d.forgetIdle()
		}
		if len(syncs) > 0 && d.settled() {
			d.routes.flush()
			for _, done := range syncs {
				close(done)
			}
			syncs = nil
		}
	}
}

// Sync returns once every registry change the source notified before the
// call has been looked up and its result published, including the
// outbound route configuration it affects (published now rather than
// coalesced). Tests wait on it before asserting that a change did not
// reach a stream. A registry that learns of changes asynchronously (Consul)
// notifies them after they happen: Sync covers only those it has
// notified. Sync waits for Run, and gives up with ctx's error.
func (d *Discovery) Sync(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case d.syncs <- done:
	case <-ctx.Done():
		return fmt.Errorf("discovery sync: %w", ctx.Err())
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("discovery sync: %w", ctx.Err())
	}
}

// settled reports that no change is waiting to be processed: none is
// marked dirty and none waits for a first lookup to end.
func (d *Discovery) settled() bool {
	d.dirtyMu.Lock()
	defer d.dirtyMu.Unlock()
	return len(d.dirty) == 0 && d.deferred == 0
}

func (d *Discovery) processDirty() {
	d.dirtyMu.Lock()
	batch := d.dirty
	d.dirty = make(map[string]struct{}) // not sized like batch: a burst must not outlive itself
	d.dirtyMu.Unlock()
	for name := range batch {
		d.mu.Lock()
		v := d.vips[name]
		d.mu.Unlock()
		switch {
		case v == nil:
		case !closed(v.ready):
			// Its first lookup is still running and may have read the
			// registry before this change: look again once it is done,
			// without holding up the other VIPs.
			d.dirtyMu.Lock()
			d.deferred++
			d.dirtyMu.Unlock()
			go func() {
				<-v.ready
				d.dirtyMu.Lock()
				d.dirty[name] = struct{}{}
				d.deferred--
				d.dirtyMu.Unlock()
				d.wake()
			}()
		default:
			d.track(v, d.resolve(v))
		}
	}
}

// forgetIdle stops watching VIPs that no stream has held for their grace
// period (NotFoundGrace for those that do not exist) and removes their
// resources. It holds d.mu throughout, so an Acquire of the same VIP either
// keeps it alive or starts afresh after it.
func (d *Discovery) forgetIdle() {
	now := d.opts.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.vips {
		grace := d.opts.Grace
		if v.absent {
			grace = d.opts.NotFoundGrace
		}
		if v.refs > 0 || now.Sub(v.idleSince) < grace || !closed(v.ready) {
			continue
		}
		if d.forget(v) {
			d.log.Debug("forgot idle VIP", "vip", v.name)
		}
	}
	d.vips = shrink.Map(d.vips, &d.vipsPeak)
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// ForgetIdle runs one pass of forgetting now; Run does it periodically.
func (d *Discovery) ForgetIdle() { d.forgetIdle() }

func (d *Discovery) stopAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.vips {
		if closed(v.ready) {
			v.stop()
		}
	}
}
