package cache

import (
	"maps"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// keptStream is a stream the cache was told of (OpenStream), driven as
// go-control-plane drives one: every request first cancels the open
// watch, then updates the subscription, then creates a watch.
type keptStream struct {
	*stream
	node   *corev3.Node
	cancel func()
}

func openKept(t *testing.T, c *Cache, typ string, node *corev3.Node) *keptStream {
	t.Helper()
	c.OpenStream(node)
	s := &keptStream{stream: open(t, c, typ, nil), node: node}
	t.Cleanup(func() {
		if s.cancel != nil {
			s.cancel()
		}
	})
	return s
}

func (s *keptStream) send(subscribe, unsubscribe []string) {
	s.t.Helper()
	if s.cancel != nil {
		s.cancel()
	}
	s.sub.UpdateResourceSubscriptions(subscribe, unsubscribe)
	req := &gcpcache.DeltaRequest{TypeUrl: s.typ, Node: s.node, ResourceNamesSubscribe: subscribe, ResourceNamesUnsubscribe: unsubscribe}
	// The subscription by value, as go-control-plane's delta server
	// passes it: its names are the same map, changed in place.
	cancel, err := s.c.CreateDeltaWatch(req, s.sub, s.ch)
	if err != nil {
		s.t.Fatal(err)
	}
	s.cancel = cancel
}

// TestKeptWatchAnswersWhatChanged: a kept watch answers each request with
// what it asks and what changed, including changes made while its last
// response was not yet ACKed, and nothing it unsubscribed.
func TestKeptWatchAnswersWhatChanged(t *testing.T) {
	c := newCache()
	update(t, c, cluster("a.vip", time.Second), cluster("b.vip", time.Second))
	s := openKept(t, c, cds, &corev3.Node{Id: "n1"})
	s.send([]string{"a.vip"}, nil)
	s.expect([]string{"a.vip"}, nil)
	s.send(nil, nil) // ACK
	s.expectNothing()
	update(t, c, cluster("a.vip", 2*time.Second))
	s.expect([]string{"a.vip"}, nil)
	// Changed before the ACK of that response: answered at the ACK.
	update(t, c, cluster("a.vip", 3*time.Second))
	s.expectNothing()
	s.send(nil, nil)
	s.expect([]string{"a.vip"}, nil)
	s.send([]string{"b.vip", "ghost.vip"}, nil)
	s.expect([]string{"b.vip"}, []string{"ghost.vip"})
	s.send(nil, []string{"a.vip"})
	s.expectNothing()
	update(t, c, cluster("a.vip", 4*time.Second))
	s.expectNothing()
	update(t, c, cluster("ghost.vip", time.Second))
	s.expect([]string{"ghost.vip"}, nil)
}

// TestWaitingCountsHandledStreams: a stream waits for a change once the
// request after its last response (its ACK) is handled, and no longer
// once a change was sent to it.
func TestWaitingCountsHandledStreams(t *testing.T) {
	c := newCache()
	update(t, c, cluster("a.vip", time.Second))
	s1 := openKept(t, c, cds, &corev3.Node{Id: "n1"})
	s2 := openKept(t, c, cds, &corev3.Node{Id: "n2"})
	for _, s := range []*keptStream{s1, s2} {
		s.send([]string{"a.vip"}, nil)
		s.expect([]string{"a.vip"}, nil)
	}
	if n := c.Waiting(cds); n != 0 {
		t.Fatalf("%d streams wait before their ACKs, want 0", n)
	}
	s1.send(nil, nil)
	if n := c.Waiting(cds); n != 1 {
		t.Fatalf("%d streams wait after one ACK, want 1", n)
	}
	s2.send(nil, nil)
	if n := c.Waiting(cds); n != 2 {
		t.Fatalf("%d streams wait after both ACKs, want 2", n)
	}
	update(t, c, cluster("a.vip", 2*time.Second))
	s1.expect([]string{"a.vip"}, nil)
	s2.expect([]string{"a.vip"}, nil)
	if n := c.Waiting(cds); n != 0 || c.Waiting(eds) != 0 {
		t.Fatalf("%d streams wait after a change was sent to both, want 0", n)
	}
}

// TestKeptWatchOfScopedType: a kept watch of a scoped type is woken by the
// items of its own scope only.
func TestKeptWatchOfScopedType(t *testing.T) {
	const sds = resource.SecretType
	c := New([]string{sds}, WithScope(sds, func(n *corev3.Node) string { return n.GetMetadata().GetFields()["svc"].GetStringValue() }))
	secret := func(scope, value string) Item {
		return Item{TypeURL: sds, Name: "identity", Scope: scope, Msg: &tlsv3.Secret{
			Name: "identity", Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{Secret: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: value},
			}}},
		}}
	}
	update(t, c, secret("payments", "v1"), secret("orders", "o1"))
	payments := openKept(t, c, sds, nodeOf("payments"))
	payments.send([]string{"identity"}, nil)
	payments.expect([]string{"identity"}, nil)
	payments.send(nil, nil)
	update(t, c, secret("orders", "o2"))
	payments.expectNothing()
	update(t, c, secret("payments", "v2"))
	payments.expect([]string{"identity"}, nil)
}

// TestCloseStreamForgetsItsWatches: once a stream is closed, nothing of
// its watches is left in the index.
func TestCloseStreamForgetsItsWatches(t *testing.T) {
	c := newCache()
	node := &corev3.Node{Id: "n1"}
	cdsStream, edsStream := openKept(t, c, cds, node), openKept(t, c, eds, node)
	cdsStream.send([]string{"a.vip", "b.vip"}, nil)
	edsStream.send([]string{"a.vip"}, nil)
	if n := len(c.types[cds].delta.byKey) + len(c.types[eds].delta.byKey); n != 3 {
		t.Fatalf("%d keys indexed for a stream watching 3 names", n)
	}
	c.CloseStream(node)
	for _, typ := range []string{cds, eds} {
		if ts := c.types[typ]; len(ts.delta.byKey) != 0 || len(ts.kept) != 0 {
			t.Fatalf("%s after CloseStream: index %v, kept watches %d", typ, ts.delta.byKey, len(ts.kept))
		}
	}
	if len(c.streams) != 0 {
		t.Fatal("the stream is still known")
	}
}

// TestCloseStreamForgetsEveryNameItWatched: what a kept watch is indexed
// under follows its subscription through subscribes, unsubscribes and a
// wildcard turned on and off, and nothing of it is left after CloseStream,
// while another stream's watches stay.
func TestCloseStreamForgetsEveryNameItWatched(t *testing.T) {
	const lds = resource.ListenerType
	c := New([]string{cds, lds}, WithWildcard(lds, func(n *corev3.Node) []string {
		return []string{n.GetId() + "-out", n.GetId() + "-in"}
	}))
	node, other := &corev3.Node{Id: "n1"}, &corev3.Node{Id: "n2"}
	keys := func(typ string) []string { return slices.Sorted(maps.Keys(c.types[typ].delta.byKey)) }
	cdsStream, ldsStream := openKept(t, c, cds, node), openKept(t, c, lds, node)
	otherStream := openKept(t, c, cds, other)
	otherStream.send([]string{"a.vip"}, nil)
	otherStream.expect(nil, []string{"a.vip"})
	otherStream.send(nil, nil) // ACK: it waits for a.vip
	cdsStream.send([]string{"a.vip", "b.vip", "c.vip"}, nil)
	cdsStream.send(nil, []string{"b.vip"})
	cdsStream.send([]string{"d.vip"}, []string{"c.vip"})
	if got, want := keys(cds), []string{"a.vip", "d.vip"}; !slices.Equal(got, want) {
		t.Fatalf("cds index %v, want %v", got, want)
	}
	ldsStream.send([]string{"*", "extra"}, nil)
	ldsStream.send(nil, []string{"*"})
	if got, want := keys(lds), []string{"extra", "n1-in", "n1-out"}; !slices.Equal(got, want) {
		t.Fatalf("lds index %v, want %v (what the wildcard meant stays indexed until the stream closes)", got, want)
	}
	cdsStream.cancel()
	ldsStream.cancel()
	c.CloseStream(node)
	if got := keys(lds); len(got) != 0 {
		t.Fatalf("lds index after CloseStream: %v", got)
	}
	if got, want := keys(cds), []string{"a.vip"}; !slices.Equal(got, want) {
		t.Fatalf("cds index after CloseStream: %v, want the other stream's %v", got, want)
	}
	update(t, c, cluster("a.vip", time.Second))
	otherStream.expect([]string{"a.vip"}, nil)
}

// TestKeptAndFreshWatchesAgree: the same requests and changes give the
// same responses whether the stream's watches are kept or made afresh.
func TestKeptAndFreshWatchesAgree(t *testing.T) {
	script := func(t *testing.T, kept bool) [][]string {
		c := newCache()
		update(t, c, cluster("a.vip", time.Second))
		node := &corev3.Node{Id: "n1"}
		if kept {
			c.OpenStream(node)
		}
		s := &keptStream{stream: open(t, c, cds, nil), node: node}
		var log [][]string
		note := func() {
			names, removed, _, _ := s.take()
			log = append(log, append(slices.Clone(names), append([]string{"-"}, removed...)...))
		}
		for _, step := range []func(){
			func() { s.send([]string{"a.vip", "ghost.vip"}, nil) },
			func() { s.send(nil, nil) },
			func() { update(t, c, cluster("a.vip", 2*time.Second)) },
			func() { s.send([]string{"ghost.vip"}, nil) },
			func() { s.send(nil, []string{"a.vip"}) },
			func() { update(t, c, cluster("a.vip", 3*time.Second), cluster("ghost.vip", time.Second)) },
			func() { s.send(nil, nil) },
		} {
			step()
			note()
		}
		s.cancel()
		return log
	}
	if fresh, kept := script(t, false), script(t, true); !slices.EqualFunc(fresh, kept, slices.Equal) {
		t.Fatalf("responses differ:\nfresh %q\nkept  %q", fresh, kept)
	}
}
