package cache

import (
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	gcpstream "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	cds = resource.ClusterType
	eds = resource.EndpointType
)

func newCache() *Cache { return New([]string{cds, eds}) }

func cluster(name string, timeout time.Duration) Item {
	return Item{TypeURL: cds, Name: name, Msg: &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(timeout)}}
}

func endpoints(name string) Item {
	return Item{TypeURL: eds, Name: name, Msg: &endpointv3.ClusterLoadAssignment{ClusterName: name}}
}

func update(t *testing.T, c *Cache, items ...Item) {
	t.Helper()
	if err := c.Update(items...); err != nil {
		t.Fatal(err)
	}
}

// stream stands for one delta stream of one type, as go-control-plane's
// server drives the cache: a request creates a watch, and the response's
// version map becomes the subscription's returned resources.
type stream struct {
	t   *testing.T
	c   *Cache
	typ string
	sub gcpstream.Subscription
	ch  chan gcpcache.DeltaResponse
}

func open(t *testing.T, c *Cache, typ string, initial map[string]string) *stream {
	return &stream{
		t: t, c: c, typ: typ, sub: gcpstream.NewDeltaSubscription(nil, nil, initial, false),
		ch: make(chan gcpcache.DeltaResponse, 4),
	}
}

// request sends a delta request that subscribes to names.
func (s *stream) request(initial map[string]string, names ...string) {
	s.t.Helper()
	s.sub.UpdateResourceSubscriptions(names, nil)
	req := &gcpcache.DeltaRequest{TypeUrl: s.typ, ResourceNamesSubscribe: names, InitialResourceVersions: initial}
	cancel, err := s.c.CreateDeltaWatch(req, &s.sub, s.ch)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(cancel)
}

// take returns the pending response's resources and removed names, and
// records it as the server does; ok is false when nothing is pending.
func (s *stream) take() (names, removed []string, resources []*discoveryv3.Resource, ok bool) {
	select {
	case r := <-s.ch:
		msg, _ := r.GetDeltaDiscoveryResponse()
		for _, res := range msg.GetResources() {
			names = append(names, res.GetName())
		}
		s.sub.SetReturnedResources(r.GetNextVersionMap())
		return names, msg.GetRemovedResources(), msg.GetResources(), true
	default:
		return nil, nil, nil, false
	}
}

func (s *stream) expect(wantNames, wantRemoved []string) {
	s.t.Helper()
	names, removed, _, ok := s.take()
	if !ok {
		s.t.Fatalf("no response; want resources %v removed %v", wantNames, wantRemoved)
	}
	if !slices.Equal(names, wantNames) || !slices.Equal(removed, wantRemoved) {
		s.t.Fatalf("got resources %v removed %v; want %v and %v", names, removed, wantNames, wantRemoved)
	}
}

func (s *stream) expectNothing() {
	s.t.Helper()
	if names, removed, _, ok := s.take(); ok {
		s.t.Fatalf("unexpected response: resources %v removed %v", names, removed)
	}
}

// ack is the request Envoy sends after every response: no names.
func (s *stream) ack() { s.request(nil) }

func TestUnknownNameIsRemovedOnceAndPushedWhenItAppears(t *testing.T) {
	c := newCache()
	s := open(t, c, cds, nil)
	s.request(nil, "a.vip")
	s.expect(nil, []string{"a.vip"})
	s.ack()
	s.expectNothing()
	update(t, c, cluster("a.vip", time.Second))
	s.expect([]string{"a.vip"}, nil)
}

func TestResubscribeToAbsentNameIsAnsweredAgain(t *testing.T) {
	c := newCache()
	update(t, c, Item{TypeURL: cds, Name: "ghost.vip"}) // tombstone
	s := open(t, c, cds, nil)
	s.request(nil, "ghost.vip")
	s.expect(nil, []string{"ghost.vip"})
	s.ack()
	s.expectNothing()
	// Envoy's on-demand CDS asks again for every request that needs the name.
	s.request(nil, "ghost.vip")
	s.expect(nil, []string{"ghost.vip"})
}

func TestUnknownIsNotTakenFromAStreamThatHoldsIt(t *testing.T) {
	c := newCache()
	// A proxy reconnects holding a.vip before the registry has answered.
	s := open(t, c, cds, map[string]string{"a.vip": "v1"})
	s.request(map[string]string{"a.vip": "v1"}, "a.vip")
	s.expectNothing()
	// A tombstone, however, is news.
	update(t, c, Item{TypeURL: cds, Name: "a.vip"})
	s.expect(nil, []string{"a.vip"})
}

func TestClusterChangeChangesItsEndpointsVersion(t *testing.T) {
	c := newCache()
	update(t, c, cluster("a.vip", time.Second), endpoints("a.vip"))
	cdsStream, edsStream := open(t, c, cds, nil), open(t, c, eds, nil)
	cdsStream.request(nil, "a.vip")
	edsStream.request(nil, "a.vip")
	cdsStream.expect([]string{"a.vip"}, nil)
	edsStream.expect([]string{"a.vip"}, nil)
	cdsStream.ack()
	edsStream.ack()

	// Envoy warms a changed cluster until it receives its endpoints again.
	update(t, c, cluster("a.vip", 2*time.Second), endpoints("a.vip"))
	cdsStream.expect([]string{"a.vip"}, nil)
	edsStream.expect([]string{"a.vip"}, nil)
	cdsStream.ack()
	edsStream.ack()

	// An endpoint change alone leaves the cluster alone.
	update(t, c, cluster("a.vip", 2*time.Second), Item{
		TypeURL: eds, Name: "a.vip",
		Msg: &endpointv3.ClusterLoadAssignment{ClusterName: "a.vip", Endpoints: []*endpointv3.LocalityLbEndpoints{{}}},
	})
	cdsStream.expectNothing()
	edsStream.expect([]string{"a.vip"}, nil)
}

func TestIdenticalContentWakesNoOneAndVersionsComeFromContent(t *testing.T) {
	c := newCache()
	update(t, c, cluster("a.vip", time.Second))
	v1, _ := c.Version(Item{TypeURL: cds, Name: "a.vip"})
	s := open(t, c, cds, nil)
	s.request(nil, "a.vip")
	s.expect([]string{"a.vip"}, nil)
	s.ack()
	update(t, c, cluster("a.vip", time.Second))
	s.expectNothing()
	other := newCache()
	update(t, other, cluster("a.vip", time.Second))
	if v, _ := other.Version(Item{TypeURL: cds, Name: "a.vip"}); v != v1 {
		t.Fatalf("same content, different versions %q and %q", v, v1)
	}
}

func TestEncodedOncePerVersion(t *testing.T) {
	c := newCache()
	update(t, c, cluster("a.vip", time.Second))
	a, b := open(t, c, cds, nil), open(t, c, cds, nil)
	a.request(nil, "a.vip")
	b.request(nil, "a.vip")
	_, _, ra, _ := a.take()
	_, _, rb, _ := b.take()
	if ra[0] != rb[0] || ra[0].GetResource() != rb[0].GetResource() {
		t.Fatal("two streams received separately built resources; want one shared encoding")
	}
}

func TestWildcardGetsOneEmptyAnswerNotTheWorld(t *testing.T) {
	for _, names := range [][]string{{"*"}, {"*", "b.vip"}} {
		c := newCache()
		update(t, c, cluster("a.vip", time.Second))
		s := open(t, c, cds, nil)
		s.request(nil, names...)
		names, _, _, ok := s.take()
		if !ok || slices.Contains(names, "a.vip") {
			t.Fatalf("wildcard answer: %v %v", names, ok)
		}
		s.ack()
		s.expectNothing()
	}
}

func TestUnservedTypeHoldsNoState(t *testing.T) {
	c := newCache()
	s := open(t, c, "type.googleapis.com/made.up.Type", nil)
	s.request(nil, "x")
	s.expect(nil, []string{"x"})
	if len(c.types) != 2 {
		t.Fatalf("cache keeps state for %d types, want 2", len(c.types))
	}
	if err := c.Update(Item{TypeURL: resource.ListenerType, Name: "l"}); err == nil {
		t.Fatal("publishing an unserved type succeeded")
	}
}

func TestSotwDoesNotRepeatAfterNACK(t *testing.T) {
	c := newCache()
	update(t, c, cluster("a.vip", time.Second))
	sub := gcpstream.NewSotwSubscription([]string{"a.vip"}, false)
	ch := make(chan gcpcache.Response, 1)
	if _, err := c.CreateWatch(&gcpcache.Request{TypeUrl: cds, ResourceNames: []string{"a.vip"}}, &sub, ch); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	nack := &gcpcache.Request{TypeUrl: cds, ResourceNames: []string{"a.vip"}, ErrorDetail: &statuspb.Status{Message: "rejected"}}
	if _, err := c.CreateWatch(nack, &sub, ch); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("the rejected content was sent again at once")
	default:
	}
	update(t, c, cluster("a.vip", 3*time.Second))
	select {
	case r2 := <-ch:
		if r2.GetResponseVersion() == r.GetResponseVersion() {
			t.Fatal("new content carried the old version")
		}
	default:
		t.Fatal("a change after a NACK was not sent")
	}
}

func nodeOf(service string) *corev3.Node {
	return &corev3.Node{Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{"svc": structpb.NewStringValue(service)}}}
}

// TestScopedSecrets: one name means a different resource per scope; an
// unscoped item is the fallback every scope shares.
func TestScopedSecrets(t *testing.T) {
	const sds = resource.SecretType
	c := New([]string{sds}, WithScope(sds, func(n *corev3.Node) string { return n.GetMetadata().GetFields()["svc"].GetStringValue() }))
	secret := func(name, scope, value string) Item {
		return Item{TypeURL: sds, Name: name, Scope: scope, Msg: &tlsv3.Secret{
			Name: name,
			Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{Secret: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: value},
			}}},
		}}
	}
	update(t, c, secret("identity", "payments", "payments-cert"), secret("bundle", "", "roots"))

	open := func(service string) *stream {
		s := &stream{t: t, c: c, typ: sds, sub: gcpstream.NewDeltaSubscription(nil, nil, nil, false), ch: make(chan gcpcache.DeltaResponse, 4)}
		s.sub.UpdateResourceSubscriptions([]string{"identity", "bundle"}, nil)
		req := &gcpcache.DeltaRequest{TypeUrl: sds, Node: nodeOf(service), ResourceNamesSubscribe: []string{"identity", "bundle"}}
		cancel, err := c.CreateDeltaWatch(req, &s.sub, s.ch)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cancel)
		return s
	}
	value := func(r *discoveryv3.Resource) string {
		var sec tlsv3.Secret
		if err := r.GetResource().UnmarshalTo(&sec); err != nil {
			t.Fatal(err)
		}
		return sec.GetGenericSecret().GetSecret().GetInlineString()
	}
	payments := open("payments")
	names, removed, res, _ := payments.take()
	if !slices.Equal(names, []string{"bundle", "identity"}) || removed != nil || value(res[1]) != "payments-cert" {
		t.Fatalf("payments sees %v removed %v", names, removed)
	}
	orders := open("orders")
	names, removed, _, _ = orders.take()
	if !slices.Equal(names, []string{"bundle"}) || !slices.Equal(removed, []string{"identity"}) {
		t.Fatalf("orders sees %v removed %v; want only the bundle", names, removed)
	}
	anonymous := open("")
	if names, removed, _, _ = anonymous.take(); !slices.Equal(removed, []string{"identity"}) {
		t.Fatalf("an unscoped stream sees %v removed %v", names, removed)
	}
	// No name reaches into another scope, however it is spelled.
	for _, scope := range []string{"orders", ""} {
		for _, crafted := range []string{"payments\x00identity", "\x00identity", "payments/identity"} {
			s := &stream{t: t, c: c, typ: sds, sub: gcpstream.NewDeltaSubscription(nil, nil, nil, false), ch: make(chan gcpcache.DeltaResponse, 4)}
			s.sub.UpdateResourceSubscriptions([]string{crafted}, nil)
			req := &gcpcache.DeltaRequest{TypeUrl: sds, Node: nodeOf(scope), ResourceNamesSubscribe: []string{crafted}}
			cancel, _ := c.CreateDeltaWatch(req, &s.sub, s.ch)
			t.Cleanup(cancel)
			if names, _, _, _ := s.take(); len(names) != 0 {
				t.Fatalf("scope %q subscribing to %q was sent %v", scope, crafted, names)
			}
		}
	}

	// Rotating payments' identity reaches payments only.
	reopen := func(s *stream, service string) {
		req := &gcpcache.DeltaRequest{TypeUrl: sds, Node: nodeOf(service)}
		cancel, _ := c.CreateDeltaWatch(req, &s.sub, s.ch)
		t.Cleanup(cancel)
	}
	reopen(payments, "payments")
	reopen(orders, "orders")
	update(t, c, secret("identity", "payments", "payments-cert-2"))
	if names, _, res, ok := payments.take(); !ok || !slices.Equal(names, []string{"identity"}) || value(res[0]) != "payments-cert-2" {
		t.Fatalf("rotation not pushed to payments: %v", names)
	}
	orders.expectNothing()
	if err := c.Update(Item{TypeURL: cds, Name: "x", Scope: "payments"}); err == nil {
		t.Fatal("a scoped item of an unscoped (here unserved) type was accepted")
	}
}

// TestWildcardNames: a wildcard subscription is served the names the
// type's Wildcard picks for its node; a missing one is not reported missing
// until the stream held it; other streams' names stay out.
func TestWildcardNames(t *testing.T) {
	const lds = resource.ListenerType
	c := New([]string{lds}, WithWildcard(lds, func(n *corev3.Node) []string {
		svc := n.GetMetadata().GetFields()["svc"].GetStringValue()
		return []string{svc + "-out", svc + "-in"}
	}))
	listener := func(name string, port uint32) Item {
		return Item{TypeURL: lds, Name: name, Msg: &listenerv3.Listener{Name: name, Address: &corev3.Address{
			Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
			}},
		}}}
	}
	update(t, c, listener("payments-out", 15001), listener("orders-out", 15001), listener("api", 1))
	open := func(service string) *stream {
		s := &stream{t: t, c: c, typ: lds, sub: gcpstream.NewDeltaSubscription(nil, nil, nil, false), ch: make(chan gcpcache.DeltaResponse, 4)}
		s.nodeRequest(service, "*")
		return s
	}
	payments := open("payments")
	payments.expect([]string{"payments-out"}, nil)
	orders := open("orders")
	orders.expect([]string{"orders-out"}, nil)
	payments.nodeRequest("payments")
	payments.expectNothing()

	// A wildcard name that appears is pushed to its streams only.
	orders.nodeRequest("orders")
	update(t, c, listener("payments-in", 8443))
	payments.expect([]string{"payments-in"}, nil)
	orders.expectNothing()

	// One the stream holds is taken back when it goes away.
	payments.nodeRequest("payments")
	update(t, c, Item{TypeURL: lds, Name: "payments-in"})
	payments.expect(nil, []string{"payments-in"})

	// Explicit names still work beside the wildcard.
	payments.nodeRequest("payments", "api")
	payments.expect([]string{"api"}, nil)

	// SotW wildcard: the full state of the node's names.
	sub := gcpstream.NewSotwSubscription(nil, true)
	ch := make(chan gcpcache.Response, 1)
	if _, err := c.CreateWatch(&gcpcache.Request{TypeUrl: lds, Node: nodeOf("orders")}, &sub, ch); err != nil {
		t.Fatal(err)
	}
	msg, _ := (<-ch).GetDiscoveryResponse()
	if len(msg.GetResources()) != 1 {
		t.Fatalf("SotW wildcard for orders got %d listeners; want orders-out only", len(msg.GetResources()))
	}
}

// nodeRequest sends a delta request from a node of service that subscribes to names.
func (s *stream) nodeRequest(service string, names ...string) {
	s.t.Helper()
	s.sub.UpdateResourceSubscriptions(names, nil)
	req := &gcpcache.DeltaRequest{TypeUrl: s.typ, Node: nodeOf(service), ResourceNamesSubscribe: names}
	cancel, err := s.c.CreateDeltaWatch(req, &s.sub, s.ch)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(cancel)
}
