package cache

import (
	"context"
	"slices"
	"strconv"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// deltaWatch is one delta stream waiting for a change to one of its names.
// A kept watch (see stream.go) lives as long as its stream.
type deltaWatch struct {
	req *gcpcache.DeltaRequest
	sub gcpcache.Subscription
	ch  chan gcpcache.DeltaResponse

	kept bool
	// active says go-control-plane's watch is open: a change is answered
	// at once rather than remembered in pending. Kept watches only.
	active  bool
	pending map[string]struct{}
}

// CreateDeltaWatch answers at once when the stream lacks anything the cache
// knows, and otherwise waits until one of its names changes.
//
// Every name in the request's resource_names_subscribe is answered, with
// the resource or in removed_resources, unless the request's
// initial_resource_versions show the client already has that version:
// Envoy's on-demand CDS subscribes again to a name each time a request
// needs it, and waits for an answer every time.
//
// A wildcard subscription is never given the world: it is served the names
// it subscribed to explicitly and the type's wildcard names for its node
// (Wildcard), with one first answer even if that is empty, so that a client
// waiting on its initial fetch can proceed.
//
// The watches of a stream opened with OpenStream are kept across its
// requests (stream.go); others look at every name the stream holds.
func (c *Cache) CreateDeltaWatch(req *gcpcache.DeltaRequest, sub gcpcache.Subscription, ch chan gcpcache.DeltaResponse) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, served := c.served(req.GetTypeUrl())
	if _, ok := c.streams[req.GetNode()]; ok && served {
		return c.keptWatch(ts, req, sub, ch), nil
	}
	if resp := c.deltaResponse(ts, req, sub, true); resp != nil {
		ch <- resp
		return func() {}, nil
	}
	if !served { // nothing will ever be published for this type
		return func() {}, nil
	}
	w := &deltaWatch{req: req, sub: sub, ch: ch}
	index(&ts.delta, ts, req.GetNode(), sub, w)
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		unindex(&ts.delta, ts, req.GetNode(), sub, w)
	}, nil
}

// deltaResponse compares what the stream holds with what the cache knows
// for each subscribed name, and returns nil when there is nothing to say.
// A name is
//   - present: sent when the stream's version differs;
//   - a tombstone: sent in removed_resources unless the stream was told so;
//   - unknown: sent in removed_resources to a stream that holds nothing of
//     it (not found, promptly), but never to one that holds a version: a
//     name the registry could not resolve yet is not taken from a proxy.
//
// fresh says the request itself is being answered, so the names it
// subscribes to are judged against its initial_resource_versions rather
// than what the stream was sent before. Called with c.mu held.
func (c *Cache) deltaResponse(ts *typeState, req *gcpcache.DeltaRequest, sub gcpcache.Subscription, fresh bool) *deltaResponse {
	implied := ts.implied(req.GetNode(), sub)
	return c.respond(ts, req, sub, implied, fresh, false, func(fn func(string, bool)) { forEachName(sub, implied, fn) })
}

// respond is deltaResponse over the names names calls fn with. With
// inPlace, the response's version map is the subscription's own, updated
// in place, rather than a copy: only a kept watch may (stream.go).
func (c *Cache) respond(ts *typeState, req *gcpcache.DeltaRequest, sub gcpcache.Subscription, implied []string,
	fresh, inPlace bool, names func(fn func(name string, isImplied bool)),
) *deltaResponse {
	returned := sub.ReturnedResources()
	var asked map[string]struct{}
	if fresh {
		asked = make(map[string]struct{}, len(req.GetResourceNamesSubscribe()))
		for _, n := range req.GetResourceNamesSubscribe() {
			asked[n] = struct{}{}
		}
	}
	var (
		resources []*discoveryv3.Resource
		removed   []string
		next      map[string]string
	)
	record := func(name, version string) {
		if next == nil && inPlace && returned != nil {
			next = returned
		}
		if next == nil {
			next = make(map[string]string, len(returned)+1)
			for n, v := range returned {
				if _, ok := sub.SubscribedResources()[n]; ok || n == wildcardServed || slices.Contains(implied, n) {
					next[n] = v
				}
			}
		}
		next[name] = version
	}
	names(func(name string, isImplied bool) {
		held := returned[name]
		if _, ok := asked[name]; ok {
			held = req.GetInitialResourceVersions()[name]
		}
		switch e := ts.lookup(req.GetNode(), name); {
		case e == nil && held != "" && held != absent:
			// unknown, and the client holds a version: leave it be
		case e == nil || e.tombstone():
			// A wildcard name the client never received is not missing:
			// the wildcard asked for whatever exists.
			if held != absent && (!isImplied || held != "") {
				removed = append(removed, name)
				record(name, absent)
			}
		case held != e.version:
			resources = append(resources, e.delta)
			record(name, e.version)
		}
	})
	if sub.IsWildcard() && returned[wildcardServed] == "" {
		record(wildcardServed, "served")
	}
	if next == nil {
		return nil
	}
	slices.SortFunc(resources, func(a, b *discoveryv3.Resource) int { return strings.Compare(a.GetName(), b.GetName()) })
	slices.Sort(removed)
	return &deltaResponse{
		req:       req,
		resources: resources,
		removed:   removed,
		next:      next,
		system:    strconv.FormatUint(c.system.Add(1), 10),
	}
}

// deltaResponse is a cache.DeltaResponse built from pre-encoded resources.
type deltaResponse struct {
	req       *gcpcache.DeltaRequest
	resources []*discoveryv3.Resource
	removed   []string
	next      map[string]string
	system    string
}

var _ gcpcache.DeltaResponse = (*deltaResponse)(nil)

// GetDeltaDiscoveryResponse builds a fresh message around the shared
// resources; the server sets its nonce.
func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discoveryv3.DeltaDiscoveryResponse, error) {
	return &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: r.system,
		TypeUrl:           r.req.GetTypeUrl(),
		Resources:         r.resources,
		RemovedResources:  r.removed,
	}, nil
}

func (r *deltaResponse) GetDeltaRequest() *discoveryv3.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                   { return r.system, nil }
func (r *deltaResponse) GetResponseVersion() string                          { return r.system }
func (r *deltaResponse) GetNextVersionMap() map[string]string                { return r.next }
func (r *deltaResponse) GetReturnedResources() map[string]string             { return r.next }
func (r *deltaResponse) GetContext() context.Context                         { return context.Background() }
