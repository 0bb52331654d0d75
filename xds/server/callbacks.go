package server

import (
	"context"
	"maps"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prisma-systems/xspace-mesh/token"
)

var _ serverv3.Callbacks = (*Server)(nil)

// streamState is what the server knows of one open stream.
type streamState struct {
	id       int64
	protocol string // "delta" or "sotw"
	kind     string // metric label of the stream's service: ads, cds, eds
	// typeURL is the type of a standalone service's stream ("" for ADS).
	// Requests on such streams may leave their type URL empty.
	typeURL string
	// claims are what the stream's token says; empty when unauthenticated.
	claims token.Claims
	ctx    context.Context
	since  time.Time
	node   *corev3.Node
	// held are the on-demand names this stream holds, by type URL; each
	// is one Acquire on the resolver.
	held map[string]map[string]struct{}
	// prepared says Options.Nodes accepted the node. Only the stream's
	// own request loop reads or writes it.
	prepared bool
}

// requestType is the type URL a request is about: its own, or its stream's.
func (st *streamState) requestType(typeURL string) string {
	if typeURL == "" {
		return st.typeURL
	}
	return typeURL
}

// onDemand reports whether subscriptions of a type are resolved on demand.
// Listener and route names are cluster names (a gRPC client dialling
// "xds:///payments.vip" asks for the listener "payments.vip"), so they are
// acquired from the resolver like clusters.
func (s *Server) onDemand(typeURL string) bool {
	switch typeURL {
	case resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType:
		return true
	case resource.SecretType:
		return s.opts.Secrets != nil
	}
	return false
}

func (s *Server) acquire(st *streamState, typeURL, name string) {
	if typeURL == resource.SecretType {
		s.opts.Secrets.Acquire(st.ctx, st.claims.Service, name)
		return
	}
	s.resolver.Acquire(st.ctx, name)
}

func (s *Server) release(st *streamState, typeURL, name string) {
	if typeURL == resource.SecretType {
		s.opts.Secrets.Release(st.claims.Service, name)
		return
	}
	s.resolver.Release(name)
}

func (s *Server) open(ctx context.Context, id int64, typeURL, protocol string) error {
	claims, err := s.authenticate(ctx)
	if err != nil {
		return err
	}
	if err := s.admit.Wait(ctx); err != nil {
		return status.Errorf(codes.Unavailable, "stream admission: %v", err)
	}
	st := &streamState{
		id: id, protocol: protocol, kind: typeLabel(typeURL), typeURL: typeURL, ctx: ctx, since: s.now(),
		claims: claims, held: make(map[string]map[string]struct{}),
	}
	s.mu.Lock()
	s.streams[streamKey{protocol, id}] = st
	s.mu.Unlock()
	s.metrics.streams.WithLabelValues(protocol, st.kind).Inc()
	return nil
}

func (s *Server) close(protocol string, id int64) {
	key := streamKey{protocol, id}
	s.mu.Lock()
	st := s.streams[key]
	delete(s.streams, key)
	s.mu.Unlock()
	if st == nil {
		return
	}
	s.metrics.streams.WithLabelValues(st.protocol, st.kind).Dec()
	for typeURL, held := range st.held {
		for name := range held {
			s.release(st, typeURL, name)
		}
	}
}

// stream returns a stream's state and records its node the first time it is seen.
func (s *Server) stream(protocol string, id int64, node *corev3.Node) *streamState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[streamKey{protocol, id}]
	if st != nil && st.node == nil && node != nil {
		st.node = node
	}
	return st
}

// update applies a change of a stream's subscriptions to one type: names it
// newly holds are acquired (resolved before the request is answered), names
// it dropped are released. A change that would leave the stream holding
// more than MaxNamesPerType names is refused whole.
func (s *Server) update(st *streamState, typeURL string, subscribe, unsubscribe []string) error {
	var acquire, release []string
	s.mu.Lock()
	held := st.held[typeURL]
	if held == nil {
		held = make(map[string]struct{})
		st.held[typeURL] = held
	}
	// Kept to undo the change if it goes over the limit.
	var before map[string]struct{}
	if len(held)+len(subscribe) > s.opts.MaxNamesPerType {
		before = maps.Clone(held)
	}
	for _, name := range subscribe {
		if _, ok := held[name]; !ok && name != "*" {
			held[name] = struct{}{}
			acquire = append(acquire, name)
		}
	}
	for _, name := range unsubscribe {
		if _, ok := held[name]; ok {
			delete(held, name)
			release = append(release, name)
		}
	}
	if n := len(held); n > s.opts.MaxNamesPerType {
		// Undone, so that closing the stream releases only what it acquired.
		st.held[typeURL] = before
		s.mu.Unlock()
		return status.Errorf(codes.ResourceExhausted,
			"stream would hold %d %s names, more than the %d allowed; a sidecar needs far fewer (are names generated per request?)",
			n, typeLabel(typeURL), s.opts.MaxNamesPerType)
	}
	s.mu.Unlock()
	for _, name := range acquire {
		s.acquire(st, typeURL, name)
	}
	for _, name := range release {
		s.release(st, typeURL, name)
	}
	return nil
}

// xdsRequest is what delta and state-of-the-world requests have in common.
type xdsRequest interface {
	GetNode() *corev3.Node
	GetTypeUrl() string
	GetResponseNonce() string
	GetErrorDetail() *statuspb.Status
}

// request finds the stream of a request and the type it is about, and logs
// and counts it if it is a NACK.
func (s *Server) request(protocol string, id int64, req xdsRequest) (*streamState, string, error) {
	st := s.stream(protocol, id, req.GetNode())
	if st == nil {
		return nil, "", status.Error(codes.Internal, "unknown stream")
	}
	if err := s.checkNode(st, req.GetNode()); err != nil {
		return nil, "", err
	}
	if st.claims.Service != "" && s.now().After(st.claims.Expires) {
		return nil, "", status.Error(codes.Unauthenticated, "token expired; reconnect with a fresh one")
	}
	if !st.prepared && st.node != nil && s.opts.Nodes != nil {
		if err := s.opts.Nodes.Prepare(st.node); err != nil {
			return nil, "", status.Errorf(codes.InvalidArgument, "node %q: %v", st.node.GetId(), err)
		}
		st.prepared = true
	}
	typeURL := st.requestType(req.GetTypeUrl())
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

// OnDeltaStreamOpen admits a new delta stream.
func (s *Server) OnDeltaStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return s.open(ctx, id, typeURL, "delta")
}

// OnDeltaStreamClosed releases everything the stream held.
func (s *Server) OnDeltaStreamClosed(id int64, _ *corev3.Node) { s.close("delta", id) }

// OnStreamDeltaRequest resolves newly subscribed clusters before the
// request reaches the cache, and logs NACKs.
func (s *Server) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	st, typeURL, err := s.request("delta", id, req)
	if err != nil {
		return err
	}
	if s.onDemand(typeURL) {
		return s.update(st, typeURL, req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	}
	return nil
}

// OnStreamDeltaResponse counts what is pushed.
func (s *Server) OnStreamDeltaResponse(_ int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	bytes := 0
	for _, r := range resp.GetResources() {
		bytes += len(r.GetResource().GetValue())
	}
	s.metrics.pushed(typeLabel(resp.GetTypeUrl()), len(resp.GetResources())+len(resp.GetRemovedResources()), bytes)
}

// OnStreamOpen admits a new state-of-the-world stream.
func (s *Server) OnStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return s.open(ctx, id, typeURL, "sotw")
}

// OnStreamClosed releases everything the stream held.
func (s *Server) OnStreamClosed(id int64, _ *corev3.Node) { s.close("sotw", id) }

// OnStreamRequest turns a state-of-the-world request (the full list of
// names) into acquires and releases, and logs NACKs.
func (s *Server) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	st, typeURL, err := s.request("sotw", id, req)
	if err != nil {
		return err
	}
	if !s.onDemand(typeURL) {
		return nil
	}
	want := req.GetResourceNames()
	wanted := make(map[string]struct{}, len(want))
	for _, name := range want {
		wanted[name] = struct{}{}
	}
	s.mu.Lock()
	var drop []string
	for name := range st.held[typeURL] {
		if _, ok := wanted[name]; !ok {
			drop = append(drop, name)
		}
	}
	s.mu.Unlock()
	return s.update(st, typeURL, want, drop)
}

// OnStreamResponse counts what is pushed.
func (s *Server) OnStreamResponse(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	bytes := 0
	for _, r := range resp.GetResources() {
		bytes += len(r.GetValue())
	}
	s.metrics.pushed(typeLabel(resp.GetTypeUrl()), len(resp.GetResources()), bytes)
}

// OnFetchRequest resolves the requested clusters of a REST poll; they stay
// cached for the grace period. Polls carry no stream identity, so they are
// never served secrets.
func (s *Server) OnFetchRequest(ctx context.Context, req *discoveryv3.DiscoveryRequest) error {
	if t := req.GetTypeUrl(); t == resource.ClusterType || t == resource.EndpointType {
		for _, name := range req.GetResourceNames() {
			s.resolver.Acquire(ctx, name)
			s.resolver.Release(name)
		}
	}
	return nil
}

// OnFetchResponse is part of the callbacks interface; polls are not counted.
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
