// Package cache is xspace-mesh's xDS resource cache. It implements
// go-control-plane's cache.Cache for delta and state-of-the-world streams,
// with three properties the stock caches lack:
//
//   - A subscribed name that has no resource is answered at once, in a delta
//     response's removed_resources, instead of being skipped silently (which
//     makes Envoy's on-demand CDS wait for its timeout). If the name appears
//     later, its subscribers receive it.
//   - Each resource is serialized once per version; every stream that
//     receives it shares the same bytes.
//   - Watches are indexed by resource name, so a change wakes only the
//     streams subscribed to that name.
//
// Versions are derived from content (a hash of the deterministic encoding),
// so control-plane replicas serving the same input agree on them.
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// absent is the version recorded in a stream's returned resources for a name
// it was told does not exist. It never collides with a content version.
const absent = "absent"

// wildcardServed marks, in a wildcard subscription's returned resources, that
// its first (empty) answer was sent. "*" is never a resource name.
const wildcardServed = "*"

// entry is one resource at one version, encoded once.
type entry struct {
	version string
	delta   *discoveryv3.Resource // shared by every delta response; never mutated
	any     *anypb.Any            // shared by every state-of-the-world response
}

// typeState holds the resources of one type URL and the watches waiting on them.
type typeState struct {
	resources map[string]*entry
	delta     map[string]map[*deltaWatch]struct{} // by subscribed name
	sotw      map[string]map[*sotwWatch]struct{}  // by subscribed name
}

// Cache holds xDS resources by type URL and name. The zero value is not
// usable; call New.
type Cache struct {
	mu    sync.Mutex
	types map[string]*typeState
	// system is a counter reported as a delta response's system_version_info,
	// for debugging only.
	system atomic.Uint64
}

var _ gcpcache.Cache = (*Cache)(nil)

// New returns an empty cache.
func New() *Cache {
	return &Cache{types: make(map[string]*typeState)}
}

func (c *Cache) typeState(typeURL string) *typeState {
	ts := c.types[typeURL]
	if ts == nil {
		ts = &typeState{
			resources: make(map[string]*entry),
			delta:     make(map[string]map[*deltaWatch]struct{}),
			sotw:      make(map[string]map[*sotwWatch]struct{}),
		}
		c.types[typeURL] = ts
	}
	return ts
}

// Set stores msg as the resource name of its type and wakes the watches
// subscribed to it. Setting identical content again changes nothing and
// wakes no one.
func (c *Cache) Set(name string, msg proto.Message) error {
	e, typeURL, err := encode(name, msg)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.typeState(typeURL)
	if old := ts.resources[name]; old != nil && old.version == e.version {
		return nil
	}
	ts.resources[name] = e
	c.wake(ts, name)
	return nil
}

// Delete removes a resource; delta subscribers are told it was removed.
func (c *Cache) Delete(typeURL, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.typeState(typeURL)
	if _, ok := ts.resources[name]; !ok {
		return
	}
	delete(ts.resources, name)
	c.wake(ts, name)
}

// Version returns the version of a stored resource, if there is one.
func (c *Cache) Version(typeURL, name string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts := c.types[typeURL]; ts != nil {
		if e := ts.resources[name]; e != nil {
			return e.version, true
		}
	}
	return "", false
}

// wake answers every watch subscribed to name that now has something to
// send. Each watch answers at most once and is then removed, so a send on
// its channel never blocks (the server buffers one response per type).
func (c *Cache) wake(ts *typeState, name string) {
	for w := range ts.delta[name] {
		if resp := c.deltaResponse(ts, w.req, w.sub); resp != nil {
			unindex(ts.delta, w.sub, w)
			w.ch <- resp
		}
	}
	for w := range ts.sotw[name] {
		if resp := sotwResponse(ts, w.req, w.sub); resp != nil {
			unindex(ts.sotw, w.sub, w)
			w.ch <- resp
		}
	}
}

// encode serializes msg once, deterministically, and derives its version
// from the bytes.
func encode(name string, msg proto.Message) (*entry, string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return nil, "", fmt.Errorf("cache: encode %q: %w", name, err)
	}
	typeURL := "type.googleapis.com/" + string(msg.ProtoReflect().Descriptor().FullName())
	sum := sha256.Sum256(b)
	version := hex.EncodeToString(sum[:8])
	a := &anypb.Any{TypeUrl: typeURL, Value: b}
	return &entry{
		version: version,
		delta:   &discoveryv3.Resource{Name: name, Version: version, Resource: a},
		any:     a,
	}, typeURL, nil
}

// index adds w to the watches of each of its subscribed names.
func index[W comparable](byName map[string]map[W]struct{}, sub gcpcache.Subscription, w W) {
	for name := range sub.SubscribedResources() {
		set := byName[name]
		if set == nil {
			set = make(map[W]struct{})
			byName[name] = set
		}
		set[w] = struct{}{}
	}
}

// unindex removes w from the watches of each of its subscribed names.
func unindex[W comparable](byName map[string]map[W]struct{}, sub gcpcache.Subscription, w W) {
	for name := range sub.SubscribedResources() {
		if set := byName[name]; set != nil {
			delete(set, w)
			if len(set) == 0 {
				delete(byName, name)
			}
		}
	}
}

// Fetch answers a REST (polling) request with the named resources that exist.
func (c *Cache) Fetch(_ context.Context, req *gcpcache.Request) (gcpcache.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.typeState(req.GetTypeUrl())
	sub := fetchSubscription(req.GetResourceNames())
	resp := sotwResponse(ts, req, sub)
	if resp == nil {
		return nil, &types.SkipFetchError{}
	}
	return resp, nil
}
