package cache

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/prisma-systems/xspace-mesh/internal/shrink"
)

// Kept watches. go-control-plane cancels a stream's watch of a type and
// creates a new one on every request of that type (an ACK included), so a
// watch that indexed every name the stream holds, and looked at all of
// them to answer, made each request cost as much as the names the stream
// holds: a sidecar holding 20,000 names (Envoy never unsubscribes one) cost
// milliseconds per ACK, and a burst of its lookups ran into its on-demand
// timeouts. A stream the cache is told of (OpenStream, with the node object
// the stream gives all its requests) keeps one watch per type instead: it
// stays indexed across the stream's requests, each request indexes only the
// names it subscribes or unsubscribes, and only those names, and the names
// that changed meanwhile (pending), are looked at to answer it. A response
// updates the stream's version map in place rather than copying it:
// go-control-plane touches the subscription only on the stream's own
// goroutine, after cancelling the watch (which takes the cache's lock), and
// the cache reads or writes it only while the watch is open.
//
// A kept watch keeps no list of the names it is indexed under: they are
// the names of its subscription, plus what a wildcard means for its node.
// go-control-plane's delta server makes a type's subscription at the
// stream's first request of that type and changes its set of names in
// place, on the stream's goroutine, just before each CreateDeltaWatch
// (pkg/server/delta/v3/server.go and pkg/server/stream/v3/subscription.go,
// v0.14.0), so the set the watch last saw is the set at CloseStream. Each
// name a stream holds would otherwise be kept a third time (the server's
// and go-control-plane's are the others).

// OpenStream tells the cache that every request of one stream carries this
// node object, and no other stream's does (the xDS server gives each
// stream a node of its own). Its delta watches are then kept across its
// requests until CloseStream.
func (c *Cache) OpenStream(node *corev3.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if node != nil {
		c.streams[node] = struct{}{}
		c.streams = shrink.Map(c.streams, &c.streamsPeak)
	}
}

// CloseStream forgets the watches of a stream opened with OpenStream.
func (c *Cache) CloseStream(node *corev3.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.streams, node)
	c.streams = shrink.Map(c.streams, &c.streamsPeak)
	for _, ts := range c.types {
		if w := ts.kept[node]; w != nil {
			for name := range w.sub.SubscribedResources() {
				w.untrack(ts, node, name)
			}
			// Names a wildcard means were tracked whenever the
			// subscription was one; untracking is idempotent.
			if ts.wildcard != nil {
				for _, name := range ts.wildcard(node) {
					w.untrack(ts, node, name)
				}
			}
			delete(ts.kept, node)
			ts.kept = shrink.Map(ts.kept, &ts.keptPeak)
		}
	}
}

// Waiting counts the streams opened with OpenStream whose watch of a type
// is open: every request of theirs of that type was handled, and they wait
// for a change. It is for debugging and benchmarks, and looks at every
// such stream.
func (c *Cache) Waiting(typeURL string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	if ts := c.types[typeURL]; ts != nil {
		for _, w := range ts.kept {
			if w.active {
				n++
			}
		}
	}
	return n
}

// Indexed counts the names of a type under which delta watches are
// indexed (scoped names once per scope). It is for tests and benchmarks:
// once every stream is closed it is 0.
func (c *Cache) Indexed(typeURL string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts := c.types[typeURL]; ts != nil {
		return len(ts.delta.byKey)
	}
	return 0
}

// keptWatch creates or updates the kept watch of a stream's request and
// answers it if there is anything to say. Called with c.mu held.
func (c *Cache) keptWatch(ts *typeState, req *gcpcache.DeltaRequest, sub gcpcache.Subscription, ch chan gcpcache.DeltaResponse) func() {
	node := req.GetNode()
	w := ts.kept[node]
	if w == nil {
		w = &deltaWatch{kept: true}
		ts.kept[node] = w
		ts.kept = shrink.Map(ts.kept, &ts.keptPeak)
		forEachName(sub, ts.implied(node, sub), func(name string, _ bool) { w.track(ts, node, name) })
	} else {
		for _, name := range req.GetResourceNamesSubscribe() {
			if name != wildcardServed {
				w.track(ts, node, name)
			}
		}
		for _, name := range req.GetResourceNamesUnsubscribe() {
			w.untrack(ts, node, name)
		}
		// What a wildcard means depends on the node only, but the
		// subscription may have become, or stopped being, a wildcard.
		for _, name := range ts.implied(node, sub) {
			w.track(ts, node, name)
		}
	}
	w.req, w.sub, w.ch = req, sub, ch
	if resp := c.keptResponse(ts, w, true); resp != nil {
		ch <- resp
		return func() {}
	}
	w.active = true
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if w.ch == ch {
			w.active = false
		}
	}
}

// track indexes a name the watch looks at (again: adding is idempotent),
// and marks it to be looked at.
func (w *deltaWatch) track(ts *typeState, node *corev3.Node, name string) {
	w.mark(name)
	keys, n := ts.keys(node, name)
	for _, k := range keys[:n] {
		ts.delta.add(k, w)
	}
}

// untrack stops looking at a name; a name not tracked is left alone.
func (w *deltaWatch) untrack(ts *typeState, node *corev3.Node, name string) {
	delete(w.pending, name)
	keys, n := ts.keys(node, name)
	for _, k := range keys[:n] {
		ts.delta.remove(k, w)
	}
}

// keptResponse answers a kept watch from its pending names, and clears
// them when it answers. fresh says its request is being answered. Called
// with c.mu held.
func (c *Cache) keptResponse(ts *typeState, w *deltaWatch, fresh bool) *deltaResponse {
	subscribed := w.sub.SubscribedResources()
	implied := ts.implied(w.req.GetNode(), w.sub)
	names := func(fn func(name string, isImplied bool)) {
		for name := range w.pending {
			switch _, ok := subscribed[name]; {
			case ok:
				fn(name, false)
			case containsName(implied, name):
				fn(name, true)
			}
		}
	}
	resp := c.respond(ts, w.req, w.sub, implied, fresh, true, names)
	if resp != nil {
		w.pending = nil
		w.active = false
	}
	return resp
}

// wakeKept tells a kept watch that the resource at key changed: it answers
// if its gRPC watch is open, and otherwise remembers the name for its next
// request. Called with c.mu held.
func (c *Cache) wakeKept(ts *typeState, w *deltaWatch, key string) {
	name := key
	if ts.scope != nil {
		name = key[strings.IndexByte(key, 0)+1:]
	}
	w.mark(name)
	if !w.active {
		return
	}
	if resp := c.keptResponse(ts, w, false); resp != nil {
		w.ch <- resp
	}
}

// mark remembers a name to look at. The set exists only while a name is
// pending: an idle stream, most of them, keeps none (a cleared map keeps
// its buckets).
func (w *deltaWatch) mark(name string) {
	if w.pending == nil {
		w.pending = make(map[string]struct{})
	}
	w.pending[name] = struct{}{}
}

func containsName(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}
