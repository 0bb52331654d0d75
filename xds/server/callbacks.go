package server

import (
	"context"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prisma-systems/xspace-mesh/internal/shrink"
	"github.com/prisma-systems/xspace-mesh/names"
)

var _ serverv3.Callbacks = (*Server)(nil)

// maxNameBytes bounds one resource name. The names the mesh serves are
// short (a VIP is at most 63 characters); a longer one is refused rather
// than held for the life of the stream.
const maxNameBytes = 512

// open authenticates a new stream, counts it against its peer and waits
// for its admission. go-control-plane calls close for every stream,
// whether open succeeded or not.
func (s *Server) open(ctx context.Context, id int64, typeURL, protocol string) error {
	claims, err := s.authenticate(ctx)
	if err != nil {
		return err
	}
	st := &streamState{
		id: id, protocol: protocol, kind: typeLabel(typeURL), typeURL: typeURL, ctx: ctx,
		peer: peerOf(ctx), claims: claims,
	}
	if err := s.admission.enter(st.peer); err != nil {
		return err
	}
	s.mu.Lock()
	s.streams[streamKey{protocol, id}] = st
	s.streams = shrink.Map(s.streams, &s.streamsPeak)
	s.mu.Unlock()
	class := classUnauthenticated
	if claims.Service != "" {
		class = classAuthenticated
	}
	if err := s.admission.wait(ctx, class); err != nil {
		return err
	}
	s.mu.Lock()
	st.admitted, st.since = true, s.now()
	s.mu.Unlock()
	s.metrics.streams.WithLabelValues(protocol, st.kind).Inc()
	return nil
}

func (s *Server) close(protocol string, id int64) {
	key := streamKey{protocol, id}
	s.mu.Lock()
	st := s.streams[key]
	delete(s.streams, key)
	s.streams = shrink.Map(s.streams, &s.streamsPeak)
	s.mu.Unlock()
	if st == nil {
		return
	}
	s.admission.leave(st.peer)
	if sc, ok := s.cache.(streamCache); ok && st.node != nil {
		sc.CloseStream(st.node)
	}
	if !st.admitted {
		return
	}
	s.metrics.streams.WithLabelValues(st.protocol, st.kind).Dec()
	st.mu.Lock()
	defer st.mu.Unlock()
	for i, held := range st.held {
		if held == nil {
			continue
		}
		for name, n := range held.names {
			if n.ref() {
				s.release(st, Types[i], name)
			}
		}
	}
}

// acquire resolves a newly held name. found says the name exists; ref that
// the stream holds a reference to give back with release.
func (s *Server) acquire(st *streamState, typeURL, name string) (found, ref bool) {
	if typeURL == resource.SecretType {
		if s.opts.Secrets == nil {
			return false, false
		}
		return s.opts.Secrets.Acquire(st.ctx, st.claims.Service, name)
	}
	if foreignInboundRoute(st, typeURL, name) {
		return false, false
	}
	return s.resolver.AcquireResource(st.ctx, typeURL, name)
}

// foreignInboundRoute reports whether name is the inbound route of a
// service other than the one the stream authenticated as. Only a
// service's own sidecars need it, and each app port a stream names would
// make meshd build and keep one more route: another stream's subscription
// resolves nothing and counts among its unknown names (MaxUnknownNames),
// whatever the cache holds under the name.
func foreignInboundRoute(st *streamState, typeURL, name string) bool {
	if typeURL != resource.RouteType {
		return false
	}
	service, _, ok := names.ParseInboundRoute(name)
	return ok && service != st.claims.Service
}

func (s *Server) release(st *streamState, typeURL, name string) {
	if typeURL == resource.SecretType {
		s.opts.Secrets.Release(st.claims.Service, name)
		return
	}
	s.resolver.Release(name)
}

// exists reports whether a name a stream subscribed to while it did not
// exist has appeared since. The secrets a stream may see are fixed at its
// start, and so are the inbound routes.
func (s *Server) exists(st *streamState, typeURL, name string) bool {
	return typeURL != resource.SecretType && !foreignInboundRoute(st, typeURL, name) && s.resolver.Found(name)
}

// update applies a change of a stream's subscriptions to one type: names it
// newly holds are acquired (resolved before the request is answered), names
// it dropped are released. It returns the names the server stopped
// tracking because the stream holds more than MaxUnknownNames names that do
// not exist: with evictOldest, the ones subscribed longest ago (a delta
// stream, told to forget them by the caller), else the newest (a
// state-of-the-world stream, which names all it wants in every request).
func (s *Server) update(st *streamState, typeURL string, subscribe, unsubscribe []string, evictOldest bool) []string {
	i := typeIndex(typeURL)
	if i < 0 { // request refuses such a type before this
		return nil
	}
	st.mu.Lock()
	held := st.held[i]
	if held == nil {
		held = newHeldNames()
		st.held[i] = held
	}
	st.mu.Unlock()
	var dropped, release []string
	for _, name := range subscribe {
		if name == "*" || st.holds(held, name) {
			continue
		}
		found, ref := s.acquire(st, typeURL, name)
		st.mu.Lock()
		if !found && !evictOldest && held.unknown >= s.opts.MaxUnknownNames {
			dropped = append(dropped, name)
			if ref {
				release = append(release, name)
			}
		} else {
			held.add(name, found, ref)
			for {
				old, over := held.overLimit(s.opts.MaxUnknownNames, func(n string) bool { return s.exists(st, typeURL, n) })
				if !over {
					break
				}
				dropped = append(dropped, old)
				if held.remove(old) {
					release = append(release, old)
				}
			}
		}
		st.mu.Unlock()
	}
	st.mu.Lock()
	for _, name := range unsubscribe {
		if held.remove(name) {
			release = append(release, name)
		}
	}
	st.mu.Unlock()
	for _, name := range release {
		s.release(st, typeURL, name)
	}
	if len(dropped) > 0 {
		s.metrics.unknownDropped.WithLabelValues(typeLabel(typeURL)).Add(float64(len(dropped)))
	}
	return dropped
}

// xdsRequest is what delta and state-of-the-world requests have in common.
type xdsRequest interface {
	GetNode() *corev3.Node
	GetTypeUrl() string
	GetResponseNonce() string
	GetErrorDetail() *statuspb.Status
}

// request finds the stream of a request, binds its node at the first
// request, checks the type and names it is about, and logs and counts it
// if it is a NACK.
func (s *Server) request(protocol string, id int64, req xdsRequest, names ...[]string) (*streamState, string, error) {
	s.mu.RLock()
	st := s.streams[streamKey{protocol, id}]
	s.mu.RUnlock()
	if st == nil || !st.admitted {
		return nil, "", status.Error(codes.Internal, "unknown stream")
	}
	if err := s.bindNode(st, req.GetNode()); err != nil {
		return nil, "", err
	}
	if !st.claims.Expires.IsZero() && s.now().After(st.claims.Expires) {
		return nil, "", status.Error(codes.Unauthenticated, "token expired; reconnect with a fresh one")
	}
	if !st.prepared && s.opts.Nodes != nil {
		if err := s.opts.Nodes.Prepare(st.node); err != nil {
			return nil, "", status.Errorf(codes.InvalidArgument, "node %q: %v", st.node.GetId(), err)
		}
		st.prepared = true
	}
	typeURL := st.requestType(req.GetTypeUrl())
	if err := s.checkRequest(st, typeURL, names...); err != nil {
		return nil, "", err
	}
	st.answered(typeURL, req, s.now)
	if detail := req.GetErrorDetail(); detail != nil {
		s.metrics.nacks.WithLabelValues(typeLabel(typeURL)).Inc()
		if !s.nackLog.Allow() {
			return st, typeURL, nil
		}
		s.log.Error("proxy rejected a response (NACK)",
			"node_id", st.node.GetId(), "stream_id", st.id, "type_url", typeURL,
			"response_nonce", req.GetResponseNonce(), "error", detail.GetMessage())
	}
	return st, typeURL, nil
}

// checkRequest refuses a request for a type the server does not serve (on
// a standalone service's stream: another type than the stream's) and names
// longer than maxNameBytes.
func (s *Server) checkRequest(st *streamState, typeURL string, names ...[]string) error {
	if !slices.Contains(Types, typeURL) || (st.typeURL != "" && typeURL != st.typeURL) {
		served := Types
		if st.typeURL != "" {
			served = []string{st.typeURL}
		}
		return status.Errorf(codes.InvalidArgument, "type %q is not served on this stream; it serves %v", typeURL, served)
	}
	for _, list := range names {
		for _, name := range list {
			if len(name) > maxNameBytes {
				return status.Errorf(codes.InvalidArgument, "a %s name of %d bytes; names are at most %d bytes",
					typeLabel(typeURL), len(name), maxNameBytes)
			}
		}
	}
	return nil
}

// OnDeltaStreamOpen admits a new delta stream.
func (s *Server) OnDeltaStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return s.open(ctx, id, typeURL, "delta")
}

// OnDeltaStreamClosed releases everything the stream held.
func (s *Server) OnDeltaStreamClosed(id int64, _ *corev3.Node) { s.close("delta", id) }

// OnStreamDeltaRequest resolves newly subscribed names before the request
// reaches the cache, and logs NACKs. The request is given the stream's own
// node, and the names the server stopped tracking are added to its
// unsubscriptions, so that go-control-plane forgets them too.
func (s *Server) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	st, typeURL, err := s.request("delta", id, req, req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	if err != nil {
		return err
	}
	req.Node = st.node
	dropped := s.update(st, typeURL, req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe(), true)
	if len(dropped) == 0 {
		return nil
	}
	// Dropped names are taken out of the request's subscriptions and
	// unsubscribed: one the stream held before may be in this request
	// again (Envoy's on-demand CDS subscribes again to a name each time a
	// request needs it), and go-control-plane applies the subscriptions
	// first, so that only unsubscribing forgets it. Unsubscribing a name
	// never subscribed changes nothing.
	gone := make(map[string]struct{}, len(dropped))
	for _, name := range dropped {
		gone[name] = struct{}{}
	}
	req.ResourceNamesSubscribe = slices.DeleteFunc(slices.Clone(req.GetResourceNamesSubscribe()),
		func(name string) bool { _, ok := gone[name]; return ok })
	req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, dropped...)
	return nil
}

// OnStreamDeltaResponse counts what is pushed.
func (s *Server) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	s.sent("delta", id, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce())
	bytes := 0
	for _, r := range resp.GetResources() {
		bytes += len(r.GetResource().GetValue())
	}
	s.metrics.pushed(resp.GetTypeUrl(), len(resp.GetResources())+len(resp.GetRemovedResources()), bytes)
}

// OnStreamOpen admits a new state-of-the-world stream.
func (s *Server) OnStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return s.open(ctx, id, typeURL, "sotw")
}

// OnStreamClosed releases everything the stream held.
func (s *Server) OnStreamClosed(id int64, _ *corev3.Node) { s.close("sotw", id) }

// OnStreamRequest turns a state-of-the-world request (the full list of
// names) into acquires and releases, and logs NACKs. The request is given
// the stream's own node, and the names the server does not track are taken
// out of it.
func (s *Server) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	st, typeURL, err := s.request("sotw", id, req, req.GetResourceNames())
	if err != nil {
		return err
	}
	req.Node = st.node
	want := req.GetResourceNames()
	wanted := make(map[string]struct{}, len(want))
	for _, name := range want {
		wanted[name] = struct{}{}
	}
	var drop []string
	st.mu.Lock()
	if held := st.heldOf(typeURL); held != nil {
		for name := range held.names {
			if _, ok := wanted[name]; !ok {
				drop = append(drop, name)
			}
		}
	}
	st.mu.Unlock()
	if dropped := s.update(st, typeURL, want, drop, false); len(dropped) > 0 {
		gone := make(map[string]struct{}, len(dropped))
		for _, name := range dropped {
			gone[name] = struct{}{}
		}
		req.ResourceNames = slices.DeleteFunc(slices.Clone(want), func(n string) bool { _, ok := gone[n]; return ok })
	}
	return nil
}

// OnStreamResponse counts what is pushed.
func (s *Server) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	s.sent("sotw", id, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce())
	bytes := 0
	for _, r := range resp.GetResources() {
		bytes += len(r.GetValue())
	}
	s.metrics.pushed(resp.GetTypeUrl(), len(resp.GetResources()), bytes)
}

// OnFetchRequest refuses unary fetches (see fetchRefused); it is reached
// only if go-control-plane's REST handler is served some other way.
func (s *Server) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error {
	return errFetch
}

// OnFetchResponse is part of the callbacks interface; fetches are refused.
func (s *Server) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

func typeLabel(typeURL string) string {
	switch typeURL {
	case resource.AnyType:
		return "ads"
	case resource.ClusterType:
		return "cds"
	case resource.EndpointType:
		return "eds"
	case resource.ListenerType:
		return "lds"
	case resource.RouteType:
		return "rds"
	case resource.SecretType:
		return "sds"
	}
	return "other"
}
