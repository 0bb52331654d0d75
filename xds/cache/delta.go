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
type deltaWatch struct {
	req *gcpcache.DeltaRequest
	sub gcpcache.Subscription
	ch  chan gcpcache.DeltaResponse
}

// CreateDeltaWatch answers at once when the subscription is missing anything
// the cache knows (a new or changed resource, or a name that does not exist),
// and otherwise waits until one of its names changes.
//
// A wildcard subscription is never given the world: it is served only the
// names it subscribed to explicitly, after one empty first answer so that a
// client waiting on its initial fetch can proceed.
func (c *Cache) CreateDeltaWatch(req *gcpcache.DeltaRequest, sub gcpcache.Subscription, ch chan gcpcache.DeltaResponse) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.typeState(req.GetTypeUrl())
	if resp := c.deltaResponse(ts, req, sub); resp != nil {
		ch <- resp
		return func() {}, nil
	}
	w := &deltaWatch{req: req, sub: sub, ch: ch}
	index(ts.delta, sub, w)
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		unindex(ts.delta, sub, w)
	}, nil
}

// deltaResponse compares what the stream has (its returned resources) with
// what the cache holds for each subscribed name, or returns nil when the
// stream is up to date. Called with c.mu held.
func (c *Cache) deltaResponse(ts *typeState, req *gcpcache.DeltaRequest, sub gcpcache.Subscription) *deltaResponse {
	returned := sub.ReturnedResources()
	var (
		resources []*discoveryv3.Resource
		removed   []string
		next      map[string]string
	)
	record := func(name, version string) {
		if next == nil {
			next = make(map[string]string, len(returned)+1)
			for n, v := range returned {
				if _, ok := sub.SubscribedResources()[n]; ok || n == wildcardServed {
					next[n] = v
				}
			}
		}
		next[name] = version
	}
	for name := range sub.SubscribedResources() {
		prev, had := returned[name]
		if e := ts.resources[name]; e != nil {
			if !had || prev != e.version {
				resources = append(resources, e.delta)
				record(name, e.version)
			}
		} else if !had || prev != absent {
			removed = append(removed, name)
			record(name, absent)
		}
	}
	if next == nil {
		if !sub.IsWildcard() || returned[wildcardServed] != "" {
			return nil
		}
		record(wildcardServed, "served")
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
