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

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/prisma-systems/xspace-mesh/internal/shrink"
)

// absent is the version of a tombstone, and the version recorded in a
// stream's returned resources for a name it was told does not exist. It
// never collides with a content version (hex).
const absent = "absent"

// wildcardServed marks, in a wildcard subscription's returned resources, that
// its first (empty) answer was sent. "*" is never a resource name.
const wildcardServed = "*"

// entry is one resource at one version, encoded once, or a tombstone: a name
// known not to exist (delta and any nil). A name with no entry at all is
// unknown: not resolved yet, or never a resource.
type entry struct {
	version string
	delta   *discoveryv3.Resource // shared by every delta response; never mutated
	any     *anypb.Any            // shared by every state-of-the-world response
}

func (e *entry) tombstone() bool { return e.delta == nil }

// absentEntry is the entry of every name known not to exist; entries are
// never mutated, so all share it.
var absentEntry = &entry{version: absent}

// typeState holds the resources of one type URL and the watches waiting on them.
type typeState struct {
	resources     map[string]*entry // by key
	resourcesPeak int               // for shrink.Map
	delta         watchIndex[*deltaWatch]
	sotw          watchIndex[*sotwWatch]
	// kept are the kept delta watches, by their stream's node (stream.go).
	kept     map[*corev3.Node]*deltaWatch
	keptPeak int
	// scope, for a scoped type, names the scope of a stream from its node.
	scope func(*corev3.Node) string
	// wildcard, if set, names what a wildcard subscription of a node means.
	wildcard func(*corev3.Node) []string
}

// implied returns the names a subscription's wildcard means for its node
// (see Wildcard): nil unless the subscription is a wildcard of a type that
// gives it a meaning.
func (ts *typeState) implied(node *corev3.Node, sub gcpcache.Subscription) []string {
	if ts.wildcard == nil || !sub.IsWildcard() {
		return nil
	}
	return ts.wildcard(node)
}

// forEachName calls fn for every name a subscription looks at: each name it
// subscribed to, then each of its implied names (see implied) it did not
// also subscribe to, with isImplied set.
func forEachName(sub gcpcache.Subscription, implied []string, fn func(name string, isImplied bool)) {
	subscribed := sub.SubscribedResources()
	for name := range subscribed {
		fn(name, false)
	}
	for _, name := range implied {
		if _, ok := subscribed[name]; !ok {
			fn(name, true)
		}
	}
}

// keys are where a stream with node looks name up, in order: under its
// scope, then unscoped. In a scoped type every key, the shared ones too,
// is scope + NUL + name, so no name a client chooses can reach into another
// scope: a scope is a service name, which holds no NUL.
//
// They are returned in an array, with how many there are, rather than in a
// slice made for every name looked at.
func (ts *typeState) keys(node *corev3.Node, name string) (keys [2]string, n int) {
	if ts.scope == nil {
		return [2]string{name}, 1
	}
	if s := ts.scope(node); s != "" {
		return [2]string{scopedKey(s, name), scopedKey("", name)}, 2
	}
	return [2]string{scopedKey("", name)}, 1
}

// key is where an item is stored.
func (ts *typeState) key(it Item) string {
	if ts.scope == nil {
		return it.Name
	}
	return scopedKey(it.Scope, it.Name)
}

// lookup returns what a stream with node sees under name, or nil (unknown).
func (ts *typeState) lookup(node *corev3.Node, name string) *entry {
	keys, n := ts.keys(node, name)
	for _, k := range keys[:n] {
		if e := ts.resources[k]; e != nil {
			return e
		}
	}
	return nil
}

func scopedKey(scope, name string) string { return scope + "\x00" + name }

func newTypeState() *typeState {
	return &typeState{
		resources: make(map[string]*entry),
		delta:     newWatchIndex[*deltaWatch](),
		sotw:      newWatchIndex[*sotwWatch](),
		kept:      make(map[*corev3.Node]*deltaWatch),
	}
}

// watchIndex finds the watches that look at a key. Most keys have one
// watch, held without a set of its own (a stream holding thousands of names
// costs one map slot per name). Its map is right-sized as it empties
// (shrink.Map), so a flood of names does not leave its memory behind.
type watchIndex[W comparable] struct {
	byKey map[string]watchers[W]
	peak  int
}

// watchers are the watches of one key: one, or, once there are more, a set.
type watchers[W comparable] struct {
	one  W
	many map[W]struct{}
}

func newWatchIndex[W comparable]() watchIndex[W] {
	return watchIndex[W]{byKey: make(map[string]watchers[W])}
}

func (x *watchIndex[W]) add(key string, w W) {
	ws, ok := x.byKey[key]
	switch {
	case !ok:
		x.byKey[key] = watchers[W]{one: w}
		x.byKey = shrink.Map(x.byKey, &x.peak)
	case ws.many != nil:
		ws.many[w] = struct{}{}
	case ws.one != w:
		x.byKey[key] = watchers[W]{many: map[W]struct{}{ws.one: {}, w: {}}}
	}
}

func (x *watchIndex[W]) remove(key string, w W) {
	ws, ok := x.byKey[key]
	switch {
	case !ok:
		return
	case ws.many != nil:
		delete(ws.many, w)
		if len(ws.many) > 0 {
			return
		}
	case ws.one != w:
		return
	}
	delete(x.byKey, key)
	x.byKey = shrink.Map(x.byKey, &x.peak)
}

// each calls fn for every watch of key; fn may remove watches.
func (x *watchIndex[W]) each(key string, fn func(W)) {
	ws, ok := x.byKey[key]
	if !ok {
		return
	}
	if ws.many == nil {
		fn(ws.one)
		return
	}
	for w := range ws.many {
		fn(w)
	}
}

// Cache holds xDS resources by type URL and name. The zero value is not
// usable; call New.
//
// Sends on a stream's response channel happen under mu. They cannot block:
// a watch answers at most once and is then removed, and go-control-plane
// buffers at least one response per type and drains them before it handles
// the next request.
type Cache struct {
	mu    sync.Mutex
	types map[string]*typeState // only the types the cache serves
	// streams are the nodes of the streams whose watches are kept.
	streams     map[*corev3.Node]struct{}
	streamsPeak int
	// system is a counter reported as a delta response's system_version_info,
	// for debugging only.
	system atomic.Uint64
}

var _ gcpcache.Cache = (*Cache)(nil)

// New returns an empty cache serving the given type URLs, configured by
// opts (WithScope, WithWildcard). Requests for any other type are answered
// as if it had no resources, and hold no state.
func New(typeURLs []string, opts ...Option) *Cache {
	c := &Cache{types: make(map[string]*typeState, len(typeURLs)), streams: make(map[*corev3.Node]struct{})}
	for _, t := range typeURLs {
		c.types[t] = newTypeState()
	}
	for _, o := range opts {
		if ts := c.types[o.typeURL]; ts != nil {
			o.apply(ts)
		}
	}
	return c
}

// Option configures one type of a cache at construction.
type Option struct {
	typeURL string
	apply   func(*typeState)
}

// WithScope makes a type scoped: an item published with a Scope is seen,
// under its plain name, only by streams whose node scope returns that
// scope; an item without one is seen by every stream that has no scoped
// item of that name.
func WithScope(typeURL string, scope func(*corev3.Node) string) Option {
	return Option{typeURL, func(ts *typeState) { ts.scope = scope }}
}

// WithWildcard gives a type's wildcard subscriptions a meaning: a stream
// that subscribes to the wildcard is served the names names returns for
// its node, as if it had subscribed to each, except that a missing name is
// not reported missing (a wildcard asks for whatever exists). Envoy
// subscribes to its listeners this way: names picks a sidecar's own.
// Without it, a wildcard subscription is served only the names it also
// asks for explicitly, never the world. names runs under the cache's lock
// for every response and watch of such a stream: it must be cheap, and
// depend on the node only.
func WithWildcard(typeURL string, names func(*corev3.Node) []string) Option {
	return Option{typeURL, func(ts *typeState) { ts.wildcard = names }}
}

// served returns the state of a type, or an empty throwaway one for a type
// the cache does not serve.
func (c *Cache) served(typeURL string) (*typeState, bool) {
	if ts := c.types[typeURL]; ts != nil {
		return ts, true
	}
	return newTypeState(), false
}

// Item is one resource to publish. An item with neither Msg nor Encoded
// publishes a tombstone: the name is known not to exist, and delta
// subscribers are told so.
type Item struct {
	TypeURL string
	Name    string
	Msg     proto.Message
	// Encoded, when set instead of Msg, is the resource's deterministic
	// encoding (proto.MarshalOptions{Deterministic: true}), of type
	// TypeURL, made by the caller.
	Encoded []byte
	// Scope, for a scoped type, limits the item to streams of that scope.
	Scope string
	// Independent says the item does not depend on the items before it:
	// its version covers its own encoding only, as if it were the first
	// item of its update (see Update).
	Independent bool
}

// Update publishes items in one step and then wakes their subscribers in
// the order given. An item's version covers its own encoding and the
// versions of the items before it, back to the nearest Independent one:
// list a resource that depends on another after it (a
// ClusterLoadAssignment after its Cluster), and it changes, and is pushed,
// whenever that one does. Publishing identical content again changes
// nothing and wakes no one.
func (c *Cache) Update(items ...Item) error {
	entries := make([]*entry, len(items))
	deps := sha256.New()
	for i, it := range items {
		if it.Independent {
			deps.Reset()
		}
		e, err := encode(it, deps.Sum(nil))
		if err != nil {
			return err
		}
		deps.Write([]byte(e.version))
		entries[i] = e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var changed []int
	for i, it := range items {
		ts, ok := c.types[it.TypeURL]
		switch {
		case !ok:
			return fmt.Errorf("cache: type %s is not served", it.TypeURL)
		case it.Scope != "" && ts.scope == nil:
			return fmt.Errorf("cache: %q has a scope but type %s is not scoped", it.Name, it.TypeURL)
		}
		if old := ts.resources[ts.key(it)]; old == nil || old.version != entries[i].version {
			changed = append(changed, i)
		}
	}
	for _, i := range changed {
		ts := c.types[items[i].TypeURL]
		ts.resources[ts.key(items[i])] = entries[i]
		ts.resources = shrink.Map(ts.resources, &ts.resourcesPeak)
	}
	for _, i := range changed {
		ts := c.types[items[i].TypeURL]
		c.wake(ts, ts.key(items[i]))
	}
	return nil
}

// Delete forgets a resource: its name becomes unknown. Streams that hold it
// keep it; only streams that ask for it anew are told it does not exist.
func (c *Cache) Delete(it Item) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts := c.types[it.TypeURL]; ts != nil {
		delete(ts.resources, ts.key(it))
		ts.resources = shrink.Map(ts.resources, &ts.resourcesPeak)
	}
}

// Version returns the version of a stored resource; absent reports a tombstone.
func (c *Cache) Version(it Item) (version string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts := c.types[it.TypeURL]; ts != nil {
		if e := ts.resources[ts.key(it)]; e != nil {
			return e.version, true
		}
	}
	return "", false
}

// wake answers every watch that looks at key and now has something to
// send. Each watch answers at most once and is then removed.
func (c *Cache) wake(ts *typeState, key string) {
	ts.delta.each(key, func(w *deltaWatch) {
		if w.kept {
			c.wakeKept(ts, w, key)
			return
		}
		if resp := c.deltaResponse(ts, w.req, w.sub, false); resp != nil {
			unindex(&ts.delta, ts, w.req.GetNode(), w.sub, w)
			w.ch <- resp
		}
	})
	ts.sotw.each(key, func(w *sotwWatch) {
		if resp := sotwResponse(ts, w.req, w.sub); resp != nil {
			unindex(&ts.sotw, ts, w.req.GetNode(), w.sub, w)
			w.ch <- resp
		}
	})
}

// encode serializes an item once, deterministically, and derives its version
// from the bytes and deps (the versions of the items it depends on).
func encode(it Item, deps []byte) (*entry, error) {
	b := it.Encoded
	switch {
	case it.Msg == nil && b == nil:
		return absentEntry, nil
	case it.Msg != nil:
		typeURL := "type.googleapis.com/" + string(it.Msg.ProtoReflect().Descriptor().FullName())
		if typeURL != it.TypeURL {
			return nil, fmt.Errorf("cache: %q is a %s, not a %s", it.Name, typeURL, it.TypeURL)
		}
		var err error
		if b, err = (proto.MarshalOptions{Deterministic: true}).Marshal(it.Msg); err != nil {
			return nil, fmt.Errorf("cache: encode %q: %w", it.Name, err)
		}
	}
	h := sha256.New()
	h.Write(b)
	h.Write(deps)
	version := hex.EncodeToString(h.Sum(nil)[:8])
	a := &anypb.Any{TypeUrl: it.TypeURL, Value: b}
	return &entry{
		version: version,
		delta:   &discoveryv3.Resource{Name: it.Name, Version: version, Resource: a},
		any:     a,
	}, nil
}

// index adds w to the watches of every key its subscribed names look at.
func index[W comparable](x *watchIndex[W], ts *typeState, node *corev3.Node, sub gcpcache.Subscription, w W) {
	forEachName(sub, ts.implied(node, sub), func(name string, _ bool) {
		keys, n := ts.keys(node, name)
		for _, k := range keys[:n] {
			x.add(k, w)
		}
	})
}

// unindex removes w from the watches of every key it was indexed under.
func unindex[W comparable](x *watchIndex[W], ts *typeState, node *corev3.Node, sub gcpcache.Subscription, w W) {
	forEachName(sub, ts.implied(node, sub), func(name string, _ bool) {
		keys, n := ts.keys(node, name)
		for _, k := range keys[:n] {
			x.remove(k, w)
		}
	})
}

// Fetch answers a REST (polling) request with the named resources that exist.
func (c *Cache) Fetch(_ context.Context, req *gcpcache.Request) (gcpcache.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, _ := c.served(req.GetTypeUrl())
	sub := fetchSubscription(req.GetResourceNames())
	resp := sotwResponse(ts, req, sub)
	if resp == nil {
		return nil, &types.SkipFetchError{}
	}
	return resp, nil
}
